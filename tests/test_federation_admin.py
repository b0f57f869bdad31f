"""Administering the federation takes the consortium admin's key; the public ca.pem is not enough.

One real SuperLink (``cmrfl server start``: TLS, SuperNode authentication, the project's
PKI) and one admitted SuperNode (``cmrfl site join``), shared by the module. Flower's own
CLI holding only ca.pem can neither list, register, unregister nor submit; with a token
the admin's key signed it can. The SuperNode runs an app only if that key signed it.
The SuperLink is never given a signing key, by ``cmrfl server start`` nor by compose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from test_deployment import _free_ports, _run_to_exit, _wait_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
INVALID_FAB = 7  # flwr.common.constant.ErrorCode.INVALID_FAB: Flower's "The FAB could not be verified"
REFUSED = "Authentication failed"  # what Flower's CLI prints for the SuperLink's 401
SIGNING_KEYS = ("ca.key", "model-signing.key", "admin.key")  # never on the SuperLink nor at a site

# A Flower App that is not the consortium's: its ServerApp asks every node one query and
# records the replies; its ClientApp leaves a marker file wherever it runs.
TINY_APP = {
    "pyproject.toml": """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "tinyapp"
version = "1.0.0"
dependencies = ["flwr"]

[tool.hatch.build.targets.wheel]
packages = ["tinyapp"]

[tool.flwr.app]
publisher = "someone-else"

[tool.flwr.app.components]
serverapp = "tinyapp.server_app:app"
clientapp = "tinyapp.client_app:app"

[tool.flwr.app.config]
result-file = ""
marker-file = ""
""",
    "tinyapp/__init__.py": "",
    "tinyapp/server_app.py": """\
import json
import time
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    deadline = time.monotonic() + 60
    nodes = list(grid.get_node_ids())
    while not nodes and time.monotonic() < deadline:
        time.sleep(1)
        nodes = list(grid.get_node_ids())
    queries = [Message(RecordDict(), dst_node_id=node, message_type="query") for node in nodes]
    replies = grid.send_and_receive(queries, timeout=60)
    found = [{"error_code": r.error.code if r.has_error() else None} for r in replies]
    Path(str(context.run_config["result-file"])).write_text(json.dumps(found))
""",
    "tinyapp/client_app.py": """\
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(message: Message, context: Context) -> Message:
    Path(str(context.run_config["marker-file"])).write_text("this app ran at the site")
    return Message(RecordDict(), reply_to=message)
""",
}


def tiny_app(folder: Path) -> Path:
    for name, text in TINY_APP.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def one_case_site(site_dir: Path) -> Path:
    """A site folder whose case store holds one case: all `cmrfl site join` asks of it here."""
    from cmr.attributes import SubgroupAttributes
    from cmr.store import CaseStore

    CaseStore(site_dir).put("case-0", np.zeros((2, 8, 8), np.float32), None, (1.0, 1.0, 1.0), SubgroupAttributes())
    return site_dir


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    from cmrfl.local_deployment import LocalFederation

    root = tmp_path_factory.mktemp("federation-admin")
    site = one_case_site(root / "sites" / "hospital-a")
    superlink_port, supernode_port = _free_ports(2)
    with LocalFederation(
        [site], root / "work", base_port=superlink_port, insecure=False, supernode_ports=[supernode_port]
    ) as running:
        _wait_for(lambda: "SuperNode ID" in running.log_text(running.supernode_name(0)), 90, "the site to be admitted")
        yield running


def flwr(federation, flwr_home: Path, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**federation.environment, "FLWR_HOME": str(flwr_home)}
    return subprocess.run([str(BIN / "flwr"), *arguments], env=environment, capture_output=True, text=True, timeout=120)


def refused(completed: subprocess.CompletedProcess) -> bool:
    return completed.returncode != 0 and REFUSED in completed.stdout + completed.stderr


def as_admin(federation, *arguments: str) -> dict:
    """Flower's CLI with the connection LocalFederation wrote: the admin's token in FLWR_HOME."""
    completed = flwr(federation, federation.flwr_home, *arguments, "--format", "json")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return json.loads(completed.stdout[completed.stdout.find("{") :])


def node_status(federation) -> dict[int, str]:
    """Node id → registered / online / offline / unregistered (unregistered nodes stay listed)."""
    return {int(node["node-id"]): node["status"] for node in as_admin(federation, "supernode", "ls", "cmrfl")["nodes"]}


def run_ids(federation) -> set[int]:
    return {run["run-id"] for run in as_admin(federation, "ls", "cmrfl")["runs"]}


@pytest.fixture
def ca_only(federation, tmp_path: Path) -> Path:
    """FLWR_HOME as anyone holding the consortium's public ca.pem can write it."""
    from server.flwr_connection import write_flwr_home

    home = tmp_path / "ca-only"
    write_flwr_home(home, federation.superlink_address, federation.ca_cert)
    return home


@pytest.fixture
def admin_home(federation, tmp_path: Path) -> Path:
    """FLWR_HOME as the admin writes it with `cmrfl server login` (a token the admin key signed)."""
    home = tmp_path / "admin"
    returncode, output = _run_to_exit(
        [
            *(str(BIN / "cmrfl"), "server", "login", "--pki", str(federation.pki_dir)),
            *("--superlink", federation.superlink_address, "--flwr-home", str(home)),
        ],
        federation.environment,
        tmp_path / "login.log",
    )
    assert returncode == 0, output
    return home


def new_supernode_key(folder: Path) -> Path:
    key = ec.generate_private_key(ec.SECP384R1())
    path = folder / "supernode.pub"
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return path


# --- the Control API answers the admin only ------------------------------------------------


def test_listing_runs_with_only_the_ca_is_refused(federation, ca_only: Path):
    assert refused(flwr(federation, ca_only, "ls", "cmrfl"))


def test_listing_supernodes_with_only_the_ca_is_refused(federation, ca_only: Path):
    assert refused(flwr(federation, ca_only, "supernode", "ls", "cmrfl"))


def test_registering_a_supernode_with_only_the_ca_is_refused(federation, ca_only: Path, tmp_path: Path):
    before = node_status(federation)
    assert refused(flwr(federation, ca_only, "supernode", "register", str(new_supernode_key(tmp_path)), "cmrfl"))
    assert node_status(federation).keys() == before.keys()


def test_cmrfl_register_site_with_only_the_ca_is_refused(federation, tmp_path: Path):
    ca_folder = tmp_path / "ca-only"
    for where in (ca_folder / "ca.pem", ca_folder / "public" / "ca.pem"):  # as the finding had it, and as sites have it
        where.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(federation.ca_cert, where)
    before = node_status(federation)
    returncode, output = _run_to_exit(
        [
            str(BIN / "cmrfl"),
            *("server", "register-site", str(new_supernode_key(tmp_path))),
            *("--pki", str(ca_folder), "--superlink", federation.superlink_address),
        ],
        federation.environment,
        tmp_path / "register-site.log",
    )
    assert returncode != 0, output
    assert "admin.key: missing" in output
    assert node_status(federation).keys() == before.keys()


def test_unregistering_a_site_with_only_the_ca_is_refused(federation, ca_only: Path):
    site_node = federation.node_ids["hospital-a"]
    assert refused(flwr(federation, ca_only, "supernode", "unregister", site_node, "cmrfl"))
    assert node_status(federation)[int(site_node)] == "online"


def test_submitting_a_run_with_only_the_ca_is_refused(federation, ca_only: Path, tmp_path: Path):
    before = run_ids(federation)
    assert refused(flwr(federation, ca_only, "run", str(tiny_app(tmp_path / "app")), "cmrfl"))
    assert run_ids(federation) == before


@pytest.mark.parametrize("token", ["another consortium's admin key", "expired"])
def test_a_token_from_another_key_or_past_its_time_is_refused(federation, ca_only: Path, tmp_path: Path, token: str):
    from server.admin_token import mint_admin_token
    from server.flwr_connection import store_admin_token
    from server.pki import init_pki

    if token == "expired":
        minted = mint_admin_token(federation.admin_key, lifetime_s=60, now=time.time() - 3600)
    else:
        minted = mint_admin_token(init_pki(tmp_path / "other-pki", []).admin_key)
    store_admin_token(ca_only, federation.superlink_address, minted)
    assert refused(flwr(federation, ca_only, "ls", "cmrfl"))


def test_the_admin_registers_lists_and_unregisters_a_site(federation, admin_home: Path, tmp_path: Path):
    returncode, output = _run_to_exit(
        [
            str(BIN / "cmrfl"),
            *("server", "register-site", str(new_supernode_key(tmp_path))),
            *("--pki", str(federation.pki_dir), "--superlink", federation.superlink_address),
        ],
        federation.environment,
        tmp_path / "register-site.log",
    )
    assert returncode == 0, output
    node_id = int(output.split("as SuperNode ")[1].split()[0])
    listed = flwr(federation, admin_home, "supernode", "ls", "cmrfl", "--format", "json")
    assert listed.returncode == 0 and f'"node-id": "{node_id}"' in listed.stdout, listed.stdout + listed.stderr
    unregistered = flwr(federation, admin_home, "supernode", "unregister", str(node_id), "cmrfl")
    assert unregistered.returncode == 0, unregistered.stdout + unregistered.stderr
    assert node_status(federation)[node_id] == "unregistered"


def test_the_admin_lists_runs(federation, admin_home: Path):
    listed = flwr(federation, admin_home, "ls", "cmrfl", "--format", "json")
    assert listed.returncode == 0 and '"runs"' in listed.stdout, listed.stdout + listed.stderr


# --- the SuperNode runs only apps the admin signed -----------------------------------------


def submit_as_admin(federation, app_dir: Path, tmp_path: Path) -> tuple[list[dict], bool]:
    """Submit APP_DIR with the admin's token, to its end; (the ServerApp's replies, whether the app ran at the site)."""
    result, marker = tmp_path / "replies.json", tmp_path / "ran-at-the-site"
    command = [str(BIN / "flwr"), "run", str(app_dir), "cmrfl", "--stream"]
    command += ["--run-config", f"result-file='{result}' marker-file='{marker}'"]
    returncode, output = _run_to_exit(command, federation.environment, tmp_path / "run.log", timeout_s=150)
    assert returncode == 0 and result.is_file(), output + federation.log_text(federation.supernode_name(0))[-3000:]
    return json.loads(result.read_text()), marker.exists()


def test_the_supernode_runs_an_app_the_admin_signed(federation, tmp_path: Path):
    from cmrfl.app_signature import sign_app

    app_dir = tiny_app(tmp_path / "app")
    sign_app(app_dir, federation.admin_key)
    replies, ran = submit_as_admin(federation, app_dir, tmp_path)
    assert replies == [{"error_code": None}] and ran


@pytest.mark.parametrize("signer", ["nobody", "another consortium's admin key"])
def test_the_supernode_refuses_an_app_the_admin_did_not_sign(federation, tmp_path: Path, signer: str):
    from cmrfl.app_signature import sign_app
    from server.pki import init_pki

    app_dir = tiny_app(tmp_path / "app")
    if signer != "nobody":
        sign_app(app_dir, init_pki(tmp_path / "other-pki", []).admin_key)
    log_before = len(federation.log_text(federation.supernode_name(0)))
    replies, ran = submit_as_admin(federation, app_dir, tmp_path)
    assert replies == [{"error_code": INVALID_FAB}] and not ran
    assert "is not the consortium's" in federation.log_text(federation.supernode_name(0))[log_before:]


def test_a_file_changed_after_signing_breaks_the_app_signature(tmp_path: Path):
    from flwr.cli.build import build_fab_from_disk

    from cmrfl.admin_key import load_admin_public_key
    from cmrfl.app_signature import AppSignatureError, sign_app, verify_fab
    from server.pki import init_pki

    pki = init_pki(tmp_path / "pki", [])
    app_dir = tiny_app(tmp_path / "app")
    sign_app(app_dir, pki.admin_key)
    admin = load_admin_public_key(pki.admin_pub)
    verify_fab(build_fab_from_disk(app_dir), admin)
    with (app_dir / "tinyapp" / "client_app.py").open("a") as source:
        source.write("import os  # one more line\n")
    with pytest.raises(AppSignatureError, match="does not verify"):
        verify_fab(build_fab_from_disk(app_dir), admin)


# --- the SuperLink holds no signing key ----------------------------------------------------


def start_server(pki_folder: Path, tmp_path: Path) -> tuple[int, str]:
    (port,) = _free_ports(1)
    command = [str(BIN / "cmrfl"), "server", "start", "--pki", str(pki_folder), "--state-dir", str(tmp_path / "state")]
    return _run_to_exit(
        [*command, "--host", "127.0.0.1", "--port", str(port)], dict(os.environ), tmp_path / "server.log", 20
    )


@pytest.mark.parametrize("secret", SIGNING_KEYS)
def test_server_start_refuses_a_pki_folder_holding_a_signing_key(tmp_path: Path, secret: str):
    from server.pki import init_pki

    written = init_pki(tmp_path / "pki", []).directory
    given = tmp_path / "given"  # what the SuperLink needs, plus one signing key
    given.mkdir()
    for name in ("ca.pem", "superlink.pem", "superlink.key", "admin.pub", secret):
        for found in sorted(written.rglob(name))[:1]:
            shutil.copy(found, given / name)
    returncode, output = start_server(given, tmp_path)
    assert returncode == 2, output
    assert f"given/{secret}: a signing key must never be on the SuperLink" in output


def test_server_start_refuses_the_whole_pki_folder(tmp_path: Path):
    from server.pki import init_pki

    pki = init_pki(tmp_path / "pki", [])
    returncode, output = start_server(pki.directory, tmp_path)
    assert returncode == 2 and "secret/" in output and "must never be on the SuperLink" in output, output


def test_compose_gives_the_superlink_and_the_sites_no_signing_key(tmp_path: Path):
    """Each volume the `pki` service writes holds one folder of `cmrfl pki init`'s output;
    only the admin's one-shots (pki, admit, train) may mount one with a signing key."""
    from server.pki import init_pki

    services = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    script = "\n".join(services["pki"]["command"])
    out = script.split("cmrfl pki init --out ")[1].split()[0]
    pki_root = tmp_path / "pki"
    init_pki(pki_root, ["superlink"])
    folder_of_volume = {}
    for mount in services["pki"]["volumes"]:
        volume, target = mount.split(":")[:2]
        if Path(target).is_relative_to(out):
            folder_of_volume[volume] = pki_root / Path(target).relative_to(out)
    with_secrets = set()
    for name, service in services.items():
        for mount in service.get("volumes", []):
            folder = folder_of_volume.get(mount.split(":")[0])
            if folder is not None and any(any(folder.rglob(secret)) for secret in SIGNING_KEYS):
                with_secrets.add(name)
    assert with_secrets <= {"pki", "admit", "train"}, f"signing keys mounted into {sorted(with_secrets)}"
    superlink = services["superlink"]
    pki_mounts = [m for m in superlink["volumes"] if m.split(":")[0] in folder_of_volume]
    assert len(pki_mounts) == 1 and pki_mounts[0].endswith(":ro")
    assert superlink["command"][superlink["command"].index("--pki") + 1] == pki_mounts[0].split(":")[1]
