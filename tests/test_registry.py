"""The model registry: signed, carded model versions on a real MLflow server, pulled by sites."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from client import model_trust
from client.model_trust import SignatureError, verify_model_folder
from client.registry_pull import ModelReference
from cmrfl.cli import app
from server.registry import signing

ADMIN, ADMIN_PASSWORD = "admin", "consortium-admin-pw-1"
SITE, SITE_PASSWORD = "site-01", "site-01-pw-2"
MODEL = "lge-scar"
FAST = {"max-local-steps": 4, "batch-size": 4, "min-train-sites": 3, "min-available-sites": 3}
runner = CliRunner()


def write_key_pair(pki_dir: Path) -> tuple[Path, Path]:
    """The consortium's model-signing keys as `cmrfl pki init` writes them (PKCS8 / SPKI PEM)."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private, public = pki_dir / "model-signing.key", pki_dir / "model-signing.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def new_site(root: Path, public_key: Path, ca: Path | None = None) -> Path:
    """A site folder with the consortium keys pinned where `cmrfl site init` pins them."""
    (root / "trust").mkdir(parents=True)
    (root / "trust" / "model-signing.pub").write_bytes(public_key.read_bytes())
    if ca is not None:
        (root / "trust" / "ca.pem").write_bytes(ca.read_bytes())
    return root


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def account(user: str, password: str, registry: dict) -> dict[str, str]:
    """MLflow's variables for ``user`` at the test registry, trusting the CA that issued its certificate."""
    return {
        "MLFLOW_TRACKING_URI": registry["uri"],
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_TRACKING_SERVER_CERT_PATH": str(registry["ca"]),
    }


@contextlib.contextmanager
def as_account(user: str, password: str, registry: dict) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in account(user, password, registry).items():
            patch.setenv(name, value)
        yield


# ---------------------------------------------------------------- signatures, no server


def test_server_and_sites_build_the_same_signed_bytes():
    from client.registry_pull import APPROVAL_TAG as SITE_APPROVAL_TAG
    from server.registry.registration import APPROVAL_TAG

    hashes = ("a" * 64, "b" * 64, "c" * 64)
    assert signing.signed_bytes(*hashes) == model_trust.signed_bytes(*hashes)
    assert signing.SIGNATURE_FORMAT == model_trust.SIGNATURE_FORMAT
    assert (signing.WEIGHTS_FILE, signing.CARD_FILE, signing.CARD_MARKDOWN_FILE, signing.SIGNATURE_FILE) == (
        model_trust.MODEL_FILES
    )
    record = {"format": signing.RELEASE_FORMAT, "model": "lge-scar", "version": "3", "note": "é"}
    assert signing.record_bytes(record) == model_trust.record_bytes(record)
    assert (signing.RELEASE_FILE, signing.RELEASE_FORMAT, signing.APPROVAL_FORMAT, signing.APPROVED_STAGE) == (
        model_trust.RELEASE_FILE,
        model_trust.RELEASE_FORMAT,
        model_trust.APPROVAL_FORMAT,
        model_trust.APPROVED_STAGE,
    )
    assert signing.APPROVAL_FILE == model_trust.APPROVAL_FILE
    assert APPROVAL_TAG == SITE_APPROVAL_TAG


@pytest.fixture
def signed_folder(tmp_path: Path) -> tuple[Path, Path, Path]:
    private, public = write_key_pair(tmp_path / "pki")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "final_model.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "model-card.json").write_text(
        json.dumps({"model_name": MODEL, "weights": {"sha256": signing.file_sha256(folder / "final_model.pt")}})
    )
    (folder / "model-card.md").write_text("# Model card\n" * 20)
    signing.sign_model_files(folder, signing.load_signing_key(private))
    return folder, private, public


def public_key(path: Path):
    return serialization.load_pem_public_key(path.read_bytes())


def test_a_signed_model_folder_verifies_against_the_consortium_key(signed_folder):
    folder, _, public = signed_folder
    verified = verify_model_folder(folder, public_key(public), expected_model=MODEL)
    assert verified.weights_sha256 == signing.file_sha256(folder / "final_model.pt")


@pytest.mark.parametrize("altered", ["final_model.pt", "model-card.json", "model-card.md", "model-signature.json"])
def test_one_flipped_byte_in_any_file_is_refused(signed_folder, altered: str):
    folder, _, public = signed_folder
    flip_byte(folder / altered, offset=40)
    with pytest.raises(SignatureError, match="signature"):
        verify_model_folder(folder, public_key(public), expected_model=MODEL)


def test_a_model_signed_by_another_key_is_refused(signed_folder, tmp_path: Path):
    folder, _, _ = signed_folder
    _, other_public = write_key_pair(tmp_path / "other-pki")
    with pytest.raises(SignatureError, match="signature does not verify"):
        verify_model_folder(folder, public_key(other_public))


def test_a_signed_card_of_another_model_is_refused(signed_folder):
    folder, _, public = signed_folder
    with pytest.raises(SignatureError, match="signature covers model 'lge-scar', not 'other-model'"):
        verify_model_folder(folder, public_key(public), expected_model="other-model")


def test_a_signing_key_that_is_not_ed25519_is_named_in_the_error(tmp_path: Path):
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "model-signing.key"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(signing.SigningKeyError, match=f"{path}: expected an Ed25519 private key"):
        signing.load_signing_key(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lge-scar", ModelReference("lge-scar", "approved", None)),
        ("lge-scar@candidate", ModelReference("lge-scar", "candidate", None)),
        ("lge-scar:3", ModelReference("lge-scar", None, "3")),
    ],
)
def test_model_references_default_to_the_approved_alias(text: str, expected: ModelReference):
    assert ModelReference.parse(text) == expected


def test_serve_refuses_to_start_without_an_admin_password(tmp_path: Path):
    result = runner.invoke(
        app, ["registry", "serve", "--data-dir", str(tmp_path)], env={"MLFLOW_AUTH_ADMIN_PASSWORD": ""}
    )
    assert result.exit_code != 0
    assert "set MLFLOW_AUTH_ADMIN_PASSWORD" in result.output


def test_the_server_config_holds_no_password_and_takes_postgres_and_object_stores_as_given(tmp_path: Path, monkeypatch):
    from server.registry.service import RegistrySettings, server_command

    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
    settings = RegistrySettings(
        data_dir=tmp_path,
        backend_store_uri="postgresql://mlflow@db:5432/mlflow",
        artifacts_destination="s3://consortium-models/registry",
        auth_database_uri="postgresql://mlflow@db:5432/auth",
    )
    command, environment = server_command(settings)
    option = {name: value for name, value in itertools.pairwise(command) if name.startswith("--")}
    assert option["--app-name"] == "basic-auth" and "--enable-workspaces" in command
    assert option["--backend-store-uri"] == "postgresql://mlflow@db:5432/mlflow"
    assert option["--artifacts-destination"] == "s3://consortium-models/registry"
    auth_config = Path(environment["MLFLOW_AUTH_CONFIG_PATH"])
    text = auth_config.read_text()
    assert "default_permission = NO_PERMISSIONS" in text and "database_uri = postgresql://mlflow@db:5432/auth" in text
    assert ADMIN_PASSWORD not in text and ADMIN_PASSWORD not in " ".join(command)
    assert auth_config.stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------- a real registry on loopback


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`mlflow server --app-name basic-auth` as `cmrfl registry serve` starts it, over HTTPS on a free port."""
    from server.pki import init_pki, issue_registry_certificate
    from server.registry.service import RegistrySettings, server_command

    pki = init_pki(tmp_path_factory.mktemp("registry-pki"))
    certificate, key = issue_registry_certificate(pki.directory, [])
    data_dir = tmp_path_factory.mktemp("registry")
    settings = RegistrySettings(port=free_port(), data_dir=data_dir, tls_certificate=certificate, tls_key=key)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
        command, environment = server_command(settings)
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = settings.uri
    trusting_the_ca = ssl.create_default_context(cafile=pki.ca_cert)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2, context=trusting_the_ca)
                break
            except OSError as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    log_tail = (data_dir / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"mlflow server did not start: {log_tail}") from error
                time.sleep(0.3)
        yield {"uri": uri, "data_dir": data_dir, "ca": pki.ca_cert}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def finished_run(ingested_sites: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real federated rounds over the three synthetic sites."""
    from cmrfl.simulation import run_simulated_federation

    run_dir = tmp_path_factory.mktemp("runs") / "run"
    run_simulated_federation(ingested_sites, {**FAST, "num-server-rounds": 2, "run-dir": str(run_dir), "resume": False})
    return run_dir


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_key_pair(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def registered(registry: dict, finished_run: Path, pki: tuple[Path, Path]) -> dict:
    """The run registered by the admin, a site account, and the version promoted to approved (signed)."""
    admin = account(ADMIN, ADMIN_PASSWORD, registry)
    result = runner.invoke(
        app, ["registry", "register", str(finished_run), "--name", MODEL, "--signing-key", str(pki[0])], env=admin
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["registry", "add-site-user", SITE], env=admin | {"CMRFL_SITE_PASSWORD": SITE_PASSWORD})
    assert result.exit_code == 0, result.output
    assert SITE_PASSWORD not in result.output
    result = runner.invoke(app, ["registry", "promote", MODEL, "1", "--signing-key", str(pki[0])], env=admin)
    assert result.exit_code == 0, result.output
    return {**registry, "version": "1"}


@pytest.mark.slow
def test_a_run_registers_a_candidate_version_with_card_and_signature(registered: dict, finished_run: Path, pki):
    from mlflow import MlflowClient

    with as_account(ADMIN, ADMIN_PASSWORD, registered):
        client = MlflowClient(registered["uri"])
        model = client.get_registered_model(MODEL)
        assert model.aliases == {"candidate": "1", "approved": "1"}
        run_id = client.get_model_version(MODEL, "1").run_id
        assert run_id is not None  # the version was registered from a run
        folder = Path(client.download_artifacts(run_id, "registered-model"))
        # the UI's view of the run: per-round metrics with step = round, artifacts beside them
        history = client.get_metric_history(run_id, "consortium/dice_myocardium")
        site_history = client.get_metric_history(run_id, "site-02/validation_cases")
        artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert sorted(m.step for m in history) == [1, 2]
    assert [m.value for m in sorted(site_history, key=lambda m: m.step)] == [
        e["evaluate"]["sites"]["site-02"]["num-examples"]
        for e in json.loads((finished_run / "summary.json").read_text())["rounds_detail"]
    ]
    assert {"summary.json", "metrics.csv", "dice_per_round.png", "fairness-audit.html", "registered-model"} <= artifacts
    verified = verify_model_folder(folder, public_key(pki[1]), expected_model=MODEL, expected_version="1")
    assert verified.weights_sha256 == signing.file_sha256(finished_run / "final_model.pt")
    assert verified.release is not None and verified.release["weights_sha256"] == verified.weights_sha256
    card = verified.card
    assert card["task"]["name"] == "lge" and card["training"]["rounds"] == 2
    assert [s["site"] for s in card["training"]["sites"]] == ["site-01", "site-02", "site-03"]
    assert all(s["validation_cases"] > 0 for s in card["training"]["sites"])
    assert card["privacy"]["secure_aggregation"]["enabled"] is True
    assert card["fairness"]["summary"]
    assert card["software"]["torch"].startswith("2.") and card["software"]["mlflow"] != "not installed"
    assert card["data_fingerprints"]["summary_json_sha256"] == signing.file_sha256(finished_run / "summary.json")
    assert "# Model card: lge-scar" in (folder / "model-card.md").read_text()


@pytest.mark.slow
def test_a_site_account_pulls_and_verifies_the_approved_version(registered: dict, pki, tmp_path: Path):
    site_dir = new_site(tmp_path / "site", pki[1], registered["ca"])
    result = runner.invoke(
        app,
        ["registry", "pull", MODEL, "--site-dir", str(site_dir)],
        env=account(SITE, SITE_PASSWORD, registered),
    )
    assert result.exit_code == 0, result.output
    assert "signature and release verified" in " ".join(result.output.split())
    kept = site_dir / "models" / MODEL / "1"
    assert sorted(p.name for p in kept.iterdir()) == sorted(
        [*model_trust.MODEL_FILES, "model-release.json", "approval.json", "pulled.json"]
    )
    assert json.loads((kept / "pulled.json").read_text())["pulled_by"] == SITE
    listing = runner.invoke(app, ["registry", "list"], env=account(SITE, SITE_PASSWORD, registered))
    assert listing.exit_code == 0 and "approved" in listing.output and MODEL in listing.output


@pytest.mark.slow
@pytest.mark.parametrize("altered", ["final_model.pt", "model-card.json"])
def test_a_version_altered_in_the_registry_store_is_refused(
    registered: dict, registry: dict, pki, tmp_path: Path, altered: str
):
    stored = next(registry["data_dir"].glob(f"artifacts/**/registered-model/{altered}"))
    original = stored.read_bytes()
    flip_byte(stored)
    try:
        site_dir = new_site(tmp_path / "site", pki[1], registered["ca"])
        result = runner.invoke(
            app,
            ["registry", "pull", f"{MODEL}:1", "--site-dir", str(site_dir)],
            env=account(SITE, SITE_PASSWORD, registered),
        )
    finally:
        stored.write_bytes(original)
    assert result.exit_code != 0
    assert "signature" in result.output
    assert f"{MODEL} version 1, {altered}: SHA-256" in result.output  # names the version and the file
    assert not (site_dir / "models" / MODEL).exists()  # nothing unverified is kept


@pytest.mark.slow
def test_wrong_credentials_are_refused(registered: dict, pki, tmp_path: Path):
    site_dir = new_site(tmp_path / "site", pki[1], registered["ca"])
    result = runner.invoke(
        app,
        ["registry", "pull", MODEL, "--site-dir", str(site_dir)],
        env=account(SITE, "not-the-password", registered),
    )
    assert result.exit_code != 0
    assert "refused the credentials of site-01 (HTTP 401" in result.output


@pytest.mark.slow
def test_a_site_account_cannot_register_or_promote(registered: dict, finished_run: Path, pki):
    site = account(SITE, SITE_PASSWORD, registered)
    register = runner.invoke(
        app, ["registry", "register", str(finished_run), "--name", MODEL, "--signing-key", str(pki[0])], env=site
    )
    promote = runner.invoke(app, ["registry", "promote", MODEL, "1", "--signing-key", str(pki[0])], env=site)
    for result in (register, promote):
        assert result.exit_code != 0
        assert "account site-01 is not allowed to do this (HTTP 403" in result.output
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with as_account(SITE, SITE_PASSWORD, registered):
        with pytest.raises(MlflowException, match="403"):
            MlflowClient(registered["uri"]).create_registered_model("site-made-model")
        assert [m.name for m in MlflowClient(registered["uri"]).search_registered_models()] == [MODEL]
        assert MlflowClient(registered["uri"]).search_experiments() == []  # runs are the consortium's


@pytest.mark.slow
def test_predict_segments_a_phantom_series_with_the_pulled_model(
    registered: dict, small_consortium: Path, pki, tmp_path: Path
):
    from cmr.dicom_series import scan_dicom_folder

    site_dir = new_site(tmp_path / "site", pki[1], registered["ca"])
    pulled = runner.invoke(
        app,
        ["registry", "pull", MODEL, "--site-dir", str(site_dir)],
        env=account(SITE, SITE_PASSWORD, registered),
    )
    assert pulled.exit_code == 0, pulled.output
    series_dir = sorted((small_consortium / "site-01" / "dicom").glob("*/*_LGE_SAX"))[0]  # the exam's LGE stack
    out = tmp_path / "prediction"
    result = runner.invoke(
        app, ["predict", "--site-dir", str(site_dir), "--model", MODEL, str(series_dir), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Scar burden:" in result.output

    series = scan_dicom_folder(series_dir).series[0]
    segmentation = nib.Nifti1Image.from_filename(out / "scar-segmentation.nii.gz")
    np.testing.assert_allclose(segmentation.affine, series.geometry.affine_ras(), atol=1e-4)
    labels = np.asarray(segmentation.dataobj)
    assert labels.shape == (series.shape[2], series.shape[1], series.shape[0])  # NIfTI [column, row, slice]
    assert set(np.unique(labels)) <= {0, 2, 3}
    burden = json.loads((out / "scar-burden.json").read_text())
    scar, myocardium = np.count_nonzero(labels == 3), np.count_nonzero(labels >= 2)
    expected = 100.0 * scar / myocardium if myocardium else None
    assert burden["scar_burden_percent"] == pytest.approx(expected)
    assert burden["model"]["version"] == "1"
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    flip_byte(site_dir / "models" / MODEL / "1" / "final_model.pt")  # altered at rest, after the pull
    refused = runner.invoke(
        app, ["predict", "--site-dir", str(site_dir), "--model", f"{MODEL}:1", str(series_dir), "--out", str(out)]
    )
    assert refused.exit_code != 0 and "signature" in refused.output


@pytest.mark.slow
def test_the_demo_signs_its_model_and_registers_it_when_asked(registered: dict, tmp_path: Path):
    """Last in this file: it adds version 2 of the model the tests above pulled as version 1."""
    out = tmp_path / "demo"
    result = runner.invoke(
        app,
        ["demo", "--sites", "3", "--cases-per-site", "8", "--rounds", "1", "--out", str(out), "--register"],
        env=account(ADMIN, ADMIN_PASSWORD, registered),
    )
    assert result.exit_code == 0, result.output
    assert "Registered lge-scar version 2 (alias candidate)" in result.output
    demo_key = out / "pki" / "model-signing.pub"
    verify_model_folder(out / "run", public_key(demo_key), expected_model=MODEL)  # signed in place
    site_dir = out / "sites" / "site-02"
    assert (site_dir / "trust" / "model-signing.pub").read_bytes() == demo_key.read_bytes()
    (site_dir / "trust" / "ca.pem").write_bytes(registered["ca"].read_bytes())  # as `cmrfl site init --ca` would
    pulled = runner.invoke(
        app,
        ["registry", "pull", f"{MODEL}@candidate", "--site-dir", str(site_dir)],
        env=account(SITE, SITE_PASSWORD, registered),
    )
    assert pulled.exit_code == 0, pulled.output
    card = json.loads((site_dir / "models" / MODEL / "2" / "model-card.json").read_text())
    assert sorted(card["data_fingerprints"]["case_store_indices"]) == ["site-01", "site-02", "site-03"]


def test_the_demo_refuses_to_start_when_no_registry_answers(tmp_path: Path):
    result = runner.invoke(
        app,
        ["demo", "--out", str(tmp_path / "demo"), "--register"],
        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
    )
    assert result.exit_code != 0
    assert "no registry answers at http://127.0.0.1:" in result.output
    assert not (tmp_path / "demo").exists()  # refused before any work
