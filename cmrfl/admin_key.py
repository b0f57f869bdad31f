"""The consortium admin's Ed25519 key pair, as ``cmrfl pki init`` writes it (PEM).

The private half (PKI_DIR/secret/admin.key) signs Control API tokens and the Flower
App; the public half (admin.pub) is what the SuperLink and every site verify against.
Shared by server/ and client/, which never import each other.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class AdminKeyError(ValueError):
    """The file is not the consortium admin's key (message names the file)."""


def load_admin_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    except FileNotFoundError:
        raise AdminKeyError(f"{path}: no such admin key file") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as problem:
        raise AdminKeyError(f"{path}: not an unencrypted PEM private key ({problem})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AdminKeyError(f"{path}: expected the consortium's Ed25519 admin key, found {type(key).__name__}")
    return key


def load_admin_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise AdminKeyError(f"{path}: no such admin public key file") from None
    except (ValueError, UnsupportedAlgorithm) as problem:
        raise AdminKeyError(f"{path}: not a PEM public key ({problem})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AdminKeyError(f"{path}: expected the consortium's Ed25519 admin key, found {type(key).__name__}")
    return key


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, hex: names the signer in logs and signature files."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()
