"""Detached Ed25519 signatures over a model version: weights, card and card text.

The consortium signs the SHA-256 of each file a site will use, not the files
themselves, so a signature is small and can be checked file by file. What is signed
is :func:`signed_bytes`: a fixed JSON form that ``client/model_trust.py`` rebuilds
byte for byte (a test keeps the two equal).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNATURE_FORMAT = "cmrfl-model-signature/1"
WEIGHTS_FILE = "final_model.pt"
CARD_FILE = "model-card.json"
CARD_MARKDOWN_FILE = "model-card.md"
SIGNATURE_FILE = "model-signature.json"


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


class SigningKeyError(ValueError):
    """The model-signing key file cannot be used; the message names the file."""


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The consortium's Ed25519 model-signing key (PEM, PKCS8, unencrypted) from ``path``."""
    path = Path(path)
    if not path.is_file():
        raise SigningKeyError(f"{path}: model-signing key not found (create it with `cmrfl pki init --out PKI_DIR`)")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise SigningKeyError(f"{path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: expected an Ed25519 private key, found {type(key).__name__}")
    return key


def public_key_sha256(key: Ed25519PrivateKey) -> str:
    """Fingerprint of the public half (SHA-256 of its raw 32 bytes), to name the signer."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class ModelSignature:
    weights_sha256: str
    card_sha256: str
    card_markdown_sha256: str
    signature: bytes
    signer_public_key_sha256: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": SIGNATURE_FORMAT,
                "algorithm": "Ed25519",
                "signed": "the canonical JSON of format and the three SHA-256 values below",
                "weights_sha256": self.weights_sha256,
                "card_sha256": self.card_sha256,
                "card_markdown_sha256": self.card_markdown_sha256,
                "signer_public_key_sha256": self.signer_public_key_sha256,
                "signature_base64": base64.b64encode(self.signature).decode("ascii"),
            },
            indent=2,
        )


def sign_model_files(folder: Path, key: Ed25519PrivateKey) -> Path:
    """Sign ``folder``'s weights, card and card text; writes and returns the signature file."""
    folder = Path(folder)
    weights, card, card_markdown = (
        file_sha256(folder / name) for name in (WEIGHTS_FILE, CARD_FILE, CARD_MARKDOWN_FILE)
    )
    signature = ModelSignature(
        weights, card, card_markdown, key.sign(signed_bytes(weights, card, card_markdown)), public_key_sha256(key)
    )
    path = folder / SIGNATURE_FILE
    path.write_text(signature.to_json() + "\n")
    return path
