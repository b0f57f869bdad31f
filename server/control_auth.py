"""Flower's SuperLink with its Control API open to the consortium admin alone.

Flower 1.42 serves the Control API (``flwr run``, ``flwr ls``, ``flwr supernode
register/unregister``) on the same HTTPS port as the Fleet API, and its open-source
build authenticates Control requests only with the ``ControlAuthnPlugin`` it loads:
the no-op one, unless Flower Enterprise's OIDC plugin is installed (flwr.ee). Its TLS
(uvicorn, ``--ssl-ca-certfile``) asks no client certificate. So this module runs
Flower's own ``flower-superlink`` command with our ``ControlAuthnPlugin``: a request is
served only with ``Authorization: Bearer`` carrying a token the consortium admin's key
signed (server/admin_token.py). Fleet and Runtime requests are untouched.

    python -m server.control_auth --admin-public-key ADMIN_PUB [flower-superlink options]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Sequence
from logging import INFO, WARNING
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flwr.common.constant import ACCESS_TOKEN_KEY, NOOP_ACCOUNT_NAME, NOOP_FLWR_AID
from flwr.common.logger import log
from flwr.supercore.auth.typing import AccountAuthCredentials, AccountAuthLoginDetails, AccountInfo
from flwr.supercore.utils import get_metadata_str
from flwr.superlink.auth_plugin import ControlAuthnPlugin

from cmrfl.admin_key import AdminKeyError, load_admin_public_key
from server.admin_token import AdminTokenError, verify_admin_token


class ConsortiumAdminAuthPlugin(ControlAuthnPlugin):
    """Accept a Control request only with a current token signed by the consortium admin."""

    def __init__(self, admin_public_key: Ed25519PublicKey) -> None:
        self.admin_public_key = admin_public_key

    def get_login_details(self) -> AccountAuthLoginDetails | None:
        return None  # no interactive `flwr login`: `cmrfl server login` mints the token offline

    def validate_tokens_in_metadata(
        self, metadata: Sequence[tuple[str, str | bytes]]
    ) -> tuple[bool, AccountInfo | None]:
        token = get_metadata_str(metadata, ACCESS_TOKEN_KEY)
        if token is None:
            log(WARNING, "Control API request refused: no consortium admin token")
            return False, None
        try:
            verify_admin_token(token, self.admin_public_key)
        except AdminTokenError as refusal:
            log(WARNING, "Control API request refused: %s", refusal)
            return False, None
        # Flower's open-source federation manager knows one account; the admin acts as it.
        return True, AccountInfo(flwr_aid=NOOP_FLWR_AID, account_name=NOOP_ACCOUNT_NAME)

    def get_auth_tokens(self, device_code: str) -> AccountAuthCredentials | None:
        return None

    def refresh_tokens(
        self, metadata: Sequence[tuple[str, str | bytes]]
    ) -> tuple[Sequence[tuple[str, str | bytes]] | None, AccountInfo | None]:
        return None, None  # the SuperLink cannot mint admin tokens; an expired one is simply refused


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server.control_auth", add_help=False, allow_abbrev=False)
    parser.add_argument("--admin-public-key", type=Path, required=True)
    ours, flower_args = parser.parse_known_args(argv)
    try:
        plugin = ConsortiumAdminAuthPlugin(load_admin_public_key(ours.admin_public_key))
    except AdminKeyError as problem:
        sys.exit(f"--admin-public-key {problem}")

    # The module, not the function of the same name that flwr.superlink.cli exports.
    flower = importlib.import_module("flwr.superlink.cli.flower_superlink")

    # Flower's own argument parsing and server; only the Control API's plugin differs.
    sys.argv = ["flower-superlink", *flower_args]
    config = dataclasses.replace(flower._parse_superlink_lifespan_config(), authn_plugin=plugin)
    log(INFO, "Starting Flower SuperLink; Control API: consortium admin tokens only")
    flower._run_superlink_http_api(lifespan_config=config)


if __name__ == "__main__":
    main()
