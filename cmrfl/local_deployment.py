"""A real Flower deployment on one machine: a SuperLink and one SuperNode per site.

Each process is Flower's own (``flower-superlink``, ``flower-supernode``); the run
is submitted with ``flwr run`` exactly as a consortium would. This is how the GPU
run, the deployment tests and the README's walkthrough drive a federation on
loopback.

Two modes:

* ``insecure=True``: plain HTTP, any SuperNode accepted (benchmarks).
* ``insecure=False``: what a consortium runs, through the same commands: a PKI in
  WORK_DIR/pki (``cmrfl pki init``), the SuperLink with TLS, SuperNode authentication
  and an admin-only Control API, given only pki/superlink (``cmrfl server start``),
  each site initialised (``cmrfl site init``, unless it already is) with the public
  files and its key registered as the admin (``cmrfl server register-site``), each
  SuperNode started with ``cmrfl site join`` (it runs only admin-signed apps), runs
  signed and submitted with ``cmrfl train --admin-key``. FLWR_HOME holds an admin
  token, so ``flwr`` commands run with ``environment`` are the admin's.

Every process starts in its own process group, so stopping one also stops the
helpers Flower starts beneath it (SuperExec, ServerApp, ClientApp processes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cmrfl.app_bundle import REPO_ROOT, app_copy
from cmrfl.train import run_config_argument
from server.pki import PkiFiles

__all__ = ["REPO_ROOT", "LocalFederation", "run_config_argument"]

_BIN = Path(sys.executable).parent


class LocalFederation:
    def __init__(
        self,
        site_dirs: Sequence[Path],
        work_dir: Path,
        base_port: int = 9200,
        insecure: bool = True,
        supernode_ports: Sequence[int] | None = None,
    ) -> None:
        self.site_dirs = [Path(d).resolve() for d in site_dirs]
        self.work_dir = Path(work_dir).resolve()
        # Flower >= 1.40 serves the Fleet, Control and Runtime APIs on one HTTP port.
        self.superlink_port = base_port
        self.superlink_address = f"127.0.0.1:{base_port}"
        self.supernode_ports = list(supernode_ports or [base_port + 10 + i for i in range(len(self.site_dirs))])
        self.insecure = insecure
        self.processes: dict[str, subprocess.Popen] = {}
        self.flwr_home = self.work_dir / "flwr-home"
        self.pki_dir = self.work_dir / "pki"
        self.state_dir = self.work_dir / "superlink-state"
        self.node_ids: dict[str, str] = {}  # site folder name -> SuperNode id (secure mode)
        # The SuperLink and SuperNodes start Flower's helper executables from PATH.
        self.environment = {
            **os.environ,
            "PATH": f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(self.flwr_home),
        }

    @property
    def pki(self) -> PkiFiles:
        return PkiFiles(self.pki_dir)

    @property
    def ca_cert(self) -> Path:
        return self.pki.ca_cert

    @property
    def admin_key(self) -> Path:
        return self.pki.admin_key

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.work_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            env=self.environment,
            start_new_session=True,  # its own process group: Flower's helpers go with it
        )
        self.processes[name] = process
        return process

    def log_text(self, name: str) -> str:
        path = self.work_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    # --- SuperLink -------------------------------------------------------------------

    def start_superlink(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.insecure:
            command = [
                str(_BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.superlink_port),
                "--database",
                str(self.work_dir / "superlink.sqlite"),
                "--disable-runtime-dependency-installation",
            ]
        else:
            if not self.ca_cert.is_file():
                from server.pki import init_pki

                init_pki(self.pki_dir, [])
            command = [
                str(_BIN / "cmrfl"),
                "server",
                "start",
                "--pki",
                str(self.pki.superlink_dir),
                "--state-dir",
                str(self.state_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.superlink_port),
            ]
        self._spawn("superlink", command)

    def wait_for_superlink(self, timeout_s: float = 60) -> None:
        """Until the SuperLink accepts connections (and, with TLS, completes a handshake)."""
        deadline = time.monotonic() + timeout_s
        while True:
            process = self.processes["superlink"]
            if process.poll() is not None:
                raise RuntimeError(
                    f"the SuperLink exited ({process.returncode}):\n{self.log_text('superlink')[-3000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.superlink_port), timeout=2) as raw:
                    if not self.insecure:
                        context = ssl.create_default_context(cafile=str(self.ca_cert))
                        with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                            pass
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the SuperLink did not answer on {self.superlink_address} in {timeout_s:g} s"
                    ) from None
                time.sleep(0.5)

    # --- sites -----------------------------------------------------------------------

    def admit_site(self, site_dir: Path) -> str:
        """``cmrfl site init`` (if the site is not yet initialised) and register its key."""
        from client.site import SITE_CONFIG_FILE
        from client.site_init import init_site, load_site_federation
        from server.superlink import register_supernode

        site_dir = Path(site_dir)
        config_path = site_dir / SITE_CONFIG_FILE
        initialised = config_path.is_file() and "[federation]" in config_path.read_text()
        federation = (
            load_site_federation(site_dir)
            if initialised
            else init_site(
                site_dir,
                site_dir.name,
                self.superlink_address,
                self.ca_cert,
                self.pki.model_signing_pub,
                self.pki.admin_pub,
            )
        )
        node_id = register_supernode(
            self.superlink_address, self.ca_cert, federation.public_key, self.admin_key, name=federation.name
        )
        self.node_ids[site_dir.name] = node_id
        return node_id

    def supernode_name(self, index: int) -> str:
        return f"supernode-{self.site_dirs[index].name}"

    def start_supernode(self, index: int) -> subprocess.Popen:
        if self.insecure:
            command = [
                str(_BIN / "flower-supernode"),
                "--insecure",
                "--superlink",
                self.superlink_address,
                "--node-config",
                f'site-dir="{self.site_dirs[index]}"',
                "--port",
                str(self.supernode_ports[index]),
                "--max-retries",
                "30",
            ]
        else:
            command = [
                str(_BIN / "cmrfl"),
                "site",
                "join",
                "--site-dir",
                str(self.site_dirs[index]),
                "--clientapp-port",
                str(self.supernode_ports[index]),
                "--max-retries",
                "60",  # passed to flower-supernode: ride out a SuperLink restart
            ]
        return self._spawn(self.supernode_name(index), command)

    def write_connection(self) -> None:
        from server.flwr_connection import write_flwr_home

        write_flwr_home(
            self.flwr_home,
            self.superlink_address,
            None if self.insecure else self.ca_cert,
            insecure=self.insecure,
            admin_key=None if self.insecure else self.admin_key,
        )

    def __enter__(self) -> LocalFederation:
        try:
            self.start_superlink()
            self.wait_for_superlink()
            if not self.insecure:
                for site_dir in self.site_dirs:
                    self.admit_site(site_dir)
            for index in range(len(self.site_dirs)):
                self.start_supernode(index)
            self.write_connection()
        except BaseException:
            self.__exit__()
            raise
        return self

    # --- runs ------------------------------------------------------------------------

    def submit(self, run_config: dict[str, Any]) -> subprocess.Popen:
        """Start submitting a run (returns at once); the process ends when the run does."""
        if self.insecure:
            app_dir = app_copy(self.work_dir / "app")
            command = [
                str(_BIN / "flwr"),
                "run",
                str(app_dir),
                "cmrfl",
                "--run-config",
                run_config_argument(run_config),
                "--stream",
            ]
        else:
            command = [
                str(_BIN / "cmrfl"),
                "train",
                "--superlink",
                self.superlink_address,
                "--ca",
                str(self.ca_cert),
                "--admin-key",
                str(self.admin_key),
                "--run-config",
                run_config_argument(run_config),
            ]
        return subprocess.Popen(
            command,
            env=self.environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, run_config: dict[str, Any], timeout_s: float = 1800) -> subprocess.CompletedProcess:
        """Submit the cmrfl app and stream it to the end (``cmrfl train`` with TLS)."""
        process = self.submit(run_config)
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process, signal.SIGKILL)
            stdout, stderr = process.communicate()
            return subprocess.CompletedProcess(process.args, 124, stdout, stderr)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    # --- stopping --------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """Kill a process and its helpers at once (SIGKILL: a crash, not a shutdown)."""
        process = self.processes[name]
        _kill_group(process, signal.SIGKILL)
        process.wait()

    def stop(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            _kill_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGKILL)
                process.wait()
        _kill_group(process, signal.SIGKILL)  # helpers that outlived their parent

    def __exit__(self, *exc_info: object) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)


def _kill_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
