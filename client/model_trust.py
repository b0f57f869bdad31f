"""Check a model version against the consortium's model-signing key pinned at the site.

Three things are signed with that key: the version's files (``model-signature.json``),
its release record (``model-release.json``: this model, this version number, these
files; made at registration, once MLflow has numbered the version) and, when the
consortium approves it, an approval record (``approval.json`` at the site). The files'
signature alone does not say which version they are, so a registry could otherwise
serve version 3's files as version 5.

``signed_bytes`` and ``record_bytes`` repeat ``server/registry/signing.py`` on purpose: a
site never imports server code (ARCHITECTURE.md), and the bytes a signature covers are a
wire format, fixed by its ``format`` string; tests/test_registry.py keeps both equal.
Every refusal is a :class:`SignatureError` whose message says "signature".
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
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
RELEASE_FILE = "model-release.json"
APPROVAL_FILE = "approval.json"
RELEASE_FORMAT = "cmrfl-model-release/1"
APPROVAL_FORMAT = "cmrfl-model-approval/1"
APPROVED_STAGE = "approved"


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


def record_bytes(record: dict) -> bytes:
    """The exact bytes signed for a release or approval record (sorted keys, no spaces, ASCII)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def verify_signed_record(text: str | bytes, key: Ed25519PublicKey, source: str, expected_format: str) -> dict:
    """The record in a signed envelope, once the pinned key's signature over it verifies."""
    try:
        envelope = json.loads(text)
        record = envelope["record"]
        signature = base64.b64decode(envelope["signature_base64"], validate=True)
    except (ValueError, KeyError, TypeError) as error:  # JSON, base64 and UTF-8 errors are ValueErrors
        raise SignatureError(f"{source}: not a signed cmrfl record, so no signature can be checked ({error})") from None
    if not isinstance(record, dict):
        raise SignatureError(f"{source}: not a signed cmrfl record, so no signature can be checked")
    try:
        key.verify(signature, record_bytes(record))
    except InvalidSignature:
        raise SignatureError(
            f"{source}: signature does not verify against the pinned model-signing key "
            "(signed by another key, or the record was altered)"
        ) from None
    if record.get("format") != expected_format:
        raise SignatureError(
            f"{source}: signed record of format {record.get('format')!r}, expected {expected_format!r}"
        )
    return record


def _check_names(record: dict, source: str, model: str, version: str) -> None:
    if (record.get("model"), record.get("version")) != (model, version):
        raise SignatureError(
            f"{source}: the signature is valid but names model {record.get('model')!r} version "
            f"{record.get('version')!r}, not {model!r} version {version!r}"
        )


@dataclass(frozen=True)
class Approval:
    """The consortium's signed approval of one model version for use at the sites."""

    model: str
    version: str
    weights_sha256: str
    approved_utc: str
    approved_by: str
    text: str  # the signed record as received: what a site keeps

    @property
    def approved_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.approved_utc)


def verify_approval(
    text: str, key: Ed25519PublicKey, source: str, model: str, version: str, weights_sha256: str | None = None
) -> Approval:
    """An approval of ``model`` ``version`` (and of these weights, when given) signed by the pinned key."""
    record = verify_signed_record(text, key, source, APPROVAL_FORMAT)
    _check_names(record, source, model, version)
    if record.get("stage") != APPROVED_STAGE:
        raise SignatureError(
            f"{source}: the signed record approves stage {record.get('stage')!r}, not {APPROVED_STAGE!r}"
        )
    if weights_sha256 is not None and record.get("weights_sha256") != weights_sha256:
        raise SignatureError(f"{source}: the signed approval is of other weights than {model} version {version}'s")
    try:
        approved_at = dt.datetime.fromisoformat(str(record.get("approved_utc")))
    except ValueError:
        approved_at = None
    if approved_at is None or approved_at.tzinfo is None:
        raise SignatureError(f"{source}: the signed approval has no time with a zone ({record.get('approved_utc')!r})")
    return Approval(
        model,
        version,
        str(record.get("weights_sha256")),
        str(record["approved_utc"]),
        str(record.get("approved_by")),
        text,
    )


def verify_release(folder: Path, key: Ed25519PublicKey, model: str, version: str, digests: dict[str, str]) -> dict:
    """The signed release record beside a version's files names this model, this version and these files."""
    path = Path(folder) / RELEASE_FILE
    if not path.is_file():
        raise SignatureError(
            f"{path}: missing, so no signature says which model and version these files are "
            "(a version registered before releases were signed must be registered again)"
        )
    record = verify_signed_record(path.read_bytes(), key, str(path), RELEASE_FORMAT)
    _check_names(record, str(path), model, version)
    for field, digest in digests.items():
        if record.get(field) != digest:
            raise SignatureError(f"{path}: the signed release covers other files ({field} {record.get(field)})")
    return record


@dataclass(frozen=True)
class VerifiedModel:
    folder: Path
    card: dict
    weights_sha256: str
    signer_public_key_sha256: str
    release: dict | None = None  # the signed release record, when the version was checked too


def verify_model_folder(
    folder: Path, key: Ed25519PublicKey, expected_model: str | None = None, expected_version: str | None = None
) -> VerifiedModel:
    """Verify weights, card and card text in ``folder`` against the signature beside them.

    With ``expected_version`` (and ``expected_model``), also the release record that binds
    them to that model and version number.
    """
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
    release = None
    if expected_version is not None:
        if expected_model is None:
            raise ValueError("a version is checked together with its model name")
        release = verify_release(folder, key, expected_model, expected_version, actual)
    signer = str(claimed.get("signer_public_key_sha256", ""))
    return VerifiedModel(folder, card, actual["weights_sha256"], signer, release)
