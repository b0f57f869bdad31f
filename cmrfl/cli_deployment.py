"""Deployment commands: ``cmrfl pki``, ``cmrfl server``, ``cmrfl site init|check|join``, ``cmrfl train``.

Each composes a module that does the work (server/pki.py, server/superlink.py,
client/site_init.py, client/site_check.py, client/join.py, cmrfl/train.py). The
long-running ones (``server start``, ``site join``) replace this process with Flower's
own executable, so that systemd, Kubernetes or Ctrl-C signal Flower directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console(highlight=False, soft_wrap=True)  # soft wrap: paths and keys stay whole
errors = Console(stderr=True, soft_wrap=True, highlight=False)
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def fail(message: str, code: int = 2) -> NoReturn:
    errors.print(f"[bold red]Error:[/] {message}")
    raise typer.Exit(code)


def _exec(command: list[str]) -> NoReturn:
    """Become Flower's process (same pid: signals and exit code are Flower's)."""
    from server.superlink import flower_environment

    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, flower_environment())


pki_app = typer.Typer(help="The consortium's certificate authority and keys.", no_args_is_help=True)
server_app = typer.Typer(help="The consortium's SuperLink.", no_args_is_help=True)


@pki_app.command("init")
def pki_init(
    out: Annotated[Path, typer.Option(help="Folder for the consortium's CA, SuperLink certificate and keys.")],
    superlink_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A DNS name or IP address sites use to reach the SuperLink (repeatable); "
            "localhost, 127.0.0.1 and ::1 are always included."
        ),
    ] = None,
) -> None:
    """Create the consortium CA, the SuperLink's TLS certificate, the model-signing and admin key pairs."""
    from server.pki import PkiError, init_pki

    try:
        files = init_pki(out, superlink_host or [])
    except PkiError as problem:
        fail(str(problem))
    names = ", ".join(["localhost", "127.0.0.1", "::1", *(superlink_host or [])])
    console.print(f"Wrote the consortium PKI to [bold]{files.directory}[/]:")
    for folder, what in (
        (files.secret_dir, "signing keys (0600): keep offline / on the admin's machine; never on the SuperLink"),
        (files.superlink_dir, f"all the SuperLink gets (cmrfl server start --pki); its certificate names: {names}"),
        (files.public_dir, "what every site gets (cmrfl site init --ca, --model-signing-key, --admin-public-key)"),
    ):
        console.print(f"  {folder}/  {what}")
        for path in sorted(folder.iterdir()):
            console.print(f"    {path.name}")
    console.print(
        f"The admin key {files.admin_key} administers the federation (register-site, train, server login) "
        "and signs the app every SuperNode runs. Never send a .key file."
    )


@server_app.command("start", context_settings=_PASS_THROUGH)
def server_start(
    ctx: typer.Context,
    pki: Annotated[
        Path, typer.Option(help="The superlink/ folder 'cmrfl pki init' wrote (certificate, key, ca.pem, admin.pub).")
    ],
    state_dir: Annotated[Path, typer.Option(help="Folder for the SuperLink's database (runs, registered SuperNodes).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="HTTPS port for SuperNodes, flwr and the ServerApp.")
    ] = 9092,
) -> None:
    """Run Flower's SuperLink: TLS, SuperNode authentication, Control API for the consortium admin only
    (extra options go to flower-superlink)."""
    from server.pki import PkiError
    from server.superlink import SuperLinkSettings

    settings = SuperLinkSettings(pki_dir=pki, state_dir=state_dir, host=host, port=port)
    try:
        command = settings.command(list(ctx.args))
    except PkiError as problem:
        fail(str(problem))
    state_dir.mkdir(parents=True, exist_ok=True)
    console.print("Starting the SuperLink (TLS, SuperNode authentication, admin-only Control API):")
    for line in settings.listening():
        console.print(f"  {line}")
    console.print(
        f"Admit a site (with the admin's PKI folder): cmrfl server register-site --pki PKI_DIR --superlink HOST:{port} "
        "SITE_DIR/keys/supernode.pub"
    )
    _exec(command)


_ADMIN_PKI_HELP = "The admin's copy of the folder 'cmrfl pki init' wrote (public/ca.pem, secret/admin.key)."


@server_app.command("register-site")
def server_register_site(
    public_key: Annotated[Path, typer.Argument(help="The site's SuperNode public key (SITE_DIR/keys/supernode.pub).")],
    pki: Annotated[Path, typer.Option(help=_ADMIN_PKI_HELP)],
    superlink: Annotated[str, typer.Option(help="The SuperLink's HOST:PORT.")] = "127.0.0.1:9092",
    name: Annotated[str | None, typer.Option(help="A name for the SuperNode in 'flwr supernode ls'.")] = None,
) -> None:
    """Admit a site: register its SuperNode public key with the SuperLink, as the consortium admin."""
    from server.pki import PkiError, PkiFiles
    from server.superlink import RegistrationError, register_supernode

    try:
        ca_cert, admin_key = PkiFiles(pki).admin_credential()
        node_id = register_supernode(superlink, ca_cert, public_key, admin_key, name=name)
    except (PkiError, RegistrationError) as problem:
        fail(str(problem))
    console.print(f"Registered {public_key} as SuperNode {node_id} at {superlink}")


@server_app.command("login")
def server_login(
    pki: Annotated[Path, typer.Option(help=_ADMIN_PKI_HELP)],
    flwr_home: Annotated[Path, typer.Option(help="Folder to write Flower's CLI configuration and token into.")],
    superlink: Annotated[str, typer.Option(help="The SuperLink's HOST:PORT.")] = "127.0.0.1:9092",
    valid_hours: Annotated[float, typer.Option(min=0.01, max=168, help="How long the token is accepted.")] = 8,
) -> None:
    """Let Flower's own CLI administer the SuperLink (flwr ls, flwr supernode ls|unregister): a short-lived
    admin token in FLWR_HOME."""
    from server.admin_token import AdminTokenError
    from server.flwr_connection import CONNECTION_NAME, write_flwr_home
    from server.pki import PkiError, PkiFiles

    try:
        ca_cert, admin_key = PkiFiles(pki).admin_credential()
        write_flwr_home(flwr_home, superlink, ca_cert, admin_key=admin_key, token_lifetime_s=int(valid_hours * 3600))
    except (PkiError, AdminTokenError) as problem:
        fail(str(problem))
    console.print(f"Wrote {flwr_home}/config.toml and an admin token valid for {valid_hours:g} h. Then, e.g.:")
    console.print(f"  export FLWR_HOME={flwr_home.resolve()}")
    console.print(f"  flwr supernode ls {CONNECTION_NAME}")


def site_init(
    site_dir: Annotated[Path, typer.Option(help="The site's folder.")],
    name: Annotated[str, typer.Option(help="The site's name in the federation, e.g. 'hospital-a'.")],
    superlink: Annotated[str, typer.Option(help="The consortium SuperLink's HOST:PORT.")],
    ca: Annotated[Path, typer.Option(help="The consortium CA certificate (ca.pem) to pin.")],
    model_signing_key: Annotated[Path | None, typer.Option(help="The consortium's model-signing.pub to pin.")] = None,
    admin_public_key: Annotated[
        Path | None, typer.Option(help="The consortium's admin.pub to pin: the SuperNode runs only apps it signed.")
    ] = None,
) -> None:
    """Create site.toml and the site's SuperNode key pair; pin the consortium CA (and model-signing, admin keys)."""
    from client.site_init import SiteInitError, init_site

    try:
        federation = init_site(site_dir, name, superlink, ca, model_signing_key, admin_public_key)
    except SiteInitError as problem:
        fail(str(problem))
    console.print(f"Initialised site [bold]{name}[/] in {site_dir}:")
    console.print(f"  {site_dir / 'site.toml'}  (SuperLink {superlink})")
    console.print(f"  {federation.private_key}  (private, 0600: never leaves this machine)")
    pinned = [federation.ca_cert]
    pinned += [federation.model_signing_key] if model_signing_key else []
    pinned += [federation.admin_public_key] if admin_public_key else []
    console.print("  " + ", ".join(str(path) for path in pinned))
    if model_signing_key is None:
        console.print("  no model-signing key pinned: add the consortium's model-signing.pub with --model-signing-key")
    if admin_public_key is None:
        console.print("  no admin key pinned: 'site join' needs the consortium's admin.pub (--admin-public-key)")
    console.print(
        "Send this public key to the consortium to be registered "
        f"(cmrfl server register-site ... {federation.public_key}):"
    )
    console.print(federation.public_key.read_text().strip(), markup=False)


def site_check(
    site_dir: Annotated[Path, typer.Option(help="The site's folder.")],
    offline: Annotated[bool, typer.Option(help="Skip the connection to the SuperLink.")] = False,
) -> None:
    """Check everything before joining: software, compute, disk, case store, keys, SuperLink and its certificate."""
    from client.site_check import INFO, OK, has_problems, run_site_checks

    results = run_site_checks(site_dir, check_connection=not offline)
    style = {OK: "[green]ok[/]     ", INFO: "[blue]info[/]   "}
    for result in results:
        console.print(
            f"{style.get(result.status, '[bold red]problem[/]')} {escape(result.name)}: {escape(result.detail)}"
        )
        if result.fix:
            console.print(f"          → {escape(result.fix)}")
    problems = [r for r in results if r.status not in (OK, INFO)]
    if has_problems(results):
        console.print(f"[bold red]{len(problems)} problem(s)[/]: fix them before 'cmrfl site join'.")
        raise typer.Exit(1)
    console.print(f"[green]All checks passed.[/] Join with: cmrfl site join --site-dir {site_dir}")


def site_join(
    ctx: typer.Context,
    site_dir: Annotated[Path, typer.Option(help="The site's folder.")],
    clientapp_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Loopback port for the SuperNode's own ClientApp processes.")
    ] = 9094,
) -> None:
    """Run Flower's SuperNode for this site: its data, its key, the pinned CA (extra options go to flower-supernode)."""
    from client.join import supernode_command
    from client.site import SiteConfigError, SiteNotFoundError

    try:
        command = supernode_command(site_dir, clientapp_port, list(ctx.args))
    except (SiteConfigError, SiteNotFoundError, FileNotFoundError) as problem:
        fail(str(problem))
    console.print(
        f"Joining the federation at {command[command.index('--superlink') + 1]} as {site_dir} (outbound HTTPS only)"
    )
    _exec(command)


def train(
    superlink: Annotated[str, typer.Option(help="The SuperLink's HOST:PORT.")],
    ca: Annotated[Path, typer.Option(help="The consortium CA certificate that verifies the SuperLink.")],
    admin_key: Annotated[
        Path, typer.Option(help="The consortium admin's key (PKI_DIR/secret/admin.key): signs the app and the request.")
    ],
    run_config: Annotated[
        str | None, typer.Option(help="Run config overrides, e.g. \"num-server-rounds=10 run-dir='runs/x'\".")
    ] = None,
    federation_name: Annotated[
        str | None, typer.Option(help="The federation on the SuperLink, if not its default.")
    ] = None,
) -> None:
    """Sign the cmrfl app, submit it to the federation (flwr run) as the admin and follow it to the end;
    exit code is the run's."""
    from cmrfl.admin_key import AdminKeyError
    from cmrfl.recipe import FederationRecipe, parse_run_config
    from server.admin_token import AdminTokenError
    from server.config import RunConfigError

    try:
        recipe = FederationRecipe(parse_run_config(run_config))
    except (RunConfigError, ValueError) as invalid:
        fail(f"--run-config: {invalid}")
    try:
        outcome = recipe.submit(superlink, ca, federation=federation_name, admin_key=admin_key)
    except (FileNotFoundError, AdminKeyError, AdminTokenError) as problem:
        fail(str(problem))
    console.print(f"Run {outcome.run_id}: {outcome.status or 'did not finish'}")
    raise typer.Exit(outcome.returncode)


def add_deployment_commands(app: typer.Typer, site_app: typer.Typer) -> None:
    app.add_typer(pki_app, name="pki")
    app.add_typer(server_app, name="server")
    site_app.command("init")(site_init)
    site_app.command("check")(site_check)
    site_app.command("join", context_settings=_PASS_THROUGH)(site_join)
    app.command("train")(train)
