"""A registry, or anything on the way to a site, cannot make the site write, keep or use what was never signed.

Issue 21, item 2. The pull tests talk to a stub that answers MLflow's three routes a pull
uses the way a compromised registry could, over TLS with a certificate from the
consortium CA (or a rogue one); one test runs the real registry process. Releases and
approvals are signed here as docs/registry.md specifies them, independently of the
server code, so the tests pin the wire format as well as the behaviour.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from cmrfl.cli import app
from server.pki import make_ca, make_server_certificate
from server.registry.signing import file_sha256, sign_model_files

MODEL = "lge-scar"
SITE_ACCOUNT = {"MLFLOW_TRACKING_USERNAME": "site-01", "MLFLOW_TRACKING_PASSWORD": "site-01-password"}
SMALL_NETWORK = {"channels": [4, 8], "num_res_units": 0}  # the LGE task's network, small enough to run at once
runner = CliRunner()


# ---------------------------------------------------------------- the consortium's keys and what it signs


@dataclass(frozen=True)
class Authority:
    """A certificate authority and the TLS certificate it issued for 127.0.0.1."""

    ca_pem: Path
    server_cert: Path
    server_key: Path


def make_authority(folder: Path) -> Authority:
    folder.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = make_ca(now)
    server_key, server_cert = make_server_certificate(ca_key, ca_cert, [], now)
    paths = Authority(folder / "ca.pem", folder / "registry.pem", folder / "registry.key")
    paths.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_key.write_bytes(pem_private(server_key))
    return paths


def pem_private(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def signed_record(record: dict, key: Ed25519PrivateKey) -> str:
    """docs/registry.md: Ed25519 over the record's canonical JSON (sorted keys, no spaces, ASCII)."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    raw_public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return json.dumps(
        {
            "record": record,
            "algorithm": "Ed25519",
            "signer_public_key_sha256": hashlib.sha256(raw_public).hexdigest(),
            "signature_base64": base64.b64encode(key.sign(canonical)).decode("ascii"),
        },
        indent=2,
    )


def approval(key: Ed25519PrivateKey, folder: Path, model: str, version: str, approved_utc: str) -> str:
    return signed_record(
        {
            "format": "cmrfl-model-approval/1",
            "model": model,
            "version": version,
            "stage": "approved",
            "weights_sha256": file_sha256(folder / "final_model.pt"),
            "approved_utc": approved_utc,
            "approved_by": "admin",
        },
        key,
    )


def signed_version(key: Ed25519PrivateKey, folder: Path, model: str, version: str, weights: bytes) -> Path:
    """A version's files as registration signs them: weights, card, card text, signature, release record."""
    folder.mkdir(parents=True)
    (folder / "final_model.pt").write_bytes(weights)
    weights_sha256 = file_sha256(folder / "final_model.pt")
    card = {
        "model_name": model,
        "task": {"name": "lge"},
        "network": SMALL_NETWORK,
        "weights": {"sha256": weights_sha256},
    }
    (folder / "model-card.json").write_text(json.dumps(card))
    (folder / "model-card.md").write_text(f"# Model card: {model}\n")
    sign_model_files(folder, key)
    release = {
        "format": "cmrfl-model-release/1",
        "model": model,
        "version": version,
        "weights_sha256": weights_sha256,
        "card_sha256": file_sha256(folder / "model-card.json"),
        "card_markdown_sha256": file_sha256(folder / "model-card.md"),
        "registered_utc": "2026-01-01T00:00:00+00:00",
    }
    (folder / "model-release.json").write_text(signed_record(release, key) + "\n")
    return folder


@dataclass(frozen=True)
class Consortium:
    authority: Authority
    signing_key: Ed25519PrivateKey
    root: Path

    def version(self, model: str, version: str, weights: bytes | None = None) -> Path:
        data = weights if weights is not None else np.random.default_rng(int(version)).bytes(2048)
        return signed_version(self.signing_key, self.root / "versions" / f"{model}-{version}", model, version, data)


@pytest.fixture
def consortium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Consortium:
    authority = make_authority(tmp_path / "pki")
    # MLflow's own setting, as an operator might have it: trusting this CA. The pinned CA must win.
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(authority.ca_pem))
    for name, value in SITE_ACCOUNT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Consortium(authority, Ed25519PrivateKey.generate(), tmp_path)


def new_site(consortium: Consortium, root: Path) -> Path:
    """A site folder as `cmrfl site init` leaves it: the consortium CA and model-signing key pinned."""
    (root / "trust").mkdir(parents=True)
    (root / "trust" / "ca.pem").write_bytes(consortium.authority.ca_pem.read_bytes())
    (root / "trust" / "model-signing.pub").write_bytes(
        consortium.signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return root


@pytest.fixture
def site(consortium: Consortium, tmp_path: Path) -> Path:
    return new_site(consortium, tmp_path / "site")


# ---------------------------------------------------------------- a registry that answers what a test says


@dataclass
class ServedVersion:
    folder: Path  # the files served under the asked name and version
    tags: dict[str, str] = field(default_factory=dict)


class StubRegistry:
    """MLflow's three routes a pull uses: alias, model version, model-version artifact."""

    def __init__(self, authority: Authority | None) -> None:
        self.aliases: dict[tuple[str, str], str] = {}
        self.versions: dict[tuple[str, str], ServedVersion] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        if authority is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(authority.server_cert, authority.server_key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if authority is not None else "http"
        self.uri = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, name: str, version: str, folder: Path, **tags: str) -> None:
        self.versions[(name, version)] = ServedVersion(folder, dict(tags))

    def _answer(self, name: str, version: str) -> tuple[int, bytes]:
        served = self.versions.get((name, version))
        if served is None:
            return 404, json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such version"}).encode()
        tags = [{"key": key, "value": value} for key, value in served.tags.items()]
        answer = {"name": name, "version": version, "status": "READY", "creation_timestamp": 0, "tags": tags}
        return 200, json.dumps({"model_version": answer}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
                name = query.get("name", "")
                if url.path == "/api/2.0/mlflow/registered-models/alias":
                    version = stub.aliases.get((name, query.get("alias", "")))
                    status, body = stub._answer(name, version) if version is not None else (404, b"{}")
                elif url.path == "/api/2.0/mlflow/model-versions/get":
                    status, body = stub._answer(name, query.get("version", ""))
                elif url.path == "/model-versions/get-artifact":
                    served = stub.versions.get((name, query.get("version", "")))
                    path = served.folder / query.get("path", "") if served else None
                    status, body = (200, path.read_bytes()) if path and path.is_file() else (404, b"not found")
                else:
                    status, body = 404, b"{}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry(consortium: Consortium) -> Iterator[StubRegistry]:
    stub = StubRegistry(consortium.authority)
    yield stub
    stub.close()


def pull(site: Path, reference: str, registry: StubRegistry, *options: str):
    return runner.invoke(
        app, ["registry", "pull", reference, "--site-dir", str(site), "--tracking-uri", registry.uri, *options]
    )


def kept_versions(site: Path) -> list[str]:
    folder = site / "models" / MODEL
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- versions are numbers, destinations stay in the site


@pytest.mark.parametrize("answered", ["../../x", "../../../victim", "1e3", "0", "05", "-1", "5 "])
def test_a_version_that_is_not_a_plain_positive_integer_is_refused_and_nothing_is_written(
    consortium: Consortium, site: Path, registry: StubRegistry, tmp_path: Path, answered: str
):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("not the registry's to delete")
    registry.aliases[(MODEL, "approved")] = answered
    folder = consortium.version(MODEL, "5")
    registry.serve(
        MODEL,
        answered,
        folder,
        **{"cmrfl.approval": approval(consortium.signing_key, folder, MODEL, "5", "2026-01-02T00:00:00+00:00")},
    )

    result = pull(site, MODEL, registry)

    assert result.exit_code != 0
    assert registry.uri in result.output and repr(answered) in result.output  # names the registry and the value
    assert "positive integer" in result.output
    assert (victim / "keep.txt").read_text() == "not the registry's to delete"
    assert sorted(p.name for p in site.iterdir()) == ["trust"]  # nothing written anywhere in the site


@pytest.mark.parametrize("linked", ["version folder", "model folder"])
def test_a_model_folder_linked_outside_the_site_is_refused_and_nothing_is_deleted(
    consortium: Consortium, site: Path, registry: StubRegistry, tmp_path: Path, linked: str
):
    outside = tmp_path / "outside"
    (outside / "5").mkdir(parents=True)
    (outside / "5" / "keep.txt").write_text("kept")
    (site / "models" / MODEL).mkdir(parents=True)
    if linked == "version folder":
        (site / "models" / MODEL / "5").symlink_to(outside / "5", target_is_directory=True)
    else:
        (site / "models" / MODEL).rmdir()
        (site / "models" / MODEL).symlink_to(outside, target_is_directory=True)
    registry.serve(MODEL, "5", consortium.version(MODEL, "5"))

    result = pull(site, f"{MODEL}:5", registry)

    assert result.exit_code != 0
    assert "outside" in result.output and str(site / "models") in one_line(result.output)
    assert sorted(p.name for p in (outside / "5").iterdir()) == ["keep.txt"]
    assert (site / "models" / MODEL / ("5" if linked == "version folder" else "")).is_symlink()


# ---------------------------------------------------------------- the signed bytes name the model and the version


@pytest.mark.parametrize(("signed_model", "signed_version"), [(MODEL, "3"), ("other-model", "5")])
def test_signed_files_of_another_version_or_model_are_refused(
    consortium: Consortium, site: Path, registry: StubRegistry, signed_model: str, signed_version: str
):
    registry.serve(MODEL, "5", consortium.version(signed_model, signed_version))  # genuine, but not lge-scar 5

    result = pull(site, f"{MODEL}:5", registry)

    assert result.exit_code != 0
    assert "signature" in result.output
    assert (f"version {signed_version!r}" if signed_model == MODEL else repr(signed_model)) in result.output
    assert kept_versions(site) == []


# ---------------------------------------------------------------- approval is a signed record, not an alias


def forged_approvals(consortium: Consortium, folder: Path) -> dict[str, dict[str, str]]:
    genuine_for_4 = approval(consortium.signing_key, folder, MODEL, "4", "2026-01-02T00:00:00+00:00")
    altered = json.loads(approval(consortium.signing_key, folder, MODEL, "5", "2026-01-02T00:00:00+00:00"))
    altered["record"]["approved_by"] = "someone else"
    return {
        "alias only": {},
        "another key": {
            "cmrfl.approval": approval(Ed25519PrivateKey.generate(), folder, MODEL, "5", "2026-01-02T00:00:00+00:00")
        },
        "another version's approval": {"cmrfl.approval": genuine_for_4},
        "altered after signing": {"cmrfl.approval": json.dumps(altered)},
        "not a record": {"cmrfl.approval": "approved"},
    }


@pytest.mark.parametrize(
    "forgery", ["alias only", "another key", "another version's approval", "altered after signing", "not a record"]
)
def test_an_approval_the_consortium_did_not_sign_is_refused(
    consortium: Consortium, site: Path, registry: StubRegistry, forgery: str
):
    folder = consortium.version(MODEL, "5")
    registry.aliases[(MODEL, "approved")] = "5"
    registry.serve(MODEL, "5", folder, **forged_approvals(consortium, folder)[forgery])

    result = pull(site, MODEL, registry)

    assert result.exit_code != 0
    assert "approv" in result.output and "sign" in result.output
    assert kept_versions(site) == []


def test_a_signed_approval_is_verified_and_kept_beside_the_version(
    consortium: Consortium, site: Path, registry: StubRegistry
):
    folder = consortium.version(MODEL, "5")
    registry.aliases[(MODEL, "approved")] = "5"
    signed = approval(consortium.signing_key, folder, MODEL, "5", "2026-01-02T00:00:00+00:00")
    registry.serve(MODEL, "5", folder, **{"cmrfl.approval": signed})

    result = pull(site, MODEL, registry)

    assert result.exit_code == 0, result.output
    assert "approved by admin" in one_line(result.output)
    kept = site / "models" / MODEL / "5"
    assert json.loads((kept / "approval.json").read_text()) == json.loads(signed)
    assert (kept / "model-release.json").read_bytes() == (folder / "model-release.json").read_bytes()


# ---------------------------------------------------------------- TLS against the pinned CA; plain HTTP only when asked


def test_a_registry_certificate_not_issued_by_the_pinned_ca_is_refused(
    consortium: Consortium, site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rogue = make_authority(tmp_path / "rogue-pki")
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(rogue.ca_pem))  # MLflow told to trust it; the site not
    impostor = StubRegistry(rogue)
    try:
        impostor.serve(MODEL, "5", consortium.version(MODEL, "5"))
        result = pull(site, f"{MODEL}:5", impostor)
    finally:
        impostor.close()
    assert result.exit_code != 0
    assert "certificate" in result.output and str(site / "trust" / "ca.pem") in one_line(result.output)
    assert kept_versions(site) == []


def test_plain_http_is_refused_unless_the_site_asks_for_it_loudly(consortium: Consortium, site: Path):
    plain = StubRegistry(None)
    try:
        plain.serve(MODEL, "5", consortium.version(MODEL, "5"))
        refused = pull(site, f"{MODEL}:5", plain)
        assert kept_versions(site) == []
        allowed = pull(site, f"{MODEL}:5", plain, "--insecure-http")
    finally:
        plain.close()
    assert refused.exit_code != 0
    assert plain.uri in refused.output and "--insecure-http" in refused.output
    assert allowed.exit_code == 0, allowed.output
    assert "WARNING" in allowed.output and "plain HTTP" in one_line(allowed.output)
    assert kept_versions(site) == ["5"]


# ---------------------------------------------------------------- predict uses the approved version


@pytest.fixture(scope="module")
def lge_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic patient's LGE short-axis stack (the phantom; under a second)."""
    from cmr.phantom import generate_consortium
    from tasks import get_task

    hospitals = tmp_path_factory.mktemp("hospitals")
    generate_consortium(hospitals, 1, 1, 3)
    recipe = get_task("lge").demo
    assert recipe is not None
    return min((hospitals / "site-01" / "dicom").glob(recipe.example_series))


def network_weights(seed: int) -> bytes:
    from io import BytesIO

    from tasks import get_task

    torch.manual_seed(seed)
    buffer = BytesIO()
    torch.save(
        {"task": "lge", "state_dict": get_task("lge").with_network(SMALL_NETWORK).build_model().state_dict()}, buffer
    )
    return buffer.getvalue()


def pulled_version(
    consortium: Consortium, site: Path, version: str, approved_utc: str | None, forged: bool = False
) -> Path:
    """A version as a pull leaves it: signed files, release record, pull record and, if approved, the approval."""
    folder = signed_version(
        consortium.signing_key, site / "models" / MODEL / version, MODEL, version, network_weights(int(version))
    )
    (folder / "pulled.json").write_text(json.dumps({"model": MODEL, "version": version}))
    if approved_utc is not None:
        key = Ed25519PrivateKey.generate() if forged else consortium.signing_key
        (folder / "approval.json").write_text(approval(key, folder, MODEL, version, approved_utc))
    return folder


def predict(site: Path, series: Path, out: Path, *model: str):
    return runner.invoke(
        app, ["predict", "--site-dir", str(site), *model, str(series), "--out", str(out), "--device", "cpu"]
    )


@pytest.mark.parametrize("newer", ["no approval", "a forged approval"])
def test_predict_uses_the_approved_version_over_a_higher_unapproved_one(
    consortium: Consortium, site: Path, lge_series: Path, tmp_path: Path, newer: str
):
    pulled_version(consortium, site, "1", approved_utc="2026-01-02T00:00:00+00:00")
    pulled_version(
        consortium, site, "2", approved_utc="2026-02-01T00:00:00+00:00" if newer != "no approval" else None, forged=True
    )

    result = predict(site, lge_series, tmp_path / "out", "--model", MODEL)

    assert result.exit_code == 0, result.output
    assert "WARNING" not in result.output
    used = json.loads((tmp_path / "out" / "scar-burden.json").read_text())["model"]
    assert used["version"] == "1" and used["approved"] is True


@pytest.mark.parametrize("asked", [["--model", MODEL, "--version", "2"], ["--model", f"{MODEL}:2"]])
def test_predict_warns_before_it_uses_an_unapproved_version(
    consortium: Consortium, site: Path, lge_series: Path, tmp_path: Path, asked: list[str]
):
    pulled_version(consortium, site, "1", approved_utc="2026-01-02T00:00:00+00:00")
    pulled_version(consortium, site, "2", approved_utc=None)

    result = predict(site, lge_series, tmp_path / "out", *asked)

    assert result.exit_code == 0, result.output
    assert "WARNING" in result.output and "not approved" in one_line(result.output)
    assert "version 1" in one_line(result.output)  # and says which one is
    used = json.loads((tmp_path / "out" / "scar-burden.json").read_text())["model"]
    assert used["version"] == "2" and used["approved"] is False


# ---------------------------------------------------------------- the real registry, over TLS


def fake_finished_run(run_dir: Path, seed: int) -> Path:
    """What `cmrfl registry register` reads of a finished run: summary.json and the final weights."""
    run_dir.mkdir(parents=True)
    (run_dir / "final_model.pt").write_bytes(network_weights(seed))
    summary = {
        "task": "lge",
        "strategy": "fedavg",
        "rounds": 1,
        "sites": ["site-01"],
        "final": {"overall": {}, "per_site": {}},
        "rounds_detail": [],
        "run_config": {},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


@pytest.mark.slow
def test_the_real_registry_serves_a_signed_release_over_tls_and_only_a_signed_approval_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient

    from cmrfl.registry_process import admin_password, running_registry
    from server.pki import init_pki, issue_registry_certificate

    pki = init_pki(tmp_path / "pki")
    certificate, key = issue_registry_certificate(pki.directory, [])
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert x509.load_pem_x509_certificate(certificate.read_bytes()).issuer == ca.subject
    signing_key = serialization.load_pem_private_key(pki.path("model-signing.key").read_bytes(), None)
    assert isinstance(signing_key, Ed25519PrivateKey)
    site_dir = new_site(Consortium(Authority(pki.ca_cert, certificate, key), signing_key, tmp_path), tmp_path / "site")
    password = admin_password(tmp_path / "registry")
    signing = ["--signing-key", str(pki.path("model-signing.key"))]

    with running_registry(tmp_path / "registry", password, tls=(certificate, key)) as uri:
        assert uri.startswith("https://127.0.0.1:")
        admin = {
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": password,
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(pki.ca_cert),
        }
        run_dir = fake_finished_run(tmp_path / "run", seed=1)
        registered = runner.invoke(app, ["registry", "register", str(run_dir), "--name", MODEL, *signing], env=admin)
        added = runner.invoke(
            app, ["registry", "add-site-user", "site-01"], env=admin | {"CMRFL_SITE_PASSWORD": "site-01-password"}
        )
        # Someone with the registry's admin password, but not the signing key, sets the alias.
        with monkeypatch.context() as patch:
            for name, value in admin.items():
                patch.setenv(name, value)
            MlflowClient(uri).set_registered_model_alias(MODEL, "approved", "1")
        site = {**SITE_ACCOUNT, "MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_SERVER_CERT_PATH": None}
        alias_only = runner.invoke(app, ["registry", "pull", MODEL, "--site-dir", str(site_dir)], env=site)
        promoted = runner.invoke(app, ["registry", "promote", MODEL, "1", *signing], env=admin)
        approved = runner.invoke(app, ["registry", "pull", MODEL, "--site-dir", str(site_dir)], env=site)

    for result in (registered, added, promoted, approved):
        assert result.exit_code == 0, result.output
    assert alias_only.exit_code != 0 and "no signed approval" in one_line(alias_only.output)
    kept = site_dir / "models" / MODEL / "1"
    release = json.loads((kept / "model-release.json").read_text())["record"]
    assert (release["model"], release["version"]) == (MODEL, "1")
    assert json.loads((kept / "approval.json").read_text())["record"]["approved_by"] == "admin"
