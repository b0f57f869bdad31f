"""Consortium-admin bearer tokens: short-lived statements signed with the admin's Ed25519 key.

The admin's machine mints a token from PKI_DIR/secret/admin.key; the SuperLink verifies
it with admin.pub alone, so the SuperLink holds nothing that could mint one. A token is

    cmrfl-admin-1.<payload>.<signature>     (both base64url, no padding)

where the payload is canonical JSON ``{"aud", "exp", "iat"}`` and the signature covers
``cmrfl-admin-token/1`` + "." + payload: a domain prefix, so no other signature the
admin makes (an app signature, say) can pass for a token.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cmrfl.admin_key import AdminKeyError, load_admin_key

TOKEN_PREFIX = "cmrfl-admin-1"
_SIGNED_PREFIX = b"cmrfl-admin-token/1."
AUDIENCE = "cmrfl-superlink-control"
DEFAULT_LIFETIME_S = 24 * 3600  # covers a long `cmrfl train` and its follow-up `flwr ls`
MAX_LIFETIME_S = 7 * 24 * 3600  # a longer-lived token is refused even if signed
CLOCK_SKEW_S = 300


class AdminTokenError(ValueError):
    """A token the SuperLink must refuse, or a key that cannot make one (message says why)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_admin_token(admin_key: Path, lifetime_s: int = DEFAULT_LIFETIME_S, now: float | None = None) -> str:
    if not 0 < lifetime_s <= MAX_LIFETIME_S:
        raise AdminTokenError(f"token lifetime {lifetime_s} s: must be between 1 s and {MAX_LIFETIME_S} s")
    issued = int(time.time() if now is None else now)
    payload = json.dumps(
        {"aud": AUDIENCE, "exp": issued + lifetime_s, "iat": issued}, sort_keys=True, separators=(",", ":")
    )
    encoded = _b64(payload.encode("ascii"))
    try:
        key = load_admin_key(admin_key)
    except AdminKeyError as problem:
        raise AdminTokenError(str(problem)) from None
    signature = key.sign(_SIGNED_PREFIX + encoded.encode("ascii"))
    return f"{TOKEN_PREFIX}.{encoded}.{_b64(signature)}"


def verify_admin_token(token: str, admin_public_key: Ed25519PublicKey, now: float | None = None) -> None:
    """Return if TOKEN is the consortium admin's and current; AdminTokenError otherwise."""
    prefix, _, rest = token.partition(".")
    encoded, _, signature = rest.partition(".")
    if prefix != TOKEN_PREFIX or not encoded or not signature:
        raise AdminTokenError("not a cmrfl admin token")
    try:
        admin_public_key.verify(_unb64(signature), _SIGNED_PREFIX + encoded.encode("ascii"))
        claims = json.loads(_unb64(encoded))
    except (InvalidSignature, binascii.Error, ValueError, UnicodeEncodeError):
        raise AdminTokenError("the token is not signed by the consortium admin's key") from None
    if not isinstance(claims, dict) or claims.get("aud") != AUDIENCE:
        raise AdminTokenError("the token is not for the SuperLink's Control API")
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int) or not isinstance(expires, int) or expires - issued > MAX_LIFETIME_S:
        raise AdminTokenError("the token's lifetime is missing or too long")
    current = time.time() if now is None else now
    if issued > current + CLOCK_SKEW_S:
        raise AdminTokenError("the token is issued in the future (check the clocks)")
    if expires <= current:
        raise AdminTokenError("the token has expired; mint a new one (cmrfl server login)")
