"""The registry service: MLflow's tracking server and Model Registry with basic authentication.

`cmrfl registry serve` runs ``mlflow server --app-name basic-auth``. What MLflow's
auth app needs goes into an auth config file beside the data (never the password:
MLflow reads the first admin's password from ``MLFLOW_AUTH_ADMIN_PASSWORD``).
Default permission is none and workspaces are on (everything lives in MLflow's
``default`` workspace), so a site account sees exactly what it is granted, READ on
registered models (``add_site_user``), and cannot create experiments, runs or models.

With a certificate and key (``cmrfl registry issue-cert`` makes them from the consortium
CA) the server speaks HTTPS itself, through uvicorn's TLS options; sites check that
certificate against the CA they pinned and refuse plain HTTP unless told otherwise.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"  # MLflow's own variable, read once by its auth app
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"  # signs MLflow's CSRF tokens; must survive restarts
SITE_PERMISSION = "READ"
GRACEFUL_SHUTDOWN_S = 3


@dataclass(frozen=True)
class RegistrySettings:
    host: str = "127.0.0.1"
    port: int = 5000
    data_dir: Path = Path("registry")
    backend_store_uri: str | None = None  # default: SQLite in data_dir; or postgresql://…
    artifacts_destination: str | None = None  # default: data_dir/artifacts; or s3://…, gs://…
    auth_database_uri: str | None = None  # default: SQLite in data_dir; or postgresql://…
    admin_username: str = "admin"
    workers: int = 1
    tls_certificate: Path | None = None  # PEM, issued by the consortium CA; None: plain HTTP
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise ValueError("TLS needs both the registry's certificate and its key")
        for path in (self.tls_certificate, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{path}: not found (`cmrfl registry issue-cert --pki PKI_DIR` makes it)")

    @property
    def scheme(self) -> str:
        return "http" if self.tls_certificate is None else "https"

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def resolved_backend_store_uri(self) -> str:
        return self.backend_store_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    def resolved_artifacts_destination(self) -> str:
        return self.artifacts_destination or str((self.data_dir / "artifacts").resolve())

    def resolved_auth_database_uri(self) -> str:
        return self.auth_database_uri or f"sqlite:///{(self.data_dir / 'basic_auth.db').resolve()}"


def write_auth_config(settings: RegistrySettings) -> Path:
    """MLflow's basic-auth config (INI) for this registry; holds no password."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "basic_auth.ini"
    path.write_text(
        "# Written by `cmrfl registry serve`: MLflow basic authentication for the model registry.\n"
        "# No password here: the first admin's comes from MLFLOW_AUTH_ADMIN_PASSWORD.\n"
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {settings.resolved_auth_database_uri()}\n"
        f"admin_username = {settings.admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path.chmod(0o600)
    return path


def _persistent_secret(path: Path) -> str:
    """A random secret kept in ``path`` (0600), created on first use."""
    if not path.is_file():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def server_command(settings: RegistrySettings, admin_password: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and environment for ``settings``.

    The admin password is ``admin_password`` or MLFLOW_AUTH_ADMIN_PASSWORD; it travels
    only in the server's environment.
    """
    admin_password = admin_password or os.environ.get(ADMIN_PASSWORD_ENV)
    if not admin_password:
        raise ValueError(
            f"set {ADMIN_PASSWORD_ENV} to the registry admin's password before the first start "
            "(MLflow creates the admin account with it; it is never written to disk or printed)"
        )
    auth_config = write_auth_config(settings)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--backend-store-uri",
        settings.resolved_backend_store_uri(),
        "--artifacts-destination",
        settings.resolved_artifacts_destination(),
        "--serve-artifacts",
        "--workers",
        str(settings.workers),
        # Workspaces: creating experiments or registered models then needs a workspace-wide
        # grant, which site accounts never get; without it any account could create its own.
        "--enable-workspaces",
    ]
    # uvicorn waits for idle TLS keep-alive connections on SIGTERM unless bounded.
    uvicorn = ["--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_S)]
    if settings.tls_certificate is not None and settings.tls_key is not None:
        uvicorn += ["--ssl-certfile", str(Path(settings.tls_certificate).resolve())]
        uvicorn += ["--ssl-keyfile", str(Path(settings.tls_key).resolve())]
    command += ["--uvicorn-opts", shlex.join(uvicorn)]  # MLflow splits them with shlex
    environment = {
        **os.environ,
        ADMIN_PASSWORD_ENV: admin_password,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config.resolve()),
        SECRET_KEY_ENV: os.environ.get(SECRET_KEY_ENV) or _persistent_secret(settings.data_dir / "flask-secret-key"),
        # MLflow's background job runners serve GenAI evaluation, not the registry: six
        # worker pools a small consortium server does not need.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
    }
    return command, environment


def add_site_user(tracking_uri: str, site_name: str, password: str) -> None:
    """Create a site account that may read registered models (every one) and nothing else.

    Runs as the admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). With the
    registry's default permission at none, the account cannot see experiments or runs,
    and READ does not allow registering versions or moving aliases.
    """
    from mlflow.server.auth.client import AuthServiceClient

    auth = AuthServiceClient(tracking_uri)
    auth.create_user(site_name, password)
    auth.grant_user_permission(site_name, "registered_model", "*", SITE_PERMISSION)
