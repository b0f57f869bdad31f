"""A real Flower deployment on one machine: a SuperLink and one SuperNode per site.

Each process is Flower's own (``flower-superlink``, ``flower-supernode``); the run
is submitted with ``flwr run`` exactly as a consortium would. This is how the GPU
run, the deployment tests and the README's walkthrough drive a federation on
loopback. Transport security (TLS, SuperNode authentication) is configured by
the caller through ``superlink_args``/``supernode_args``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
_BIN = Path(sys.executable).parent


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def run_config_argument(run_config: dict[str, Any]) -> str:
    return " ".join(f"{key}={_toml_value(value)}" for key, value in run_config.items())


class LocalFederation:
    def __init__(
        self,
        site_dirs: Sequence[Path],
        work_dir: Path,
        base_port: int = 9200,
        insecure: bool = True,
    ) -> None:
        self.site_dirs = [Path(d).resolve() for d in site_dirs]
        self.work_dir = Path(work_dir).resolve()
        # Flower >= 1.40 serves the Fleet, Control and Runtime APIs on one HTTP port.
        self.superlink_port = base_port
        self.superlink_address = f"127.0.0.1:{base_port}"
        self.supernode_ports = [base_port + 10 + i for i in range(len(self.site_dirs))]
        self.insecure = insecure
        self.processes: dict[str, subprocess.Popen] = {}
        self.flwr_home = self.work_dir / "flwr-home"
        # The SuperLink and SuperNodes start Flower's helper executables from PATH.
        self.environment = {
            **os.environ,
            "PATH": f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(self.flwr_home),
        }

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.work_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=self.work_dir, env=self.environment
        )
        self.processes[name] = process
        return process

    def start_superlink(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "superlink",
            [
                str(_BIN / "flower-superlink"),
                *(["--insecure"] if self.insecure else []),
                "--host", "127.0.0.1",
                "--port", str(self.superlink_port),
                "--database", str(self.work_dir / "superlink.sqlite"),
                "--disable-runtime-dependency-installation",
            ],
        )

    def start_supernode(self, index: int) -> None:
        self._spawn(
            f"supernode-{self.site_dirs[index].name}",
            [
                str(_BIN / "flower-supernode"),
                *(["--insecure"] if self.insecure else []),
                "--superlink", self.superlink_address,
                "--node-config", f'site-dir="{self.site_dirs[index]}"',
                "--port", str(self.supernode_ports[index]),
                "--max-retries", "30",
            ],
        )

    def write_connection(self) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            "[superlink]\n"
            'default = "cmrfl"\n\n'
            "[superlink.cmrfl]\n"
            f'address = "{self.superlink_address}"\n'
            f"insecure = {'true' if self.insecure else 'false'}\n"
        )

    def __enter__(self) -> LocalFederation:
        self.start_superlink()
        time.sleep(2.0)
        for index in range(len(self.site_dirs)):
            self.start_supernode(index)
        self.write_connection()
        return self

    def run(self, run_config: dict[str, Any], timeout_s: float = 1800) -> subprocess.CompletedProcess:
        """Submit the cmrfl app with ``flwr run`` and stream it to the end."""
        app_dir = self._app_copy()
        return subprocess.run(
            [
                str(_BIN / "flwr"), "run", str(app_dir), "cmrfl",
                "--run-config", run_config_argument(run_config),
                "--stream",
            ],
            env=self.environment,
            timeout=timeout_s,
            capture_output=True,
            text=True,
        )

    def _app_copy(self) -> Path:
        """The Flower App bundle holds only the app's sources and pyproject.toml."""
        app_dir = self.work_dir / "app"
        if app_dir.exists():
            shutil.rmtree(app_dir)
        app_dir.mkdir(parents=True)
        for package in ("cmr", "tasks", "privacy", "fairness", "client", "server", "cmrfl"):
            shutil.copytree(
                REPO_ROOT / package, app_dir / package, ignore=shutil.ignore_patterns("__pycache__")
            )
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO_ROOT / name, app_dir / name)
        return app_dir

    def stop(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    def __exit__(self, *exc_info: object) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)
