"""The consortium's SuperLink: Flower's own ``flower-superlink`` with TLS, SuperNode
authentication, a Control API for the consortium admin only, and its state on disk;
and admitting a site by registering its key.

Flower 1.42 serves the Fleet API (SuperNodes), the Control API (``flwr run``,
``flwr supernode register``) and the Runtime API (ServerApp) on one HTTPS port. With
``--enable-supernode-auth`` a SuperNode is accepted only if its public key was
registered beforehand through the Control API (``flwr supernode register``); the
SuperNode proves it holds the matching private key on every request. The Control API
itself serves only requests carrying a token signed by the consortium admin's key
(server/control_auth.py), which the SuperLink verifies with admin.pub.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from server.admin_token import AdminTokenError
from server.flwr_connection import CONNECTION_NAME, write_flwr_home
from server.pki import SuperLinkFiles

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 9092
DATABASE_FILE = "superlink.sqlite"
FLOWER_BIN = Path(sys.executable).parent


def flower_environment(flwr_home: Path | None = None) -> dict[str, str]:
    """Flower's processes start helpers (flower-superexec, flwr-serverapp) from PATH."""
    environment = {**os.environ, "PATH": f"{FLOWER_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if flwr_home is not None:
        environment["FLWR_HOME"] = str(flwr_home)
    return environment


@dataclass(frozen=True)
class SuperLinkSettings:
    pki_dir: Path
    state_dir: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    @property
    def database(self) -> Path:
        return self.state_dir / DATABASE_FILE

    def command(self, extra_args: list[str] | None = None) -> list[str]:
        """Flower's flower-superlink (through server.control_auth); PkiError for a bad --pki folder."""
        pki = SuperLinkFiles(self.pki_dir)
        pki.check()
        return [
            sys.executable,
            "-m",
            "server.control_auth",
            "--admin-public-key",
            str(pki.admin_pub.resolve()),
            "--ssl-ca-certfile",
            str(pki.ca_cert.resolve()),
            "--ssl-certfile",
            str(pki.cert.resolve()),
            "--ssl-keyfile",
            str(pki.key.resolve()),
            "--enable-supernode-auth",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--database",
            str(self.database.resolve()),
            # The ServerApp runs in this installation's environment: no per-run `uv sync`
            # that would fetch packages from the internet onto the consortium's server.
            "--disable-runtime-dependency-installation",
            *(extra_args or []),
        ]

    def listening(self) -> list[str]:
        address = f"{self.host}:{self.port}"
        return [
            f"Fleet API (SuperNodes connect here):        https://{address}",
            f"Control API (consortium admin only):        https://{address}",
            f"Runtime API (ServerApp):                    https://{address}",
            f"State (runs, registered SuperNodes):        {self.database.resolve()}",
        ]


class RegistrationError(RuntimeError):
    """The SuperLink did not register the site's key (message says why)."""


def register_supernode(
    superlink: str,
    ca_cert: Path,
    public_key: Path,
    admin_key: Path,
    name: str | None = None,
    timeout_s: float = 60,
) -> str:
    """Admit a site: register its SuperNode public key with ``flwr supernode register``,
    as the consortium admin (ADMIN_KEY signs the request's token).

    Returns the node id the SuperLink assigned.
    """
    public_key = Path(public_key)
    for needed, what in ((public_key, "public key"), (ca_cert, "CA certificate"), (admin_key, "admin key")):
        if not Path(needed).is_file():
            raise RegistrationError(f"{needed}: no such {what} file")
    with tempfile.TemporaryDirectory(prefix="cmrfl-flwr-home-") as flwr_home:
        try:
            write_flwr_home(Path(flwr_home), superlink, Path(ca_cert), admin_key=Path(admin_key))
        except AdminTokenError as problem:
            raise RegistrationError(str(problem)) from None
        command = [
            str(FLOWER_BIN / "flwr"),
            "supernode",
            "register",
            str(public_key),
            CONNECTION_NAME,
            "--format",
            "json",
        ]
        if name:
            command += ["--name", name]
        completed = subprocess.run(
            command, env=flower_environment(Path(flwr_home)), capture_output=True, text=True, timeout=timeout_s
        )
    node_id = _json_field(completed.stdout, "node-id")
    if completed.returncode != 0 or node_id is None:
        said = (completed.stdout + completed.stderr).strip().splitlines()
        raise RegistrationError(
            f"the SuperLink at {superlink} did not register {public_key}: "
            + (" ".join(said[-4:]) if said else f"flwr exited with {completed.returncode}")
        )
    return node_id


def _json_field(text: str, key: str) -> str | None:
    import json

    start = text.find("{")
    if start < 0:
        return None
    try:
        value = json.loads(text[start:]).get(key)
    except json.JSONDecodeError:
        return None
    return None if value is None else str(value)
