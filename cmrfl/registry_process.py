"""A registry the demo runs for itself: `mlflow server` on a free loopback port, stopped as a whole.

It is the server `cmrfl registry serve` runs (server/registry/service.py), with its
data in one folder that persists between demos. The admin password is generated on
first use and kept in that folder, owner-only, never printed. `mlflow server` starts
uvicorn as a child and does not pass SIGTERM on, so the server gets its own process
group and the whole group is stopped. With a certificate and key it serves HTTPS.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ADMIN_PASSWORD_FILE = "admin-password"
SERVER_LOG = "server.log"
AUTH_DATABASE = "basic_auth.db"  # where MLflow keeps accounts (RegistrySettings' default)


class RegistryStartError(RuntimeError):
    """The registry could not start, or its folder cannot be used."""


def check_registry_folder(data_dir: Path) -> None:
    """A registry in ``data_dir`` can be started: new, or with its admin password beside it."""
    path = data_dir / ADMIN_PASSWORD_FILE
    if path.is_file():
        if len(path.read_text().strip()) < 12:  # MLflow's own minimum
            raise RegistryStartError(f"{path}: the admin password must be at least 12 characters")
    elif (data_dir / AUTH_DATABASE).exists():
        raise RegistryStartError(
            f"{data_dir} holds a registry but not its admin password ({path} is missing); "
            f"remove {data_dir} to start a new registry"
        )


def admin_password(data_dir: Path) -> str:
    """DATA_DIR/admin-password (0600): made with the registry, read on every later start."""
    check_registry_folder(data_dir)
    path = data_dir / ADMIN_PASSWORD_FILE
    if path.is_file():
        return path.read_text().strip()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # accounts, password hashes, secrets: owner only
    password = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.chmod(0o600)  # touch's mode is masked by the umask
    path.write_text(password + "\n")
    return password


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_registry(
    data_dir: Path, password: str, tls: tuple[Path, Path] | None = None, startup_timeout_s: float = 180.0
) -> Iterator[str]:
    """Start the registry on 127.0.0.1 (HTTPS with ``tls``: certificate, key) and yield its URI; stop it on leaving."""
    from server.registry.service import RegistrySettings, server_command

    certificate, key = tls or (None, None)
    settings = RegistrySettings(port=free_loopback_port(), data_dir=data_dir, tls_certificate=certificate, tls_key=key)
    command, environment = server_command(settings, admin_password=password)
    uri = settings.uri
    log_path = data_dir / SERVER_LOG
    with log_path.open("a") as log:
        process = subprocess.Popen(
            command,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_until_healthy(uri, process, log_path, startup_timeout_s)
            yield uri
        finally:
            stop_process_group(process)


def _wait_until_healthy(uri: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    # Only whether our own child answers on loopback: no credentials go with it, so the
    # certificate is not checked here (every client that sends a password checks it).
    context = None
    if uri.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2, context=context)
            return
        except OSError:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                raise RegistryStartError(
                    f"the registry server stopped at start (exit {process.returncode}): {tail[0][:400]}; see {log_path}"
                ) from None
            if time.monotonic() > deadline:
                raise RegistryStartError(
                    f"the registry did not answer at {uri} within {timeout_s:.0f} s; see {log_path}"
                ) from None
            time.sleep(0.3)


def stop_process_group(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the server's whole process group; SIGKILL to what is left after ``grace_s``."""
    group = process.pid  # start_new_session: the leader's pid is the group id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _group_alive(group, process) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(group, process):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _group_alive(group: int, process: subprocess.Popen) -> bool:
    if process.poll() is None:
        return True
    try:
        os.killpg(group, 0)  # any member left (a child whose leader has gone)?
    except ProcessLookupError:
        return False
    return True
