"""`cmrfl registry …` and `cmrfl predict`: the model registry and its use at a site.

Credentials are MLflow's own variables (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME,
MLFLOW_TRACKING_PASSWORD) or the options of the same meaning; passwords are never printed.
The registry speaks HTTPS with a certificate from the consortium CA: admin commands check
it against --ca-cert (MLflow's MLFLOW_TRACKING_SERVER_CERT_PATH), a site's pull against
the CA it pinned (SITE_DIR/trust/ca.pem).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

registry_app = typer.Typer(
    help="The consortium model registry (MLflow) and what sites pull from it.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)

TrackingUri = Annotated[
    str,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="The registry's address, e.g. https://registry.example.org.",
    ),
]
Username = Annotated[str | None, typer.Option(envvar="MLFLOW_TRACKING_USERNAME", help="Account name.")]
Password = Annotated[
    str | None,
    typer.Option(
        envvar="MLFLOW_TRACKING_PASSWORD", show_envvar=True, help="Account password (prefer the environment variable)."
    ),
]
CaCert = Annotated[
    Path | None,
    typer.Option(
        envvar="MLFLOW_TRACKING_SERVER_CERT_PATH",
        help="The consortium CA certificate (ca.pem) that issued the registry's TLS certificate.",
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    errors.print(f"[bold red]Error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def _use_credentials(username: str | None, password: str | None, ca_cert: Path | None = None) -> None:
    """MLflow reads credentials (and the CA to check the registry with) from its variables; put the options there."""
    if ca_cert is not None:
        if not ca_cert.is_file():
            fail(f"{ca_cert}: CA certificate not found")
        os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(ca_cert)
    if username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = username
    if password:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    if os.environ.get("MLFLOW_TRACKING_USERNAME") and not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        if not sys.stdin.isatty():
            fail("no password: set MLFLOW_TRACKING_PASSWORD")
        os.environ["MLFLOW_TRACKING_PASSWORD"] = typer.prompt("Registry password", hide_input=True)


@contextlib.contextmanager
def _registry_errors(tracking_uri: str) -> Iterator[None]:
    """Registry failures as one line that says what to do, not a traceback."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        status = error.get_http_status_code()
        user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no account)"
        if status == 401 or "401" in error.message:
            fail(f"{tracking_uri}: the registry refused the credentials of {user} (HTTP 401, wrong name or password)")
        if status == 403 or "403" in error.message:
            fail(f"{tracking_uri}: account {user} is not allowed to do this (HTTP 403 permission denied)")
        fail(f"{tracking_uri}: {error.message.splitlines()[0][:400]}")


@registry_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (put TLS in front for other hosts).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 5000,
    data_dir: Annotated[
        Path, typer.Option(help="Folder for the default SQLite stores, artifacts and auth config.")
    ] = Path("registry"),
    backend_store_uri: Annotated[
        str | None,
        typer.Option(help="Tracking and registry database, e.g. postgresql://… (default: SQLite in DATA_DIR)."),
    ] = None,
    artifacts_destination: Annotated[
        str | None, typer.Option(help="Artifact root, e.g. s3://bucket/path (default: DATA_DIR/artifacts).")
    ] = None,
    auth_database_uri: Annotated[
        str | None, typer.Option(help="Accounts and permissions database (default: SQLite in DATA_DIR).")
    ] = None,
    admin_username: Annotated[
        str, typer.Option(help="The consortium admin account (password: MLFLOW_AUTH_ADMIN_PASSWORD).")
    ] = "admin",
    admin_password_file: Annotated[
        Path | None,
        typer.Option(
            help="Read the admin password from this file instead of MLFLOW_AUTH_ADMIN_PASSWORD "
            "(the demo's: OUT/registry/admin-password)."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="The registry's TLS certificate from the consortium CA (`cmrfl registry issue-cert`)."),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Its private key (PKI_DIR/registry/registry.key).")] = None,
) -> None:
    """Run the registry: MLflow tracking server and Model Registry with basic authentication, over HTTPS."""
    from server.registry.service import RegistrySettings, server_command

    try:
        settings = RegistrySettings(
            host=host,
            port=port,
            data_dir=data_dir,
            backend_store_uri=backend_store_uri,
            artifacts_destination=artifacts_destination,
            auth_database_uri=auth_database_uri,
            admin_username=admin_username,
            tls_certificate=tls_cert,
            tls_key=tls_key,
        )
    except ValueError as problem:
        fail(f"--tls-cert/--tls-key: {problem}")
    admin_password = None
    if admin_password_file is not None:
        try:
            admin_password = admin_password_file.read_text().strip()
        except OSError as error:
            fail(f"{admin_password_file}: cannot read the admin password ({error.strerror})")
        if not admin_password:
            fail(f"{admin_password_file}: empty; it should hold the admin password")
    try:
        command, environment = server_command(settings, admin_password)
    except ValueError as problem:
        fail(str(problem))
    if settings.scheme == "http":  # kept for a TLS-terminating proxy in front (deploy/); sites refuse it otherwise
        errors.print(
            "[bold yellow]WARNING:[/] plain HTTP: passwords cross the network in the clear and sites refuse to pull "
            "unless they pass --insecure-http. Serve HTTPS with --tls-cert/--tls-key (`cmrfl registry issue-cert`), "
            "or put a proxy with a consortium-CA certificate in front.",
            markup=True,
            highlight=False,
        )
    console.print(
        f"Registry on {settings.uri} (admin account: {admin_username}); tracking store "
        f"{settings.resolved_backend_store_uri()}, artifacts {settings.resolved_artifacts_destination()}",
        highlight=False,
    )
    with contextlib.suppress(KeyboardInterrupt):
        raise typer.Exit(subprocess.run(command, env=environment).returncode)


@registry_app.command("issue-cert")
def issue_cert(
    pki: Annotated[Path, typer.Option(help="The consortium PKI folder (`cmrfl pki init`): its CA signs.")],
    host: Annotated[
        list[str] | None,
        typer.Option(help="A name or address sites reach the registry at (repeat; loopback is always included)."),
    ] = None,
) -> None:
    """(Admin) Issue the registry's TLS certificate from the consortium CA: PKI_DIR/registry/registry.pem, .key."""
    from server.pki import PkiError, issue_registry_certificate

    try:
        certificate, key = issue_registry_certificate(pki, host or [])
    except PkiError as problem:
        fail(str(problem))
    console.print(
        f"Wrote {certificate} and {key} (0600). Serve with: cmrfl registry serve --tls-cert {certificate} "
        f"--tls-key {key}",
        highlight=False,
    )


@registry_app.command("add-site-user")
def add_site_user(
    name: Annotated[str, typer.Argument(help="The site's account name, e.g. its site id.")],
    tracking_uri: TrackingUri,
    username: Username = None,
    password: Password = None,
    ca_cert: CaCert = None,
    site_password: Annotated[
        str | None,
        typer.Option(
            envvar="CMRFL_SITE_PASSWORD", help="The new account's password (default: a random one, printed once)."
        ),
    ] = None,
) -> None:
    """(Admin) Create a site account that may read registered models and nothing else."""
    with warnings.catch_warnings():  # MLflow's auth client imports its server, which warns about Starlette
        warnings.simplefilter("ignore", DeprecationWarning)
        from server.registry.service import add_site_user as create

    _use_credentials(username, password, ca_cert)
    new_password = site_password or secrets.token_urlsafe(18)
    with _registry_errors(tracking_uri):
        create(tracking_uri, name, new_password)
    console.print(f"Created site account [bold]{name}[/] with READ on registered models.")
    if not site_password:
        console.print(f"Its password (shown once; give it to the site): {new_password}", highlight=False)


@registry_app.command("register")
def register(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (summary.json, final_model.pt).")],
    name: Annotated[str, typer.Option("--name", help="Registered model name, e.g. lge-scar.")],
    signing_key: Annotated[Path, typer.Option(help="The consortium model-signing key, PKI_DIR/model-signing.key.")],
    tracking_uri: TrackingUri,
    username: Username = None,
    password: Password = None,
    ca_cert: CaCert = None,
) -> None:
    """(Admin) Log a run, and register its final model with a model card and signatures (alias candidate)."""
    from mlflow import MlflowClient

    from server.registry.card import RunDirError
    from server.registry.registration import register_run
    from server.registry.signing import SigningKeyError

    _use_credentials(username, password, ca_cert)
    try:
        with _registry_errors(tracking_uri):
            version = register_run(MlflowClient(tracking_uri), run_dir, name, signing_key)
    except (RunDirError, SigningKeyError) as problem:
        fail(str(problem))
    console.print(
        f"Registered [bold]{name}[/] version {version.version} (alias candidate), run {version.run_id}; "
        f"weights SHA-256 {version.weights_sha256}",
        highlight=False,
    )


@registry_app.command("promote")
def promote(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to approve for use at the sites.")],
    signing_key: Annotated[
        Path, typer.Option(help="The consortium model-signing key, PKI_DIR/model-signing.key: it signs the approval.")
    ],
    tracking_uri: TrackingUri,
    username: Username = None,
    password: Password = None,
    ca_cert: CaCert = None,
) -> None:
    """(Admin) Sign the approval of MODEL VERSION and move the alias `approved` to it: what sites pull and use."""
    from mlflow import MlflowClient

    from server.registry.registration import promote as approve
    from server.registry.signing import RecordError, SigningKeyError

    _use_credentials(username, password, ca_cert)
    approved_by = os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no account)"
    try:
        with _registry_errors(tracking_uri):
            approval = approve(MlflowClient(tracking_uri), model, version, signing_key, approved_by)
    except (RecordError, SigningKeyError) as problem:
        fail(str(problem))
    console.print(
        f"{model} version {version} is now [bold]approved[/]: approval signed {approval['approved_utc']} "
        f"by {approved_by}, weights SHA-256 {approval['weights_sha256'][:16]}…",
        highlight=False,
    )


@registry_app.command("list")
def list_models(
    tracking_uri: TrackingUri, username: Username = None, password: Password = None, ca_cert: CaCert = None
) -> None:
    """Registered models and versions this account may read, with their aliases."""
    from mlflow import MlflowClient

    _use_credentials(username, password, ca_cert)
    table = Table(title=f"Models in {tracking_uri}")
    for column in ("model", "version", "aliases", "registered (UTC)", "weights SHA-256"):
        table.add_column(column)
    with _registry_errors(tracking_uri):
        client = MlflowClient(tracking_uri)
        for model in client.search_registered_models():
            aliases: dict[str, list[str]] = {}
            for alias, version in model.aliases.items():
                aliases.setdefault(str(version), []).append(alias)
            for version in client.search_model_versions(f"name='{model.name}'"):
                created = dt.datetime.fromtimestamp(version.creation_timestamp / 1000, dt.UTC)
                table.add_row(
                    model.name,
                    version.version,
                    ", ".join(aliases.get(version.version, [])),
                    created.strftime("%Y-%m-%d %H:%M"),
                    version.tags.get("weights_sha256", "")[:16] + "…",
                )
    console.print(table)


@registry_app.command("pull")
def pull(
    model: Annotated[str, typer.Argument(help="MODEL (alias approved), MODEL@ALIAS or MODEL:VERSION.")],
    site_dir: Annotated[
        Path, typer.Option(help="The site's folder (trust/: pinned CA and model-signing key; models land in models/).")
    ],
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            envvar="MLFLOW_TRACKING_URI",
            help="The registry's https:// address (default: the one in SITE_DIR/registry-account.toml).",
        ),
    ] = None,
    username: Username = None,
    password: Password = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Allow a plain http:// registry: the password crosses the network in the clear and nobody checks "
            "who answers (signatures are still checked).",
        ),
    ] = False,
) -> None:
    """Download a model with the site's account; keep it only if its signatures verify.

    The registry's certificate is checked against SITE_DIR/trust/ca.pem. Without MLflow's
    credentials (options or variables), the site's own account in
    SITE_DIR/registry-account.toml is used.
    """
    from client.local_models import ModelFolderError
    from client.model_trust import SignatureError
    from client.registry_account import RegistryAccountError, load_registry_account
    from client.registry_pull import ModelReference, PullRefused, pull_model

    if not site_dir.is_dir():
        fail(f"site folder not found: {site_dir}")
    try:
        reference = ModelReference.parse(model)
        account = load_registry_account(site_dir)
    except (ValueError, RegistryAccountError) as problem:
        fail(str(problem))
    if account is not None and not username:
        username, password = account.username, account.password
    tracking_uri = tracking_uri or (account.tracking_uri if account else None)
    if not tracking_uri:
        fail(
            f"no registry: set MLFLOW_TRACKING_URI or --tracking-uri (or keep the site's account in "
            f"{site_dir / 'registry-account.toml'})"
        )
    _use_credentials(username, password)
    if insecure_http and tracking_uri.startswith("http:"):
        errors.print(
            f"[bold red]WARNING:[/] pulling over plain HTTP from {tracking_uri} (--insecure-http): the site's "
            "password crosses the network in the clear and nobody checks who answers.",
            markup=True,
            highlight=False,
        )
    try:
        with _registry_errors(tracking_uri):
            pulled = pull_model(tracking_uri, reference, site_dir, insecure_http=insecure_http)
    except (SignatureError, PullRefused, ModelFolderError) as refused:
        fail(f"refused {reference}: {refused}")
    approval = pulled.approval
    console.print(
        f"Pulled {pulled.name} version {pulled.version} into [bold]{pulled.folder}[/]: signature and release verified "
        f"(signer key SHA-256 {pulled.verified.signer_public_key_sha256[:16]}…); "
        + (
            f"approved by {approval.approved_by} on {approval.approved_utc} (signed). "
            if approval
            else "[bold yellow]not approved[/]: `cmrfl predict` warns before it uses it. "
        )
        + f"Model card: {pulled.folder / 'model-card.md'}",
        highlight=False,
    )


def predict(
    series_dir: Annotated[Path, typer.Argument(help="Folder holding one DICOM series (e.g. a short-axis LGE stack).")],
    site_dir: Annotated[Path, typer.Option(help="The site's folder (pulled models in models/).")],
    model: Annotated[str, typer.Option(help="MODEL: its approved version (or MODEL:VERSION, as --version).")],
    out: Annotated[
        Path, typer.Option(help="Folder for what the model's task writes (LGE: segmentation, scar burden, overlay).")
    ],
    version: Annotated[
        str | None, typer.Option(help="Use this pulled version instead of the approved one (a warning is printed).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Apply a pulled, verified model to one local DICOM series (its task says what it writes)."""
    from client.local_models import ModelFolderError, load_local_model
    from client.model_trust import SignatureError
    from client.predict import SeriesError, predict_series

    name, _, named_version = model.partition(":")
    if version and named_version and version != named_version:
        fail(f"--model {model} and --version {version} name different versions")
    try:
        chosen = load_local_model(site_dir, name, version or named_version or None)
    except SignatureError as refused:
        fail(f"refused {model}: {refused}")
    except (FileNotFoundError, ModelFolderError) as problem:
        fail(str(problem))
    warning = chosen.warning()
    if warning:
        errors.print(f"[bold red]WARNING:[/] {warning}.", markup=True, highlight=False)
    try:
        result = predict_series(chosen, series_dir, out, device)
    except (SeriesError, FileNotFoundError, NotImplementedError) as problem:
        fail(str(problem))
    for line in result.lines:
        console.print(line, highlight=False)
    console.print("Wrote " + ", ".join(str(path) for path in result.files.values()), highlight=False)
