"""The ``flwr`` CLI's connection to a SuperLink: a FLWR_HOME holding config.toml.

Flower 1.42 reads SuperLink connections from ``$FLWR_HOME/config.toml``
(``[superlink.NAME] address, root-certificates, insecure, federation``); ``flwr run``
and ``flwr supernode register`` take the connection's NAME. We write a private
FLWR_HOME per use so a person's own Flower configuration is never touched.

The SuperLink's Control API answers only the consortium admin (server/control_auth.py).
Flower's CLI sends the access token its credential store holds for the connection's
address as ``Authorization: Bearer``; with ``admin_key`` we mint a short-lived admin
token (server/admin_token.py) and store it there, in FLWR_HOME/credentials.yaml (0600).
"""

from __future__ import annotations

from pathlib import Path

from server.admin_token import DEFAULT_LIFETIME_S, mint_admin_token

CONNECTION_NAME = "cmrfl"
CREDENTIALS_FILE = "credentials.yaml"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_flwr_home(
    flwr_home: Path,
    superlink: str,
    root_certificates: Path | None,
    insecure: bool = False,
    federation: str | None = None,
    admin_key: Path | None = None,
    token_lifetime_s: int = DEFAULT_LIFETIME_S,
) -> Path:
    """Write FLWR_HOME/config.toml with one connection, ``cmrfl``, as the default.

    ``root_certificates`` (the consortium CA) is what the CLI verifies the SuperLink's
    TLS certificate against; without it and without ``insecure`` gRPC falls back to the
    system's trust store, which does not know a consortium's private CA.
    """
    flwr_home = Path(flwr_home)
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f"default = {_quoted(CONNECTION_NAME)}",
        "",
        f"[superlink.{CONNECTION_NAME}]",
        f"address = {_quoted(superlink)}",
    ]
    if insecure:
        lines.append("insecure = true")
    elif root_certificates is not None:
        lines.append(f"root-certificates = {_quoted(str(Path(root_certificates).resolve()))}")
    if federation:
        lines.append(f"federation = {_quoted(federation)}")
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    if admin_key is not None:
        store_admin_token(flwr_home, superlink, mint_admin_token(admin_key, token_lifetime_s))
    return path


def store_admin_token(flwr_home: Path, superlink: str, token: str) -> Path:
    """Put TOKEN where Flower's CLI looks for SUPERLINK's bearer token (its OIDC slots)."""
    from flwr.cli.constant import ACCESS_TOKEN_STORE_KEY, AUTHN_TYPE_STORE_KEY, REFRESH_TOKEN_STORE_KEY
    from flwr.common.constant import AuthnType
    from flwr.supercore.credential_store import FileCredentialStore

    path = Path(flwr_home) / CREDENTIALS_FILE
    path.unlink(missing_ok=True)
    store = FileCredentialStore(path)  # writes through a NamedTemporaryFile: owner-only (0600)
    store.set(AUTHN_TYPE_STORE_KEY % superlink, AuthnType.OIDC.encode())
    store.set(ACCESS_TOKEN_STORE_KEY % superlink, token.encode())
    # Flower's CLI wants a refresh token too; the SuperLink refreshes nothing (a new token is minted).
    store.set(REFRESH_TOKEN_STORE_KEY % superlink, b"none")
    return path
