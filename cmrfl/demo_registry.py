"""The demo's model registry step: sign the model, register and approve it, let a site pull it.

A demo has no consortium PKI, so it makes a demo model-signing key pair in OUT/pki
(the same files `cmrfl pki init` writes, kept between demos so that versions
registered by earlier demos still verify) and pins the public key in each demo site
as `cmrfl site init` would. It then registers the model: in the registry named by
MLFLOW_TRACKING_URI when one is set, otherwise in a registry of its own in
OUT/registry (SQLite, artifacts, accounts). That one it serves over HTTPS on a free
loopback port, with a certificate from a demo CA (OUT/pki/ca.pem, pinned in each demo
site as `cmrfl site init --ca` would), so that the site's pull takes the same checked
path as in a deployment. It signs the new version's approval (`cmrfl registry promote`),
gives each demo site a read-only account (SITE_DIR/registry-account.toml, 0600), pulls
the approved version into the first site as that site, and stops. The registry
persists, so the next demo adds the next version.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.registry_account import ACCOUNT_FILE, RegistryAccount

DEMO_MODEL_NAME = "lge-scar"
ADMIN_USERNAME = "admin"  # RegistrySettings' default admin account


@dataclass(frozen=True)
class DemoRegistration:
    name: str
    version: str
    run_id: str
    tracking_uri: str  # where it was registered (the demo's own registry is stopped by now)
    registry_dir: Path | None = None  # the demo's own registry; None for one named by MLFLOW_TRACKING_URI
    pulled_into: Path | None = None  # the site folder that pulled and verified the version


def demo_signing_key(pki_dir: Path) -> Path:
    """OUT/pki/model-signing.key (PKCS8 PEM, 0600) and .pub (SPKI PEM); created once."""
    private, public = pki_dir / "model-signing.key", pki_dir / "model-signing.pub"
    if private.is_file() and public.is_file():
        return private
    pki_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private.touch(mode=0o600)
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private


def demo_registry_tls(pki_dir: Path) -> tuple[Path, Path, Path]:
    """A demo CA (OUT/pki/ca.pem, ca.key) and the registry's certificate from it (OUT/pki/registry/); made once.

    Returns the CA certificate, the registry's certificate and its key.
    """
    import datetime

    from server.pki import REGISTRY_CERT, REGISTRY_DIR, REGISTRY_KEY, make_ca, make_server_certificate, write_private

    ca_pem, ca_key_path = pki_dir / "ca.pem", pki_dir / "ca.key"
    certificate, key = pki_dir / REGISTRY_DIR / REGISTRY_CERT, pki_dir / REGISTRY_DIR / REGISTRY_KEY
    if all(path.is_file() for path in (ca_pem, ca_key_path, certificate, key)):
        return ca_pem, certificate, key
    for path in (ca_pem, ca_key_path, certificate, key):
        path.unlink(missing_ok=True)  # a partial set from an interrupted demo: start again
    certificate.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_certificate = make_ca(now)
    server_key, server_certificate = make_server_certificate(ca_key, ca_certificate, [], now)
    for path, private in ((ca_key_path, ca_key), (key, server_key)):
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private(path, pem)
    certificate.write_bytes(server_certificate.public_bytes(serialization.Encoding.PEM))
    ca_pem.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))  # last: marks the set complete
    return ca_pem, certificate, key


def sign_demo_model(out: Path, run_dir: Path, site_dirs: list[Path], model_name: str = DEMO_MODEL_NAME) -> Path:
    """Model card and signature beside the run's final model; the demo key pinned at each site."""
    from server.registry.model_files import write_signed_model

    key_path = demo_signing_key(out / "pki")
    write_signed_model(run_dir, model_name, key_path, run_dir)
    for site_dir in site_dirs:
        trust = site_dir / "trust" / "model-signing.pub"
        trust.parent.mkdir(parents=True, exist_ok=True)
        trust.write_bytes(key_path.with_suffix(".pub").read_bytes())
    return key_path


def check_registry_reachable(uri: str | None = None) -> str:
    """Before training: the registry at ``uri`` (default MLFLOW_TRACKING_URI) answers with these credentials."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        raise ValueError(
            f"MLFLOW_TRACKING_URI={uri!r}: the demo registers in a running registry (http:// or https://, "
            "e.g. from `cmrfl registry serve`, with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD of its "
            "admin); unset it for the demo's own registry in OUT/registry, or pass --no-register"
        )
    ca_cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")  # MLflow's own: the CA to check the registry with
    context = ssl.create_default_context(cafile=ca_cert) if uri.startswith("https:") and ca_cert else None
    try:  # MLflow's client retries a refused connection for minutes; a plain probe says it at once
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10, context=context)
    except OSError as error:
        raise ValueError(
            f"--register: no registry answers at {uri} ({error}); start one with `cmrfl registry serve`"
        ) from None
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as error:
        raise ValueError(
            f"--register: the registry at {uri} does not answer: {error.message.splitlines()[0][:300]}"
        ) from None
    return uri


def register_demo_model(
    run_dir: Path, key_path: Path, model_name: str = DEMO_MODEL_NAME, tracking_uri: str | None = None
) -> DemoRegistration:
    """Register in a running registry (default MLFLOW_TRACKING_URI), as its admin (MLflow's variables)."""
    from mlflow import MlflowClient

    from server.registry.registration import register_run

    uri = check_registry_reachable(tracking_uri)
    version = register_run(MlflowClient(uri), run_dir, model_name, key_path)
    return DemoRegistration(version.name, version.version, version.run_id, uri)


def own_registry_dir(out: Path) -> Path:
    return out / "registry"


def check_demo_registry(out: Path, tracking_uri: str | None) -> None:
    """Before training: the registry named answers, or the demo's own folder is usable.

    Raises ValueError saying what is wrong.
    """
    from cmrfl.registry_process import RegistryStartError, check_registry_folder

    if tracking_uri:
        check_registry_reachable(tracking_uri)
        return
    try:
        check_registry_folder(own_registry_dir(out))
    except RegistryStartError as problem:
        raise ValueError(f"{problem} (or pass --no-register)") from None


def register_in_own_registry(
    out: Path, run_dir: Path, key_path: Path, site_dirs: list[Path], model_name: str = DEMO_MODEL_NAME
) -> DemoRegistration:
    """Start OUT/registry over HTTPS, register and approve the run, give each site an account, pull, stop."""
    from mlflow import MlflowClient

    from client.registry_account import write_registry_account
    from client.registry_pull import ModelReference, pull_model
    from cmrfl.registry_process import admin_password, running_registry
    from server.registry.registration import APPROVED, promote, register_run

    registry_dir = own_registry_dir(out)
    password = admin_password(registry_dir)
    ca_pem, certificate, tls_key = demo_registry_tls(key_path.parent)
    for site_dir in site_dirs:  # as `cmrfl site init --ca` pins the consortium CA
        (site_dir / "trust").mkdir(parents=True, exist_ok=True)
        (site_dir / "trust" / "ca.pem").write_bytes(ca_pem.read_bytes())
    with running_registry(registry_dir, password, tls=(certificate, tls_key)) as uri:
        with mlflow_account(ADMIN_USERNAME, password, ca_cert=ca_pem):
            client = MlflowClient(uri)
            version = register_run(client, run_dir, model_name, key_path)
            promote(client, model_name, version.version, key_path, approved_by=ADMIN_USERNAME)
            accounts = [RegistryAccount(uri, site_dir.name, secrets.token_urlsafe(18)) for site_dir in site_dirs]
            for site_dir, account in zip(site_dirs, accounts, strict=True):
                _set_site_account(uri, account)
                write_registry_account(site_dir, account)
        with mlflow_account(accounts[0].username, accounts[0].password):
            pulled = pull_model(uri, ModelReference(model_name, alias=APPROVED), site_dirs[0])
    if pulled.version != version.version:
        raise RuntimeError(
            f"{site_dirs[0]} pulled {model_name}@{APPROVED} as version {pulled.version}, not {version.version}"
        )
    return DemoRegistration(version.name, version.version, version.run_id, uri, registry_dir, site_dirs[0])


def _set_site_account(uri: str, account: RegistryAccount) -> None:
    """A read-only site account; an earlier demo's account of the same name gets the new password."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    with warnings.catch_warnings():  # MLflow's auth client imports its server, which warns about Starlette
        warnings.simplefilter("ignore")  # (a UserWarning: StarletteDeprecationWarning)
        from mlflow.server.auth.client import AuthServiceClient

        from server.registry.service import add_site_user
    try:
        add_site_user(uri, account.username, account.password)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        AuthServiceClient(uri).update_user_password(account.username, account.password)


@contextlib.contextmanager
def mlflow_account(username: str, password: str, ca_cert: Path | None = None) -> Iterator[None]:
    """MLflow's clients read the account (and the CA to check the registry with) from its variables: set, restore."""
    values = {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}
    if ca_cert is not None:
        values["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(ca_cert)
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def registry_lines(registration: DemoRegistration, hospitals_dir: Path, example_series: str) -> list[str]:
    """What the demo registered, and the commands to browse, pull and predict, ready to copy."""
    from shlex import quote

    from server.pki import REGISTRY_CERT, REGISTRY_DIR, REGISTRY_KEY
    from server.registry.registration import CANDIDATE

    name, version = registration.name, registration.version
    if registration.registry_dir is None:
        return [
            f"Registered {name} version {version} (alias {CANDIDATE}) in {registration.tracking_uri}; approve it "
            f"with `cmrfl registry promote {name} {version} --signing-key KEY`, then sites pull it (docs/registry.md)"
        ]
    site_dir = registration.pulled_into
    assert site_dir is not None
    registry_dir = registration.registry_dir
    port = registration.tracking_uri.rsplit(":", 1)[1]
    # the first series of the task's kind at the site (the task's DemoRecipe.example_series)
    series = min((hospitals_dir / site_dir.name / "dicom").glob(example_series), default="SERIES_DIR")
    password_file = registry_dir / "admin-password"
    tls = registry_dir.parent / "pki" / REGISTRY_DIR
    return [
        f"Registered {name} version {version} and signed its approval in the demo's own registry {registry_dir} "
        f"(MLflow: SQLite, artifacts, accounts; HTTPS with a demo CA, {registry_dir.parent / 'pki' / 'ca.pem'}; "
        f"stopped again). {site_dir.name} pulled it with its read-only account over HTTPS and verified the "
        f"signatures and the approval: {site_dir / 'models' / name / version}",
        f"Every demo site has its registry account in SITE_DIR/{ACCOUNT_FILE} (0600) and the demo CA in "
        f"SITE_DIR/trust/ca.pem; the admin's password is in {password_file} (0600). Try it:",
        f"  # 1. browse: MLflow UI at {registration.tracking_uri} (user {ADMIN_USERNAME}, the password in that file; "
        "the browser does not know the demo CA)",
        f"  cmrfl registry serve --data-dir {quote(str(registry_dir))} --port {port} "
        f"--admin-password-file {quote(str(password_file))} --tls-cert {quote(str(tls / REGISTRY_CERT))} "
        f"--tls-key {quote(str(tls / REGISTRY_KEY))}",
        f"  # 2. in a second terminal, pull the approved version as {site_dir.name} (its account file names the "
        "registry)",
        f"  cmrfl registry pull {name} --site-dir {quote(str(site_dir))}",
        f"  # 3. apply the approved model to one of {site_dir.name}'s DICOM series (no registry needed)",
        f"  cmrfl predict --site-dir {quote(str(site_dir))} --model {name} {quote(str(series))} "
        f"--out {quote(str(site_dir.parent.parent / 'prediction'))}",
    ]
