"""The demo's model registry step: every demo signs its model; `--register` also registers it.

A demo has no consortium PKI, so it makes a demo model-signing key pair in OUT/pki
(the same files `cmrfl pki init` writes, kept between demos so that versions
registered by earlier demos still verify) and pins the public key in each demo site
as `cmrfl site init` would. Signing in place costs well under a second; registering
needs a running registry (`cmrfl registry serve`) and is therefore opt-in.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DEMO_MODEL_NAME = "lge-scar"


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


def check_registry_reachable() -> str:
    """Before training: the registry named by MLFLOW_TRACKING_URI answers with these credentials."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        raise ValueError(
            "--register needs a running registry: set MLFLOW_TRACKING_URI (e.g. http://127.0.0.1:5000, "
            "from `cmrfl registry serve`) and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD of its admin"
        )
    try:  # MLflow's client retries a refused connection for minutes; a plain probe says it at once
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10)
    except OSError as error:
        raise ValueError(f"--register: no registry answers at {uri} ({error}); start one with `cmrfl registry serve`") from None
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as error:
        raise ValueError(f"--register: the registry at {uri} does not answer: {error.message.splitlines()[0][:300]}") from None
    return uri


def register_demo_model(run_dir: Path, key_path: Path, model_name: str = DEMO_MODEL_NAME):  # noqa: ANN201
    from mlflow import MlflowClient

    from server.registry.registration import register_run

    return register_run(MlflowClient(check_registry_reachable()), run_dir, model_name, key_path)
