"""Deployment: the consortium PKI, site installation, and a real federation on loopback
(Flower's SuperLink and SuperNodes over TLS with SuperNode authentication)."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from server.pki import PRIVATE_KEYS, PkiError, init_pki

# --- PKI -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "consortium"
    init_pki(directory, ["superlink.consortium.example", "10.20.30.40"])
    return directory


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_superlink_certificate_names_loopback_and_every_given_host(pki_dir: Path):
    names = (
        _certificate(pki_dir / "superlink" / "superlink.pem")
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "superlink.consortium.example"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.20.30.40"),
    }


def test_superlink_certificate_chains_to_the_consortium_ca(pki_dir: Path):
    ca, server = _certificate(pki_dir / "public" / "ca.pem"), _certificate(pki_dir / "superlink" / "superlink.pem")
    assert server.issuer == ca.subject
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer is wrong
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    other_ca = _certificate(init_pki(pki_dir.parent / "other", []).ca_cert)
    with pytest.raises((ValueError, InvalidSignature)):
        server.verify_directly_issued_by(other_ca)


def test_private_keys_are_owner_only_and_public_files_are_not_secret(pki_dir: Path):
    for name in PRIVATE_KEYS:
        assert stat.S_IMODE((pki_dir / name).stat().st_mode) == 0o600, name
    for folder in ("superlink", "public"):
        for path in (pki_dir / folder).iterdir():
            assert path.name == "superlink.key" or b"PRIVATE KEY" not in path.read_bytes(), path


def test_private_keys_are_created_owner_only_even_under_a_permissive_umask(tmp_path: Path):
    previous = os.umask(0)
    try:
        files = init_pki(tmp_path / "pki", [])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(files.superlink_key.stat().st_mode) == 0o600


def test_init_refuses_to_overwrite_an_existing_pki_and_leaves_it_untouched(pki_dir: Path):
    before = (pki_dir / "secret" / "ca.key").read_bytes()
    with pytest.raises(PkiError, match=r"ca\.key already exists; refusing to overwrite"):
        init_pki(pki_dir, [])
    assert (pki_dir / "secret" / "ca.key").read_bytes() == before


def test_a_host_that_is_neither_ip_nor_dns_name_is_rejected_before_writing(tmp_path: Path):
    with pytest.raises(PkiError, match="neither an IP address nor a DNS name"):
        init_pki(tmp_path / "pki", ["bad host"])
    assert not (tmp_path / "pki").exists()


def test_model_signing_pair_signs_and_verifies_and_rejects_a_changed_model(pki_dir: Path):
    private = serialization.load_pem_private_key((pki_dir / "secret" / "model-signing.key").read_bytes(), None)
    public = serialization.load_pem_public_key((pki_dir / "public" / "model-signing.pub").read_bytes())
    assert isinstance(private, ed25519.Ed25519PrivateKey) and isinstance(public, ed25519.Ed25519PublicKey)
    model = b"weights of round 20"
    public.verify(private.sign(model), model)
    with pytest.raises(InvalidSignature):
        public.verify(private.sign(model), model + b"!")


def test_pki_init_command_prints_what_to_distribute_and_no_private_key(tmp_path: Path):
    from typer.testing import CliRunner

    from cmrfl.cli import app

    result = CliRunner().invoke(app, ["pki", "init", "--out", str(tmp_path / "pki"), "--superlink-host", "10.0.0.5"])
    assert result.exit_code == 0, result.output
    assert "what every site gets" in result.output and "model-signing.pub" in result.output
    assert "PRIVATE KEY" not in result.output
    again = CliRunner().invoke(app, ["pki", "init", "--out", str(tmp_path / "pki")])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output


# --- site installation -------------------------------------------------------------------


def _init_site_copy(source: Path, destination: Path, pki: Path, superlink: str = "127.0.0.1:9") -> Path:
    import shutil

    from client.site_init import init_site

    shutil.copytree(source, destination)
    public = pki / "public"
    init_site(
        destination, destination.name, superlink, public / "ca.pem", public / "model-signing.pub", public / "admin.pub"
    )
    return destination


def test_site_init_writes_config_owner_only_key_and_pinned_trust(
    ingested_sites: list[Path], pki_dir: Path, tmp_path: Path
):
    from client.site import load_site
    from client.site_init import load_site_federation

    site_dir = _init_site_copy(ingested_sites[0], tmp_path / "hospital-a", pki_dir, "superlink.consortium.example:9092")
    federation = load_site_federation(site_dir)
    assert federation.superlink == "superlink.consortium.example:9092"
    assert load_site(site_dir).site_id == "hospital-a"  # site.toml's name, read by the ClientApp
    assert stat.S_IMODE(federation.private_key.stat().st_mode) == 0o600
    key = serialization.load_ssh_private_key(federation.private_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert federation.public_key.read_text().startswith("ecdsa-sha2-nistp384 ")
    for name in ("ca.pem", "model-signing.pub", "admin.pub"):
        assert (site_dir / "trust" / name).read_bytes() == (pki_dir / "public" / name).read_bytes()


def test_site_init_keeps_an_existing_privacy_table_and_refuses_a_second_init(pki_dir: Path, tmp_path: Path):
    from client.site import site_privacy_budget
    from client.site_init import SiteInitError, init_site

    (tmp_path / "site.toml").write_text('name = "hospital-b"\n[privacy]\nmax-epsilon = 4.0\n')
    init_site(tmp_path, "hospital-b", "10.0.0.5:9092", pki_dir / "public" / "ca.pem")
    budget = site_privacy_budget(tmp_path)
    assert budget is not None and budget.max_epsilon == 4.0
    with pytest.raises(SiteInitError, match=r"site.toml: already has a \[federation\] table"):
        init_site(tmp_path, "hospital-b", "10.0.0.5:9092", pki_dir / "public" / "ca.pem")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"superlink": "no-port"}, "expected HOST:PORT"),
        ({"ca_cert": "superlink/superlink.pem"}, "not a CA certificate"),
        ({"model_signing_key": "public/ca.pem"}, "not a PEM public key"),
        ({"name": "two words"}, "use letters, digits"),
    ],
)
def test_site_init_rejects_bad_input_naming_it_and_writes_nothing(pki_dir: Path, tmp_path: Path, arguments, message):
    from client.site_init import SiteInitError, init_site

    settings: dict[str, Any] = {
        "name": "hospital-c",
        "superlink": "10.0.0.5:9092",
        "ca_cert": pki_dir / "public" / "ca.pem",
        "model_signing_key": None,
    }
    settings.update({k: (pki_dir / v if k in ("ca_cert", "model_signing_key") else v) for k, v in arguments.items()})
    with pytest.raises(SiteInitError, match=message):
        init_site(tmp_path, settings["name"], settings["superlink"], settings["ca_cert"], settings["model_signing_key"])
    assert list(tmp_path.iterdir()) == []


def test_site_check_reports_each_problem_with_what_to_do(ingested_sites: list[Path], pki_dir: Path, tmp_path: Path):
    from client.site_check import OK, PROBLEM, has_problems, run_site_checks

    site_dir = _init_site_copy(ingested_sites[0], tmp_path / "hospital-d", pki_dir, "127.0.0.1:1")
    (site_dir / "keys" / "supernode.key").chmod(0o644)
    (site_dir / "trust" / "model-signing.pub").unlink()
    (site_dir / "trust" / "admin.pub").write_text("not a key\n")
    results = {r.name: r for r in run_site_checks(site_dir)}
    assert has_problems(list(results.values()))
    assert results["SuperNode key"].status == PROBLEM and "chmod 600" in results["SuperNode key"].fix
    assert results["model-signing key"].status == PROBLEM and "missing" in results["model-signing key"].detail
    assert results["admin key"].status == PROBLEM and "not an Ed25519 PEM public key" in results["admin key"].detail
    assert results["SuperLink"].status == PROBLEM and "does not answer" in results["SuperLink"].detail
    assert results["case store"].status == OK and "24 cases, 8 with reference masks" in results["case store"].detail
    # what each task can learn from: the LGE stacks and the MOLLI series of the same exams
    assert results["cases by series kind"].detail == "lge-stack 8 (task lge), molli-t1 16 (task mapping)"
    assert "female" in results["cases by sex"].detail or "male" in results["cases by sex"].detail
    assert {results[p].status for p in ("flwr", "torch", "monai", "opacus", "pydicom", "python")} == {OK}


def test_site_check_without_a_case_store_says_to_ingest(pki_dir: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from client.site_init import init_site
    from cmrfl.cli import app

    init_site(
        tmp_path, "hospital-e", "127.0.0.1:1", pki_dir / "public" / "ca.pem", pki_dir / "public" / "model-signing.pub"
    )
    result = CliRunner().invoke(app, ["site", "check", "--site-dir", str(tmp_path), "--offline"])
    assert result.exit_code == 1
    assert "problem case store" in result.output and "cmrfl site ingest" in result.output


def test_join_and_server_start_say_what_is_missing_instead_of_starting_flower(tmp_path: Path):
    from typer.testing import CliRunner

    from cmrfl.cli import app

    join = CliRunner().invoke(app, ["site", "join", "--site-dir", str(tmp_path)])
    assert join.exit_code == 2 and "site.toml: not found" in join.output and "cmrfl site init" in join.output
    start = CliRunner().invoke(
        app, ["server", "start", "--pki", str(tmp_path / "pki"), "--state-dir", str(tmp_path / "state")]
    )
    assert start.exit_code == 2 and "ca.pem: missing" in start.output and "cmrfl pki init" in start.output


# --- a real federation on loopback: TLS + SuperNode authentication ----------------------

FAST_RUN = {"max-local-steps": 1, "batch-size": 4, "local-epochs": 1, "fairness-suppression-threshold": 2}


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_for(condition, timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:g} s for {what}")
        time.sleep(interval_s)


def _completed_round(run_dir: Path) -> int:
    import json

    latest = run_dir / "checkpoints" / "latest.json"
    try:
        return json.loads(latest.read_text())["server_round"]
    except (FileNotFoundError, ValueError):
        return 0


def _run_to_exit(command: list[str], environment: dict[str, str], log: Path, timeout_s: float = 120) -> tuple[int, str]:
    """Run until the process itself exits; then end its process group (Flower's helpers
    can outlive it and would hold a pipe open). Returns the exit code and its output."""
    import contextlib
    import os
    import signal
    import subprocess

    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return returncode, log.read_text(errors="replace")


@pytest.fixture(scope="module")
def federation(ingested_sites: list[Path], tmp_path_factory: pytest.TempPathFactory):
    """A SuperLink (TLS, SuperNode auth) and three admitted SuperNodes, started with cmrfl's commands."""
    import shutil

    from cmrfl.local_deployment import LocalFederation

    root = tmp_path_factory.mktemp("deployment")
    site_dirs = [Path(shutil.copytree(site, root / "sites" / site.name)) for site in ingested_sites]
    superlink_port, *supernode_ports = _free_ports(1 + len(site_dirs))
    with LocalFederation(
        site_dirs, root / "work", base_port=superlink_port, insecure=False, supernode_ports=supernode_ports
    ) as running:
        for index in range(len(site_dirs)):
            _wait_for(
                lambda index=index: "SuperNode ID" in running.log_text(running.supernode_name(index)),
                90,
                f"{site_dirs[index].name} to be admitted",
            )
        yield running


def _diagnostics(federation, completed=None) -> str:
    parts = (
        []
        if completed is None
        else [f"--- train stdout\n{completed.stdout[-3000:]}\n--- stderr\n{completed.stderr[-2000:]}"]
    )
    for name in federation.processes:
        parts.append(f"--- {name}\n{federation.log_text(name)[-2500:]}")
    return "\n".join(parts)


def _end_submission(process) -> None:
    """A submission still running after a failed check: end it with its flwr child."""
    import os
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _nan_as_null(value):
    import math

    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_as_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_as_null(v) for v in value]
    return value


def _summary(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_site_check_verifies_the_superlink_certificate_against_the_pinned_ca(federation, tmp_path: Path):
    import shutil

    from client.site_check import OK, PROBLEM, run_site_checks

    checks = {r.name: r for r in run_site_checks(federation.site_dirs[0])}
    assert checks["SuperLink"].status == OK, checks["SuperLink"]
    assert "verifies against the pinned CA" in checks["SuperLink"].detail
    impostor = tmp_path / "impostor-site"
    shutil.copytree(
        federation.site_dirs[0], impostor, ignore=shutil.ignore_patterns("store", "keys", "trust", "site.toml")
    )
    other_pki = init_pki(tmp_path / "other-pki", [])
    from client.site_init import init_site

    init_site(impostor, "impostor", federation.superlink_address, other_pki.ca_cert)
    checks = {r.name: r for r in run_site_checks(impostor)}
    assert checks["SuperLink"].status == PROBLEM
    assert "does not verify against" in checks["SuperLink"].detail


@pytest.mark.slow
def test_three_sites_train_two_rounds_with_secure_aggregation_over_tls(federation, tmp_path: Path):
    run_dir = tmp_path / "run"
    completed = federation.run(
        {
            **FAST_RUN,
            "num-server-rounds": 2,
            "secure-aggregation": True,
            "min-train-sites": 3,
            "min-available-sites": 3,
            "run-dir": str(run_dir),
            "resume": False,
        },
        timeout_s=420,
    )
    assert completed.returncode == 0, _diagnostics(federation, completed)
    assert "finished:completed" in completed.stdout
    summary = _summary(run_dir)
    site_names = sorted(d.name for d in federation.site_dirs)
    assert summary["rounds"] == 2 and summary["sites"] == site_names
    assert summary["privacy"]["secure_aggregation"]["enabled"] is True
    for entry in summary["rounds_detail"]:
        assert entry["secure_aggregation"] == {"sites": 3, "sampled": 3}
        assert entry["failures"] == []
        assert sorted(entry["evaluate"]["sites"]) == site_names
    assert summary["final"]["overall"]["cases_evaluated"] > 0
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("round-*.npz")) == ["round-0001.npz", "round-0002.npz"]


@pytest.mark.slow
def test_a_supernode_whose_key_is_not_registered_is_refused(federation, tmp_path: Path):
    import shutil

    from client.site_init import init_site

    stranger = tmp_path / "unregistered-hospital"
    shutil.copytree(federation.site_dirs[0], stranger, ignore=shutil.ignore_patterns("keys", "trust", "site.toml"))
    init_site(
        stranger,
        "unregistered-hospital",
        federation.superlink_address,
        federation.ca_cert,
        admin_public_key=federation.pki.admin_pub,
    )
    (port,) = _free_ports(1)
    returncode, output = _run_to_exit(
        [
            "cmrfl",
            "site",
            "join",
            "--site-dir",
            str(stranger),
            "--clientapp-port",
            str(port),
            "--max-retries",
            "1",
            "--max-wait-time",
            "20",
        ],
        federation.environment,
        tmp_path / "supernode.log",
    )
    assert returncode != 0
    assert "Failed to activate SuperNode" in output


@pytest.mark.slow
def test_a_client_without_the_consortium_ca_cannot_connect(federation, tmp_path: Path):
    from client.join import supernode_command
    from server.pki import init_pki as make_pki

    # A registered site's key, but no root certificate: the SuperLink's certificate is not trusted.
    command = supernode_command(
        federation.site_dirs[0], _free_ports(1)[0], ["--max-retries", "1", "--max-wait-time", "20"]
    )
    at = command.index("--root-certificates")
    del command[at : at + 2]
    returncode, output = _run_to_exit(command, federation.environment, tmp_path / "supernode.log")
    assert returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in output
    # The consortium side too: `cmrfl train` with another CA is refused before anything runs.
    other_ca = make_pki(tmp_path / "other-pki", []).ca_cert
    returncode, output = _run_to_exit(
        [
            "cmrfl",
            "train",
            "--superlink",
            federation.superlink_address,
            "--ca",
            str(other_ca),
            "--admin-key",
            str(federation.admin_key),  # the admin, but trusting another CA
            "--run-config",
            f"run-dir='{tmp_path / 'never'}'",
        ],
        federation.environment,
        tmp_path / "train.log",
    )
    assert returncode != 0, output
    assert "Successfully started run" not in output
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_a_supernode_killed_mid_round_the_run_completes_and_the_summary_names_it(federation, tmp_path: Path):
    run_dir = tmp_path / "run"
    dropped = federation.site_dirs[2].name
    dropped_process = federation.supernode_name(2)
    submission = federation.submit(
        {
            **FAST_RUN,
            "num-server-rounds": 2,
            "secure-aggregation": False,
            "min-train-sites": 2,
            "min-available-sites": 2,
            "run-dir": str(run_dir),
            "resume": False,
        }
    )
    try:
        # Round 1 with all three (the server learns which node serves which site), then the
        # site is killed once its ClientApp has round 2's training message: mid-round.
        _wait_for(lambda: _completed_round(run_dir) >= 1, 300, "round 1 to complete")
        log_before = len(federation.log_text(dropped_process))
        _wait_for(
            lambda: "Start `flwr-clientapp` process" in federation.log_text(dropped_process)[log_before:],
            120,
            f"{dropped} to start round 2",
        )
        federation.kill(dropped_process)
        stdout, stderr = submission.communicate(timeout=300)
    finally:
        _end_submission(submission)
        federation.start_supernode(2)  # the next test has all three sites again
    assert submission.returncode == 0, stdout[-3000:] + stderr[-2000:] + _diagnostics(federation)
    first, entry = _summary(run_dir)["rounds_detail"]
    assert first["failures"] == [] and len(first["train"]["sites"]) == 3
    assert sorted(entry["train"]["sites"]) == sorted(d.name for d in federation.site_dirs[:2])
    (failure,) = [f for f in entry["failures"] if f["phase"] == "train"]
    assert failure["node_id"] == int(federation.node_ids[dropped])
    assert failure["site"] == dropped
    assert "Node Unavailable" in failure["reason"]


@pytest.mark.slow
def test_superlink_killed_and_restarted_resumes_from_the_last_completed_round(federation, tmp_path: Path):
    run_dir = tmp_path / "run"
    config = {
        **FAST_RUN,
        "num-server-rounds": 2,
        "secure-aggregation": False,
        "min-train-sites": 3,
        "min-available-sites": 3,
        "run-dir": str(run_dir),
    }
    # min-available-sites=3: the ServerApp waits for all three (one was restarted by the test before)
    first = federation.submit({**config, "resume": False})
    try:
        _wait_for(lambda: _completed_round(run_dir) >= 1, 300, "round 1 to complete")
        federation.kill("superlink")  # with its ServerApp: the consortium server crashed
        first.communicate(timeout=60)
    finally:
        _end_submission(first)
    assert first.returncode != 0  # the submission saw the run fail
    assert not (run_dir / "summary.json").exists() and _completed_round(run_dir) == 1
    round_one = (run_dir / "checkpoints" / "round-0001.npz").read_bytes()
    import json

    kept = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["history"][0]

    federation.start_superlink()  # same database, same certificate
    federation.wait_for_superlink()
    completed = federation.run({**config, "resume": True}, timeout_s=420)
    assert completed.returncode == 0, _diagnostics(federation, completed)
    summary = _summary(run_dir)
    assert summary["resumed_from_round"] == 1
    assert [entry["round"] for entry in summary["rounds_detail"]] == [1, 2]
    # round 1 as completed before the crash, not retrained (summary.json writes NaN as null)
    assert summary["rounds_detail"][0] == _nan_as_null(kept)
    assert (run_dir / "checkpoints" / "round-0001.npz").read_bytes() == round_one


# --- who dropped out ---------------------------------------------------------------------


@pytest.fixture
def serverapp_identity(monkeypatch: pytest.MonkeyPatch):
    """Messages are built inside a ServerApp process, which Flower identifies by run and task."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)  # the SuperLink's node id


def test_a_failure_the_superlink_reports_for_an_offline_node_names_that_node(serverapp_identity):
    from flwr.app import Message, RecordDict
    from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

    from server.failures import failed_replies

    sent = []
    for node_id in (11, 22):
        message = Message(RecordDict(), dst_node_id=node_id, message_type="train")
        message.metadata.__dict__["_message_id"] = message.object_id  # as the grid does when pushing
        sent.append(message)
    # What Flower's SuperLink itself writes when node 22 stops sending heartbeats:
    reply = create_message_error_unavailable_res_message(sent[1].metadata, "node_unavail")
    assert reply.metadata.src_node_id != 22  # the SuperLink's own id
    (failure,) = failed_replies([reply], "train", sent=sent)
    assert failure["node_id"] == 22 and "Node Unavailable" in failure["reason"]
