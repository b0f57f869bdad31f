"""`cmrfl demo` registers its model in a registry it runs itself, and its printed commands work."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from typer.testing import CliRunner

from client.model_trust import MODEL_FILES, verify_model_folder
from cmrfl.cli import app
from cmrfl.registry_process import stop_process_group

MODEL = "lge-scar"
NO_REGISTRY_ENV = {"MLFLOW_TRACKING_URI": None, "MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None}


def registry_processes(registry_dir: Path) -> list[int]:
    """Live processes (a server and its children) started for the registry in ``registry_dir``."""
    marker = f"MLFLOW_AUTH_CONFIG_PATH={(registry_dir / 'basic_auth.ini').resolve()}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


def printed_command(output: str, verb: str) -> list[str]:
    """The demo's printed `cmrfl VERB …` line, as the shell would split it."""
    line = next(line for line in output.splitlines() if line.strip().startswith(f"cmrfl {verb}"))
    words = shlex.split(line)
    return [str(Path(sys.executable).with_name("cmrfl")), *words[1:]]


@pytest.mark.slow
def test_the_demo_registers_in_its_own_registry_and_its_printed_commands_work(tmp_path: Path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "--sites", "2", "--cases-per-site", "6", "--rounds", "1", "--out", str(out)], env=NO_REGISTRY_ENV
    )
    assert result.exit_code == 0, result.output
    registry_dir = out / "registry"
    assert f"Registered {MODEL} version 1 and signed its approval in the demo's own registry {registry_dir}" in (
        result.output
    )
    assert registry_processes(registry_dir) == []  # the whole server process group was stopped

    password_file = registry_dir / "admin-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    holding_password = [p for p in out.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert holding_password == [password_file]  # not in server.log, the run, the sites or the console
    assert password not in result.output

    demo_key = serialization.load_pem_public_key((out / "pki" / "model-signing.pub").read_bytes())
    assert isinstance(demo_key, Ed25519PublicKey)
    site_dirs = [out / "sites" / "site-01", out / "sites" / "site-02"]
    for site_dir in site_dirs:
        account = site_dir / "registry-account.toml"
        assert account.stat().st_mode & 0o777 == 0o600
    pulled = site_dirs[0] / "models" / MODEL / "1"
    kept = [*MODEL_FILES, "model-release.json", "approval.json", "pulled.json"]  # the approved version, over HTTPS
    assert sorted(p.name for p in pulled.iterdir()) == sorted(kept)
    verified = verify_model_folder(pulled, demo_key, expected_model=MODEL, expected_version="1")
    assert json.loads((pulled / "pulled.json").read_text())["pulled_by"] == "site-01"
    assert verified.card["training"]["rounds"] == 1

    # The printed commands, as a person would paste them: browse (the registry again), pull, predict.
    serve = printed_command(result.output, "registry serve")
    uri = f"https://127.0.0.1:{serve[serve.index('--port') + 1]}"
    demo_ca = out / "pki" / "ca.pem"
    assert all((site_dir / "trust" / "ca.pem").read_bytes() == demo_ca.read_bytes() for site_dir in site_dirs)
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        serve, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy()
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2, context=ssl.create_default_context(cafile=demo_ca))
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
        from mlflow import MlflowClient

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            patch.setenv("MLFLOW_TRACKING_PASSWORD", password)
            patch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(demo_ca))
            client = MlflowClient(uri)
            assert client.get_registered_model(MODEL).aliases == {"candidate": "1", "approved": "1"}
            version = client.get_model_version_by_alias(MODEL, "candidate")
            assert version.run_id is not None
            stored = Path(client.download_artifacts(version.run_id, "registered-model", str(tmp_path / "stored")))
        assert (
            verify_model_folder(stored, demo_key, expected_model=MODEL).weights_sha256 == version.tags["weights_sha256"]
        )
        assert version.tags["weights_sha256"] == verified.weights_sha256

        clean_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        pull = subprocess.run(
            printed_command(result.output, "registry pull"), env=clean_env, capture_output=True, text=True
        )
        assert pull.returncode == 0, pull.stdout + pull.stderr
        assert "signature and release verified" in " ".join(pull.stdout.split())
    finally:
        stop_process_group(server)  # as the demo stops its own: the whole group
        log.close()
    assert registry_processes(registry_dir) == []

    predict = subprocess.run(printed_command(result.output, "predict"), capture_output=True, text=True)
    assert predict.returncode == 0, predict.stdout + predict.stderr
    out_option = re.search(r"--out (\S+)", " ".join(printed_command(result.output, "predict")))
    assert out_option, result.output
    prediction = Path(out_option[1])
    assert json.loads((prediction / "scar-burden.json").read_text())["model"]["version"] == "1"


def test_a_site_account_file_others_may_read_is_refused(tmp_path: Path):
    from client.registry_account import (
        RegistryAccount,
        RegistryAccountError,
        load_registry_account,
        write_registry_account,
    )

    path = write_registry_account(tmp_path, RegistryAccount("http://127.0.0.1:5000", "site-01", 'pw "quoted" \\ x'))
    assert load_registry_account(tmp_path) == RegistryAccount("http://127.0.0.1:5000", "site-01", 'pw "quoted" \\ x')
    path.chmod(0o644)
    with pytest.raises(RegistryAccountError, match=f"{path}: holds a password but others may read it .*chmod 600"):
        load_registry_account(tmp_path)


def test_the_demo_refuses_a_registry_folder_without_its_admin_password_before_any_work(tmp_path: Path):
    out = tmp_path / "demo"
    (out / "registry").mkdir(parents=True)
    (out / "registry" / "basic_auth.db").write_bytes(b"")
    result = CliRunner().invoke(app, ["demo", "--out", str(out)], env=NO_REGISTRY_ENV)
    assert result.exit_code != 0
    assert "holds a registry but not its admin password" in " ".join(result.output.split())
    assert sorted(p.name for p in out.iterdir()) == ["registry"]  # nothing generated or trained


@pytest.mark.parametrize("task_name", ["lge", "mapping"])
def test_the_printed_predict_command_names_a_series_of_the_demos_task(task_name: str, tmp_path: Path):
    """Each task's phantom lays out its hospitals its own way; the demo points at a series
    of the task's own kind (DemoRecipe.example_series)."""
    from cmrfl.demo_registry import DemoRegistration, registry_lines
    from tasks import get_task

    recipe = get_task(task_name).demo
    assert recipe is not None
    hospitals = tmp_path / "hospitals"
    recipe.generate(hospitals, 1, 1, 0)
    registration = DemoRegistration(
        "model", "1", "run", "http://127.0.0.1:5000", tmp_path / "registry", tmp_path / "sites" / "site-01"
    )
    predict = registry_lines(registration, hospitals, recipe.example_series)[-1].split()
    series = Path(predict[predict.index("--model") + 2])
    assert series.is_dir() and series.is_relative_to(hospitals / "site-01" / "dicom")
