"""Check a model version against the consortium's model-signing key pinned at the site.

``signed_bytes`` repeats ``server/registry/signing.py`` on purpose: a site never
imports server code (ARCHITECTURE.md), and the bytes a signature covers are a
wire format, fixed by its ``format`` string; tests/test_registry.py keeps both equal.
Every refusal is a :class:`SignatureError` whose message says "signature".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_FORMAT = "cmrfl-model-signature/1"
WEIGHTS_FILE = "final_model.pt"
CARD_FILE = "model-card.json"
CARD_MARKDOWN_FILE = "model-card.md"
SIGNATURE_FILE = "model-signature.json"
MODEL_FILES = (WEIGHTS_FILE, CARD_FILE, CARD_MARKDOWN_FILE, SIGNATURE_FILE)


def trust_key_path(site_dir: Path) -> Path:
    """Where `cmrfl site init` pins the consortium's model-signing public key."""
    return Path(site_dir) / "trust" / "model-signing.pub"


class SignatureError(Exception):
    """A model that must not be used: it does not verify against the pinned key."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def signed_bytes(weights_sha256: str, card_sha256: str, card_markdown_sha256: str) -> bytes:
    """The exact bytes the consortium key signs (sorted keys, no spaces, ASCII)."""
    payload = {
        "card_markdown_sha256": card_markdown_sha256,
        "card_sha256": card_sha256,
        "format": SIGNATURE_FORMAT,
        "weights_sha256": weights_sha256,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def load_trusted_key(site_dir: Path) -> Ed25519PublicKey:
    path = trust_key_path(site_dir)
    if not path.is_file():
        raise SignatureError(
            f"{path}: no pinned model-signing key, so no signature can be checked "
            "(`cmrfl site init` pins the consortium's key there)"
        )
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm) as error:
        raise SignatureError(f"{path}: not a PEM public key, so no signature can be checked ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path}: expected an Ed25519 model-signing key, found {type(key).__name__}")
    return key


@dataclass(frozen=True)
class VerifiedModel:
    folder: Path
    card: dict
    weights_sha256: str
    signer_public_key_sha256: str


def verify_model_folder(folder: Path, key: Ed25519PublicKey, expected_model: str | None = None) -> VerifiedModel:
    """Verify weights, card and card text in ``folder`` against the signature beside them."""
    folder = Path(folder)
    for name in MODEL_FILES:
        if not (folder / name).is_file():
            raise SignatureError(f"{folder / name}: missing, so the model's signature cannot be checked")
    try:
        claimed = json.loads((folder / SIGNATURE_FILE).read_text())
        signature = base64.b64decode(claimed["signature_base64"], validate=True)
    except (json.JSONDecodeError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as error:
        raise SignatureError(f"{folder / SIGNATURE_FILE}: not a cmrfl model signature ({error})") from None
    if claimed.get("format") != SIGNATURE_FORMAT:
        raise SignatureError(
            f"{folder / SIGNATURE_FILE}: signature format {claimed.get('format')!r}, expected {SIGNATURE_FORMAT!r}"
        )
    actual = {
        "weights_sha256": file_sha256(folder / WEIGHTS_FILE),
        "card_sha256": file_sha256(folder / CARD_FILE),
        "card_markdown_sha256": file_sha256(folder / CARD_MARKDOWN_FILE),
    }
    for (field, digest), name in zip(actual.items(), (WEIGHTS_FILE, CARD_FILE, CARD_MARKDOWN_FILE)):
        if claimed.get(field) != digest:
            raise SignatureError(
                f"{folder / name}: SHA-256 {digest} is not the one the signature covers "
                f"({claimed.get(field)}); the file was altered after signing"
            )
    try:
        key.verify(signature, signed_bytes(**actual))
    except InvalidSignature:
        raise SignatureError(
            f"{folder / SIGNATURE_FILE}: signature does not verify against the pinned model-signing key "
            "(signed by another key, or the signature was altered)"
        ) from None
    try:
        card = json.loads((folder / CARD_FILE).read_text())
    except json.JSONDecodeError as error:  # signed but unreadable: refuse all the same
        raise SignatureError(f"{folder / CARD_FILE}: signature verifies but the card is not JSON ({error})") from None
    if card.get("weights", {}).get("sha256") != actual["weights_sha256"]:
        raise SignatureError(f"{folder / CARD_FILE}: the signed card names other weights than {WEIGHTS_FILE}")
    if expected_model is not None and card.get("model_name") != expected_model:
        raise SignatureError(
            f"{folder / CARD_FILE}: the signature covers model {card.get('model_name')!r}, not {expected_model!r}"
        )
    return VerifiedModel(folder, card, actual["weights_sha256"], str(claimed.get("signer_public_key_sha256", "")))
