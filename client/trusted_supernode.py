"""Flower's SuperNode, running only apps the consortium admin signed.

``flower-supernode`` fetches a run's app bundle (FAB) from the SuperLink the first time
a message of that run arrives, then hands it to a ClientApp process that installs and
imports it: whoever can start a run can run code at every site. Flower 1.42 checks a
FAB only against signatures from Flower Hub (``--trusted-entities``), which an app
submitted with ``flwr run`` never has. So this module runs Flower's own
``flower-supernode`` command with one change: each FAB fetched is verified against the
admin key pinned at the site (cmrfl/app_signature.py) before it is stored. One that
fails is never stored nor run; the SuperNode answers the message with Flower's own
"The FAB could not be verified" error reply, as Flower does for a FAB its trusted
entities reject, and goes on serving other runs.

    python -m client.trusted_supernode --admin-public-key TRUST/admin.pub [flower-supernode options]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from logging import ERROR, INFO
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cmrfl.admin_key import AdminKeyError, fingerprint, load_admin_public_key
from cmrfl.app_signature import AppSignatureError, verify_fab


class _Refused(Exception):
    def __init__(self, fab_hash: str, reason: str) -> None:
        super().__init__(reason)
        self.fab_hash = fab_hash
        self.reason = reason


def verifying_pull(pull: Callable[..., int | None], admin_public_key: Ed25519PublicKey) -> Callable[..., int | None]:
    """Wrap Flower's ``_pull_and_store_message`` so that every FAB it fetches is verified first."""
    from flwr.app import Message
    from flwr.common.logger import log
    from flwr.supernode import start_client_internal as flower_node

    def pull_verified(**arguments: Any) -> int | None:
        received: list[Message] = []
        receive, get_fab = arguments["receive"], arguments["get_fab"]

        def remembering_receive() -> Any:
            pulled = receive()
            if pulled is not None:
                received.append(pulled[0])
            return pulled

        def verified_get_fab(fab_hash: str, run_id: int) -> Any:
            fab = get_fab(fab_hash, run_id)
            try:
                verify_fab(fab.content, admin_public_key)
            except AppSignatureError as problem:
                raise _Refused(fab_hash, str(problem)) from None
            log(INFO, "App %s… of run %s: signed by the consortium admin", fab_hash[:12], run_id)
            return fab

        try:
            return pull(**{**arguments, "receive": remembering_receive, "get_fab": verified_get_fab})
        except _Refused as refusal:
            message = received[-1]
            log(
                ERROR,
                "Refusing run %s: its app %s… is not the consortium's: %s",
                message.metadata.run_id,
                refusal.fab_hash[:12],
                refusal.reason,
            )
            reply = Message(flower_node.FAB_VERIFICATION_ERROR, reply_to=message)
            flower_node._insert_message(reply, arguments["state"], arguments["object_store"])
            return message.metadata.run_id

    return pull_verified


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m client.trusted_supernode", add_help=False, allow_abbrev=False)
    parser.add_argument("--admin-public-key", type=Path, required=True)
    ours, flower_args = parser.parse_known_args(argv)
    try:
        admin_public_key = load_admin_public_key(ours.admin_public_key)
    except AdminKeyError as problem:
        sys.exit(f"--admin-public-key {problem}")

    from flwr.common.logger import log
    from flwr.supernode import start_client_internal as flower_node

    # Flower's main loop looks this function up on every message: ours verifies first.
    flower_node._pull_and_store_message = verifying_pull(flower_node._pull_and_store_message, admin_public_key)
    log(INFO, "Runs only apps signed by the consortium admin key %s…", fingerprint(admin_public_key)[:16])
    sys.argv = ["flower-supernode", *flower_args]
    importlib.import_module("flwr.supernode.cli.flower_supernode").flower_supernode()


if __name__ == "__main__":
    main()
