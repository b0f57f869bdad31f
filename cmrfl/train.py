"""Submitting a training run to a deployed federation and following it to the end.

``flwr run APP cmrfl --stream`` with a private FLWR_HOME whose ``cmrfl`` connection
holds the SuperLink's address and the consortium CA (server/flwr_connection.py);
the exit code is ``flwr run``'s: non-zero if the run could not be submitted or failed.
With the consortium admin's key, the app is signed (cmrfl/app_signature.py: SuperNodes
run nothing else) and the connection carries an admin token (the Control API answers
nothing else).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmrfl.app_bundle import app_copy
from cmrfl.app_signature import sign_app
from server.flwr_connection import CONNECTION_NAME, write_flwr_home
from server.superlink import FLOWER_BIN, flower_environment

COMPLETED = "finished:completed"
_STARTED = re.compile(r"Successfully started run (\d+)")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def run_config_argument(run_config: dict[str, Any]) -> str:
    """``--run-config`` text (TOML values) for a dict of run-config keys."""
    return " ".join(f"{key}={_toml_value(value)}" for key, value in run_config.items())


def flwr_run_command(app_dir: Path, run_config: str | None) -> list[str]:
    command = [str(FLOWER_BIN / "flwr"), "run", str(app_dir), CONNECTION_NAME, "--stream"]
    if run_config:
        command += ["--run-config", run_config]
    return command


@dataclass(frozen=True)
class TrainOutcome:
    run_id: int | None
    status: str  # Flower's run status, e.g. "finished:completed"; "" if unknown
    returncode: int  # 0 only for a run that finished:completed
    output: str  # what flwr printed (the run's streamed log)


def submit_and_follow(
    superlink: str,
    ca_cert: Path | None,
    run_config: str | None = None,
    federation: str | None = None,
    insecure: bool = False,
    work_dir: Path | None = None,
    timeout_s: float | None = None,
    echo: Callable[[str], None] | None = print,
    admin_key: Path | None = None,
) -> TrainOutcome:
    """Run ``flwr run --stream`` against SUPERLINK, then ask Flower how the run ended.

    ``flwr run --stream`` exits 0 once the log stream closes whatever the run's fate,
    so the outcome comes from ``flwr ls --run-id``. ``work_dir`` keeps the app copy and
    FLWR_HOME (default: a temporary folder); ``echo`` receives the streamed log lines.
    """
    if not insecure:
        if ca_cert is None:
            raise FileNotFoundError("--ca: the consortium CA certificate is required for TLS")
        if not Path(ca_cert).is_file():
            raise FileNotFoundError(f"--ca {ca_cert}: no such file")
    with tempfile.TemporaryDirectory(prefix="cmrfl-train-") as scratch:
        root = Path(work_dir) if work_dir is not None else Path(scratch)
        flwr_home = root / "flwr-home"
        write_flwr_home(flwr_home, superlink, ca_cert, insecure=insecure, federation=federation, admin_key=admin_key)
        app_dir = app_copy(root / "app")
        if admin_key is not None:
            sign_app(app_dir, admin_key)
        environment = flower_environment(flwr_home)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        lines: list[str] = []
        process = subprocess.Popen(
            flwr_run_command(app_dir, run_config),
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if echo is not None:
                    echo(line.rstrip("\n"))
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(process.args, timeout_s or 0)
            process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        output = "".join(lines)
        started = _STARTED.search(output)
        run_id = int(started.group(1)) if started else None
        status = run_status(run_id, environment) if run_id is not None and process.returncode == 0 else ""
    returncode = 0 if status == COMPLETED else (process.returncode or 1)
    return TrainOutcome(run_id=run_id, status=status, returncode=returncode, output=output)


def run_status(run_id: int, environment: dict[str, str], attempts: int = 10) -> str:
    """Flower's status of RUN_ID; waits briefly for a streamed run to be marked finished."""
    status = ""
    for _ in range(attempts):
        completed = subprocess.run(
            [str(FLOWER_BIN / "flwr"), "ls", CONNECTION_NAME, "--run-id", str(run_id), "--format", "json"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        try:
            runs = json.loads(completed.stdout[completed.stdout.find("{") :]).get("runs", [])
        except json.JSONDecodeError:
            runs = []
        status = str(runs[0]["status"]) if runs else ""
        if status.startswith("finished"):
            return status
        time.sleep(1.0)
    return status
