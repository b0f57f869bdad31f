"""The consortium admin's signature on the Flower App, checked by every SuperNode.

Flower 1.42's own app verification (``flower-supernode --trusted-entities``) accepts
only apps whose signatures the SuperLink fetched from Flower Hub (``flwr app
publish``); an app submitted with ``flwr run`` carries none, and a consortium offline
from Flower's platform cannot use it. So the signature travels inside the app bundle
(FAB) itself: ``cmrfl-app-signature.json`` at its root signs the SHA-256 of every
other file in the FAB, as ``flwr run`` will build it, with the admin's Ed25519 key.

``sign_app`` (the admin, before ``flwr run``) builds the FAB exactly as ``flwr run``
does, signs its files and writes the signature file into the app folder; ``flwr run``
then bundles it. ``verify_fab`` (the SuperNode, before anything of the app runs)
recomputes the list from the FAB it received: a file added, removed or changed, or a
signature from any other key, and the app is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import zipfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cmrfl.admin_key import fingerprint, load_admin_key

SIGNATURE_FILE = "cmrfl-app-signature.json"
SIGNATURE_FORMAT = "cmrfl-app-signature/1"
# Flower's own per-file manifest lists the signature file too, so it cannot be signed.
FLOWER_MANIFEST = ".info/CONTENT"


class AppSignatureError(ValueError):
    """An app a SuperNode must not run (message says why)."""


def fab_file_digests(fab: bytes) -> dict[str, str]:
    """Path → SHA-256 of every file in the FAB that the signature covers."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(fab))
    except zipfile.BadZipFile:
        raise AppSignatureError("the app bundle is not a ZIP archive") from None
    digests: dict[str, str] = {}
    with archive:
        for entry in archive.infolist():
            if entry.filename in (SIGNATURE_FILE, FLOWER_MANIFEST) or entry.is_dir():
                continue
            if entry.filename in digests:
                raise AppSignatureError(f"the app bundle holds {entry.filename} twice")
            digests[entry.filename] = hashlib.sha256(archive.read(entry)).hexdigest()
    return digests


def signed_bytes(digests: dict[str, str]) -> bytes:
    """The exact bytes the admin key signs (sorted, no spaces, ASCII)."""
    payload = {"files": sorted(digests.items()), "format": SIGNATURE_FORMAT}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign_app(app_dir: Path, admin_key: Path) -> Path:
    """Sign APP_DIR as ``flwr run`` will bundle it; returns the signature file written into it."""
    from flwr.cli.build import build_fab_from_disk

    key = load_admin_key(admin_key)
    signature_path = Path(app_dir) / SIGNATURE_FILE
    signature_path.unlink(missing_ok=True)  # a stale signature is not part of what is signed
    digests = fab_file_digests(build_fab_from_disk(Path(app_dir)))
    document = {
        "format": SIGNATURE_FORMAT,
        "signer_sha256": fingerprint(key.public_key()),
        "signature": base64.b64encode(key.sign(signed_bytes(digests))).decode("ascii"),
    }
    signature_path.write_text(json.dumps(document, indent=2) + "\n")
    return signature_path


def verify_fab(fab: bytes, admin_public_key: Ed25519PublicKey) -> str:
    """Return the signer's fingerprint if the admin key signed this FAB; AppSignatureError otherwise."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as archive:
            document = json.loads(archive.read(SIGNATURE_FILE))
    except KeyError:
        raise AppSignatureError(f"the app is not signed (no {SIGNATURE_FILE} in it)") from None
    except zipfile.BadZipFile:
        raise AppSignatureError("the app bundle is not a ZIP archive") from None
    except (ValueError, UnicodeDecodeError):
        raise AppSignatureError(f"{SIGNATURE_FILE} is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != SIGNATURE_FORMAT:
        raise AppSignatureError(f"{SIGNATURE_FILE}: expected format {SIGNATURE_FORMAT!r}")
    try:
        signature = base64.b64decode(str(document.get("signature", "")), validate=True)
        admin_public_key.verify(signature, signed_bytes(fab_file_digests(fab)))
    except (InvalidSignature, binascii.Error):
        raise AppSignatureError(
            "the app's signature does not verify against the consortium admin's key "
            f"(signed by {str(document.get('signer_sha256', 'unknown'))[:16]}…, or changed after signing)"
        ) from None
    return fingerprint(admin_public_key)
