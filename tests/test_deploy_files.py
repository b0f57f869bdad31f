"""deploy/ and the deployment docs, checked without a container engine or a cluster.

Every YAML file parses; the compose file's services, volumes and networks fit together
and keep the hospitals' containers unreachable; the Dockerfiles copy what exists; the
Kubernetes manifests are complete and listed; the systemd units are hardened. Every
``cmrfl …`` command line in these files and in the two deployment guides is parsed by
the real command tree (typer → click), so a renamed command or option fails here.
"""

from __future__ import annotations

import configparser
import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
import yaml

from cmrfl.cli import app

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
GUIDES = [ROOT / "docs" / "deployment-walkthrough.md", ROOT / "docs" / "hospital-installation.md"]
SITES = ("site-01", "site-02", "site-03")
_REDIRECTION = re.compile(r"^\d*[<>]")


# --- the real command tree -------------------------------------------------------------


def parse_cmrfl(argv: list[str], where: str, environment: dict[str, str] | None = None) -> click.Command:
    """Resolve ``cmrfl ARGV`` to its command and parse its options, as the CLI would.

    ``environment``: variables the command line relies on (options with an env var).
    """
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (environment or {}).items():
            patch.setenv(name, value)
        return _parse_cmrfl(argv, where)


def _parse_cmrfl(argv: list[str], where: str) -> click.Command:
    command: click.Command = typer.main.get_command(app)
    args = list(argv)
    path = ["cmrfl"]
    while isinstance(command, click.Group):
        assert args, f"{where}: 'cmrfl {' '.join(argv)}' names no command under '{' '.join(path)}'"
        name = args.pop(0)
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"{where}: '{' '.join(path)} {name}' is not a cmrfl command"
        path.append(name)
        command = sub
    try:
        command.make_context(" ".join(path), args, resilient_parsing=False)
    except click.ClickException as problem:
        pytest.fail(f"{where}: 'cmrfl {' '.join(argv)}': {problem.format_message()}")
    return command


def cmrfl_invocations(script: str) -> list[list[str]]:
    """The ``cmrfl …`` commands a shell script runs (continuations joined), as argument lists.

    A command may follow ``$(``, ``;``, ``&&``, ``||``, ``|``, variable assignments or
    ``sudo [-u USER]``; redirections and a trailing ``&`` are dropped.
    """
    invocations = []
    for line in script.replace("\\\n", " ").replace("$$", "$").splitlines():
        for segment in re.split(r"\$\(|\)|;|\|\||&&|\|", line):
            if "cmrfl" not in segment:
                continue  # e.g. a piece of `until [ "$(grep … | wc -l)" … ]`, cut mid-quote
            words = shlex.split(segment, comments=True)
            start = _command_start(words)
            if start is None:
                continue
            tokens: list[str] = []
            rest = iter(words[start + 1 :])
            for word in rest:
                if _REDIRECTION.match(word):
                    if re.fullmatch(r"\d*>>?", word):
                        next(rest, None)  # "> file": the target goes too
                elif word != "&":
                    tokens.append(word)
            invocations.append(tokens)
    return invocations


def _command_start(words: list[str]) -> int | None:
    index = 0
    while index < len(words) and re.fullmatch(r"[A-Za-z_]\w*=.*", words[index]):
        index += 1
    if index < len(words) and words[index] == "sudo":
        index += 1
        while index < len(words) and words[index].startswith("-"):
            index += 2 if words[index] in ("-u", "-g") else 1
    if index < len(words) and (words[index] == "cmrfl" or words[index].endswith("/bin/cmrfl")):
        return index
    return None


def test_the_command_parser_rejects_a_missing_command_and_an_unknown_option() -> None:
    with pytest.raises(AssertionError, match="not a cmrfl command"):
        parse_cmrfl(["site", "jion", "--site-dir", "x"], "self-test")
    with pytest.raises(pytest.fail.Exception, match="No such option"):
        parse_cmrfl(["site", "check", "--site-dir", "x", "--bogus"], "self-test")
    with pytest.raises(pytest.fail.Exception, match="Missing option '--tracking-uri'"):
        parse_cmrfl(["registry", "list"], "self-test", environment={"MLFLOW_TRACKING_URI": ""})
    parse_cmrfl(["registry", "list"], "self-test", environment={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    with pytest.raises(pytest.fail.Exception, match="Missing option"):
        parse_cmrfl(["site", "init", "--site-dir", "x", "--name", "a"], "self-test")
    assert cmrfl_invocations("out=$$(cmrfl server register-site --pki /p x.pub 2>&1); then\n") == [
        ["server", "register-site", "--pki", "/p", "x.pub"]
    ]
    assert cmrfl_invocations("cmrfl registry serve --port 5000 > registry.log 2>&1 &\n") == [
        ["registry", "serve", "--port", "5000"]
    ]
    assert cmrfl_invocations("sudo -u cmrfl /opt/cmrfl/venv/bin/cmrfl site check --site-dir /s\n") == [
        ["site", "check", "--site-dir", "/s"]
    ]
    assert cmrfl_invocations("sudo useradd --home-dir /var/lib/cmrfl --shell /bin/false cmrfl\n") == []


# --- YAML ------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def test_every_yaml_file_under_deploy_parses() -> None:
    files = yaml_files()
    assert COMPOSE in files and (KUBERNETES / "kustomization.yaml") in files
    for path in files:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, f"{path}: no YAML document"
        assert all(isinstance(d, dict) for d in documents), f"{path}: a document is not a mapping"


def test_no_private_key_is_committed_under_deploy() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert "PRIVATE KEY-----" not in path.read_text(errors="replace"), f"{path}: holds a private key"


# --- compose ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_the_consortium_and_three_sites(compose: dict) -> None:
    services = compose["services"]
    expected = {"pki", "superlink", "registry", "phantom", "admit", "train"}
    expected |= {f"{s}-setup" for s in SITES} | set(SITES)
    assert expected <= set(services), f"{COMPOSE}: missing services {sorted(expected - set(services))}"
    for site in SITES:
        after = services[site]["depends_on"]
        assert after["admit"]["condition"] == "service_completed_successfully"
        assert services["admit"]["depends_on"][f"{site}-setup"]["condition"] == "service_completed_successfully"
    assert services["admit"]["depends_on"]["superlink"]["condition"] == "service_healthy"
    assert services["superlink"]["depends_on"]["pki"]["condition"] == "service_completed_successfully"


def test_compose_builds_use_the_dockerfiles_in_deploy(compose: dict) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        assert build, f"{COMPOSE}: service {name} has no build (image {service.get('image')} would be pulled)"
        context = (COMPOSE.parent / build["context"]).resolve()
        dockerfile = context / build["dockerfile"]
        assert context == ROOT, f"{COMPOSE}: {name} builds from {context}, not the repository root"
        assert dockerfile in DOCKERFILES, f"{COMPOSE}: {name} builds {dockerfile}, which is not in deploy/docker"


def test_compose_volumes_and_networks_are_declared(compose: dict) -> None:
    volumes, networks = set(compose["volumes"]), set(compose["networks"])
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert not source.startswith((".", "/")), f"{COMPOSE}: {name} bind-mounts {source}"
            assert source in volumes, f"{COMPOSE}: {name} mounts undeclared volume {source}"
        for network in service.get("networks", []):
            assert network in networks, f"{COMPOSE}: {name} joins undeclared network {network}"
        assert service.get("networks") or service.get("network_mode") == "none", f"{COMPOSE}: {name} has no network"


def test_compose_sites_publish_nothing_and_reach_only_the_consortium(compose: dict) -> None:
    services = compose["services"]
    site_image = [n for n, s in services.items() if s["build"]["dockerfile"].endswith("site.Dockerfile")]
    assert set(SITES) <= set(site_image)
    for name in site_image:
        assert "ports" not in services[name] and "expose" not in services[name], f"{COMPOSE}: {name} publishes a port"
        mounted = {m.split(":")[0] for m in services[name].get("volumes", [])}
        assert "pki-secret" not in mounted, f"{COMPOSE}: {name} mounts the consortium's private keys"
    for number, site in enumerate(SITES, start=1):
        network = f"hospital-{number:02d}"
        assert services[site]["networks"] == [network]
        assert compose["networks"][network].get("internal") is True, f"{COMPOSE}: {network} is not internal"
        members = {n for n, s in services.items() if network in s.get("networks", [])}
        assert members == {site, "superlink", "registry"}, f"{COMPOSE}: {network} joins {sorted(members)}"
        assert services[site]["volumes"] == [f"{site}:/site"], f"{COMPOSE}: {site} sees more than its own folder"


def test_compose_registry_answers_to_its_service_name(compose: dict) -> None:
    # MLflow refuses (403) a Host header it does not know, e.g. "registry:5000" from a site.
    registry = compose["services"]["registry"]
    allowed = registry["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    port = registry["command"][registry["command"].index("--port") + 1]
    assert {"registry", f"registry:{port}"} <= set(allowed)


def _compose_cmrfl_commands(compose: dict) -> list[tuple[str, list[str]]]:
    commands = []
    for name, service in compose["services"].items():
        command = service.get("command")
        if service.get("entrypoint"):
            assert service["entrypoint"][0] == "/bin/sh", f"{COMPOSE}: {name}: unexpected entrypoint"
            found = cmrfl_invocations("\n".join(command))
            assert found, f"{COMPOSE}: {name}'s script runs no cmrfl command"
            commands += [(name, argv) for argv in found]
        else:
            assert isinstance(command, list), (
                f"{COMPOSE}: {name}: command must be a list (the image's entrypoint is cmrfl)"
            )
            commands.append((name, command))
    return commands


def test_compose_commands_are_real_cmrfl_commands(compose: dict) -> None:
    commands = _compose_cmrfl_commands(compose)
    for name, argv in commands:
        parse_cmrfl(argv, f"{COMPOSE} service {name}")
    used = {tuple(argv[:2]) for _, argv in commands}
    assert {
        ("pki", "init"),
        ("server", "start"),
        ("registry", "serve"),
        ("phantom", "--out"),
        ("site", "init"),
        ("site", "ingest"),
        ("server", "register-site"),
        ("site", "join"),
        ("train", "--superlink"),
    } <= used


# --- Dockerfiles -----------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_two_dockerfiles_server_and_site() -> None:
    assert [d.name for d in DOCKERFILES] == ["server.Dockerfile", "site.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda d: d.name)
def test_dockerfile_copies_files_that_exist_and_are_not_ignored(dockerfile: Path) -> None:
    ignored = _dockerignore()
    copies = [
        rest for keyword, rest in _instructions(dockerfile) if keyword == "COPY" and not rest.startswith("--from")
    ]
    assert copies, f"{dockerfile}: copies nothing"
    copied = set()
    for rest in copies:
        *sources, _destination = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile}: COPY {source}: not in the repository"
            for pattern in ignored:
                assert not fnmatch.fnmatch(source, pattern.lstrip("*/")), (
                    f"{dockerfile}: {source} is in .dockerignore ({pattern})"
                )
            copied.add(source)
    # Everything pyproject.toml installs (its readme included) is in the image.
    assert {"pyproject.toml", "README.md", "cmr", "tasks", "privacy", "fairness", "client", "server", "cmrfl"} <= copied


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda d: d.name)
def test_dockerfile_runs_cmrfl_as_a_non_root_user(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    arguments = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest)
    assert arguments["PYTHON_IMAGE"] == "python:3.11-slim"
    assert arguments["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{dockerfile}: runs as root"
    entrypoint = [yaml.safe_load(rest) for keyword, rest in instructions if keyword == "ENTRYPOINT"][-1]
    assert entrypoint == ["cmrfl"]
    cmd = [yaml.safe_load(rest) for keyword, rest in instructions if keyword == "CMD"][-1]
    parse_cmrfl(cmd, f"{dockerfile} CMD")
    healthchecks = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1, f"{dockerfile}: expected one HEALTHCHECK"
    probe = yaml.safe_load(healthchecks[0].split(" CMD ", 1)[1])
    if probe[0] == "cmrfl":
        parse_cmrfl(probe[1:], f"{dockerfile} HEALTHCHECK")


def test_server_healthcheck_answers_against_the_consortium_ca() -> None:
    server = DEPLOY / "docker" / "server.Dockerfile"
    healthcheck = next(rest for keyword, rest in _instructions(server) if keyword == "HEALTHCHECK")
    assert "https://localhost:9092/health" in healthcheck and "cafile='/pki/ca.pem'" in healthcheck


# --- Kubernetes ------------------------------------------------------------------------


def kubernetes_documents() -> list[tuple[Path, dict]]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def test_kubernetes_manifests_name_their_kind_and_version() -> None:
    kinds = set()
    for path, document in kubernetes_documents():
        for key in ("apiVersion", "kind"):
            assert document.get(key), f"{path}: a document has no {key}"
        assert document.get("metadata", {}).get("name"), f"{path}: a {document['kind']} has no metadata.name"
        kinds.add(document["kind"])
    assert {"Namespace", "StatefulSet", "Deployment", "Service", "PersistentVolumeClaim", "NetworkPolicy"} <= kinds


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    for resource in listed:
        assert (KUBERNETES / resource).is_file(), f"{KUBERNETES / 'kustomization.yaml'}: {resource} does not exist"
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def test_kubernetes_superlink_keeps_its_database_and_takes_tls_from_a_secret() -> None:
    documents = {(d["kind"], d["metadata"]["name"]): d for _, d in kubernetes_documents()}
    superlink = documents[("StatefulSet", "cmrfl-superlink")]["spec"]
    container = superlink["template"]["spec"]["containers"][0]
    parse_cmrfl(container["args"], "kubernetes StatefulSet cmrfl-superlink")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    state_dir = container["args"][container["args"].index("--state-dir") + 1]
    assert mounts["state"] == state_dir and superlink["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    tls = next(v for v in superlink["template"]["spec"]["volumes"] if v["name"] == "tls")["secret"]
    assert {item["key"] for item in tls["items"]} == {"ca.pem", "superlink.pem", "superlink.key", "admin.pub"}
    port = int(container["args"][container["args"].index("--port") + 1])
    service = documents[("Service", "cmrfl-superlink")]["spec"]
    assert [p["port"] for p in service["ports"]] == [port]
    registry = documents[("Deployment", "cmrfl-registry")]["spec"]["template"]["spec"]
    parse_cmrfl(registry["containers"][0]["args"], "kubernetes Deployment cmrfl-registry")
    environment = {e["name"]: e.get("value") for e in registry["containers"][0]["env"]}
    assert "cmrfl-registry:5000" in environment["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    claim = next(v for v in registry["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in documents
    assert ("NetworkPolicy", "default-deny-ingress") in documents


# --- systemd ---------------------------------------------------------------------------


class _UnitParser(configparser.ConfigParser):
    def optionxform(self, optionstr: str) -> str:
        return optionstr  # systemd keys are case-sensitive


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = _UnitParser(strict=False, interpolation=None)
    unit.read_string(path.read_text(), source=str(path))
    return unit


def _exec_argv(line: str, site: str = "hospital-a") -> list[str]:
    line = line.replace("%S", "/var/lib").replace("%C", "/var/cache").replace("%i", site)
    line = line.replace("$CMRFL_JOIN_ARGS", "--clientapp-port 9094").replace("${CMRFL_REGISTRY_MODEL}", "lge-scar")
    argv = shlex.split(line)
    assert argv[0] == "/opt/cmrfl/venv/bin/cmrfl", f"unexpected executable {argv[0]}"
    return argv[1:]


def site_env_example() -> dict[str, str]:
    example = SYSTEMD / "cmrfl-site.env.example"
    return dict(line.split("=", 1) for line in example.read_text().splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize("name", ["cmrfl-supernode@.service", "cmrfl-registry-pull@.service"])
def test_systemd_service_is_hardened_and_runs_cmrfl(name: str) -> None:
    path = SYSTEMD / name
    service = read_unit(path)["Service"]
    assert service["User"] == "cmrfl"
    for key, value in {
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service.get(key) == value, f"{path}: expected {key}={value}"
    assert "%S/cmrfl/%i" in service["ReadWritePaths"].split()
    for key in ("ExecStartPre", "ExecStart"):
        if key in service:
            argv = _exec_argv(service[key])
            parse_cmrfl(argv, f"{path} {key}", environment=site_env_example())
            assert argv[argv.index("--site-dir") + 1] == "/var/lib/cmrfl/hospital-a"


def test_supernode_unit_restarts_and_checks_the_site_first() -> None:
    unit = read_unit(SYSTEMD / "cmrfl-supernode@.service")
    assert unit["Service"]["Restart"] == "on-failure" and unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert _exec_argv(unit["Service"]["ExecStart"])[:2] == ["site", "join"]
    assert _exec_argv(unit["Service"]["ExecStartPre"])[:2] == ["site", "check"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    timer = read_unit(SYSTEMD / "cmrfl-registry-pull@.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"


def test_site_env_example_sets_what_the_units_read() -> None:
    example = SYSTEMD / "cmrfl-site.env.example"
    settings = site_env_example()
    assert {"CMRFL_JOIN_ARGS", "CMRFL_REGISTRY_MODEL", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME"} <= set(
        settings
    )
    parse_cmrfl(
        ["site", "join", "--site-dir", "/var/lib/cmrfl/x", *shlex.split(settings["CMRFL_JOIN_ARGS"])], str(example)
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    # The units name /opt/cmrfl/venv/bin/cmrfl; point them at this environment's cmrfl,
    # which systemd-analyze requires to exist (next to the interpreter: the venv need not be on PATH).
    cmrfl = str(Path(sys.executable).with_name("cmrfl"))
    assert Path(cmrfl).exists(), f"{cmrfl} is not installed"
    instances = []
    for template in sorted(SYSTEMD.glob("*@.*")):
        instance = tmp_path / template.name.replace("@.", "@hospital-a.")
        instance.write_text(template.read_text().replace("/opt/cmrfl/venv/bin/cmrfl", cmrfl))
        instances.append(str(instance))
    completed = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *instances], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr


# --- the guides ------------------------------------------------------------------------


def guide_blocks(path: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)


def guide_commands(path: Path) -> list[list[str]]:
    return [argv for block in guide_blocks(path) for argv in cmrfl_invocations(block)]


GUIDE_STEPS = {
    "deployment-walkthrough.md": {
        ("pki", "init"),
        ("server", "start"),
        ("registry", "serve"),
        ("phantom", "--out"),
        ("site", "init"),
        ("site", "ingest"),
        ("server", "register-site"),
        ("site", "check"),
        ("site", "join"),
        ("train", "--superlink"),
        ("registry", "pull"),
    },
    "hospital-installation.md": {("site", "init"), ("site", "ingest"), ("site", "check")},
}


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_cmrfl_command_in_the_guides_is_real(guide: Path) -> None:
    commands = guide_commands(guide)
    missing = GUIDE_STEPS[guide.name] - {tuple(argv[:2]) for argv in commands}
    assert not missing, f"{guide}: no shell block runs {sorted(missing)}"
    # Variables the guide exports (the registry's address and account) reach the commands.
    exported = {name: "set-by-the-guide" for name in re.findall(r"export (\w+)=", "\n".join(guide_blocks(guide)))}
    for argv in commands:
        parse_cmrfl(argv, str(guide), environment=exported)


def test_walkthrough_gives_each_site_its_own_loopback_port() -> None:
    joins = [a for a in guide_commands(GUIDES[0]) if a[:2] == ["site", "join"]]
    ports = [a[a.index("--clientapp-port") + 1] for a in joins]
    assert len(joins) == 3 and len(set(ports)) == 3


def test_every_file_of_the_app_travels_in_flowers_app_bundle(tmp_path: Path) -> None:
    """``flwr run`` ships the app as a FAB, which carries only some file types: a file the
    packages need (a report template, say) must be one of them, or a deployed run fails."""
    import io
    import zipfile

    from flwr.cli.build import build_fab_from_disk

    from cmrfl.app_bundle import app_copy

    app_dir = app_copy(tmp_path / "app")
    bundled = set(zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app_dir))).namelist())
    package_files = {
        path.relative_to(app_dir).as_posix()
        for path in app_dir.rglob("*")
        if path.is_file() and path.name != "pyproject.toml"  # the FAB carries its own
    }
    assert sorted(package_files - bundled) == []
