"""Detached Ed25519 signatures over a model version: weights, card and card text; and signed records.

The consortium signs the SHA-256 of each file a site will use, not the files
themselves, so a signature is small and can be checked file by file. What is signed
is :func:`signed_bytes`: a fixed JSON form that ``client/model_trust.py`` rebuilds
byte for byte (a test keeps the two equal).

The same key signs two records (:func:`sign_record`, the canonical JSON of the record):
a version's *release* (model, version number, the three SHA-256 values), made once
MLflow has numbered the version, so that a registry cannot serve one version's files as
another's; and an *approval* (model, version, stage, weights, time, who), made by
`cmrfl registry promote`, so that approval is more than an alias anyone with the
registry's admin password can move.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNATURE_FORMAT = "cmrfl-model-signature/1"
WEIGHTS_FILE = "final_model.pt"
CARD_FILE = "model-card.json"
CARD_MARKDOWN_FILE = "model-card.md"
SIGNATURE_FILE = "model-signature.json"
RELEASE_FILE = "model-release.json"
APPROVAL_FILE = "approval.json"  # where a site keeps a version's signed approval, beside its files
RELEASE_FORMAT = "cmrfl-model-release/1"
APPROVAL_FORMAT = "cmrfl-model-approval/1"
APPROVED_STAGE = "approved"


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


def record_bytes(record: dict) -> bytes:
    """The exact bytes signed for a release or approval record (sorted keys, no spaces, ASCII)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign_record(record: dict, key: Ed25519PrivateKey) -> str:
    """The record and its detached signature, as one JSON document (docs/registry.md)."""
    return json.dumps(
        {
            "record": record,
            "algorithm": "Ed25519",
            "signed": "the canonical JSON of record: sorted keys, no spaces, ASCII",
            "signer_public_key_sha256": public_key_sha256(key),
            "signature_base64": base64.b64encode(key.sign(record_bytes(record))).decode("ascii"),
        },
        indent=2,
    )


class RecordError(ValueError):
    """A signed record that is not what it should be; the message names it."""


def verify_record(text: str | bytes, key: Ed25519PrivateKey, source: str, expected_format: str) -> dict:
    """The record in ``text`` if ``key``'s public half signed it (the admin's check before approving)."""
    try:
        envelope = json.loads(text)
        record = envelope["record"]
        key.public_key().verify(base64.b64decode(envelope["signature_base64"], validate=True), record_bytes(record))
    except (ValueError, KeyError, TypeError, InvalidSignature) as error:
        raise RecordError(f"{source}: not a record signed by this model-signing key ({type(error).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != expected_format:
        raise RecordError(f"{source}: not a {expected_format} record")
    return record


def release_record(folder: Path, model_name: str, version: str) -> dict:
    """What a version's release signs: its name and number, and the SHA-256 of each signed file."""
    return {
        "format": RELEASE_FORMAT,
        "model": model_name,
        "version": version,
        "weights_sha256": file_sha256(folder / WEIGHTS_FILE),
        "card_sha256": file_sha256(folder / CARD_FILE),
        "card_markdown_sha256": file_sha256(folder / CARD_MARKDOWN_FILE),
        "registered_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def approval_record(model_name: str, version: str, weights_sha256: str, approved_by: str) -> dict:
    return {
        "format": APPROVAL_FORMAT,
        "model": model_name,
        "version": version,
        "stage": APPROVED_STAGE,
        "weights_sha256": weights_sha256,
        "approved_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "approved_by": approved_by,
    }


def write_release(folder: Path, model_name: str, version: str, key: Ed25519PrivateKey) -> Path:
    """Sign and write ``folder``'s release record (model-release.json); returns its path."""
    path = Path(folder) / RELEASE_FILE
    path.write_text(sign_record(release_record(folder, model_name, version), key) + "\n")
    return path
