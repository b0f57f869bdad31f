"""A site pulls a registered model with its own account and keeps it only if it verifies.

Files come through the registry's model-version artifact route, which needs READ on
the registered model and nothing else (a site account has no access to runs). They
land in a scratch folder inside the site folder and move to
``SITE_DIR/models/MODEL/VERSION/`` only after the signature, the SHA-256 of every
file and the model name in the signed card all check out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request

from client.local_models import PULL_RECORD, models_dir
from client.model_trust import MODEL_FILES, SignatureError, VerifiedModel, load_trusted_key, verify_model_folder

DEFAULT_ALIAS = "approved"
ARTIFACT_ROUTE = "/model-versions/get-artifact"
_REFERENCE = re.compile(r"^(?P<name>[^@:]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|:(?P<version>\d+))?$")


@dataclass(frozen=True)
class ModelReference:
    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str, default_alias: str | None = DEFAULT_ALIAS) -> ModelReference:
        """``MODEL``, ``MODEL@alias`` or ``MODEL:version``."""
        match = _REFERENCE.match(text.strip())
        if not match:
            raise ValueError(f"model {text!r}: expected MODEL, MODEL@ALIAS or MODEL:VERSION")
        alias, version = match["alias"], match["version"]
        return cls(match["name"], alias if alias or version else default_alias, version)

    def __str__(self) -> str:
        return self.name + (f":{self.version}" if self.version else f"@{self.alias}" if self.alias else "")


@dataclass(frozen=True)
class PulledModel:
    name: str
    version: str
    folder: Path
    verified: VerifiedModel


def resolve_version(client: MlflowClient, reference: ModelReference) -> str:
    if reference.version:
        return client.get_model_version(reference.name, reference.version).version
    return client.get_model_version_by_alias(reference.name, reference.alias or DEFAULT_ALIAS).version


def _download(tracking_uri: str, name: str, version: str, filename: str, target: Path) -> None:
    response = http_request(
        get_default_host_creds(tracking_uri),
        ARTIFACT_ROUTE,
        "GET",
        params={"name": name, "version": version, "path": filename},
        stream=True,
    )
    if response.status_code != 200:
        raise MlflowException(
            f"{tracking_uri}: cannot download {filename} of {name} version {version} "
            f"(HTTP {response.status_code}: {response.text[:200]})"
        )
    with target.open("wb") as handle:
        for block in response.iter_content(1 << 20):
            handle.write(block)


def pull_model(tracking_uri: str, reference: ModelReference, site_dir: Path) -> PulledModel:
    """Download ``reference`` with the site's credentials, verify it, keep it in the site folder.

    Credentials are MLflow's: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
    Raises :class:`SignatureError` (and keeps nothing) when the model does not verify.
    """
    site_dir = Path(site_dir)
    key = load_trusted_key(site_dir)  # no pinned key: refuse before downloading anything
    version = resolve_version(MlflowClient(tracking_uri), reference)
    destination = models_dir(site_dir) / reference.name / version
    destination.parent.mkdir(parents=True, exist_ok=True)
    refusal: SignatureError | None = None
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=destination.parent) as scratch:
        incoming = Path(scratch) / version
        incoming.mkdir()
        for filename in MODEL_FILES:
            _download(tracking_uri, reference.name, version, filename, incoming / filename)
        try:
            verified = verify_model_folder(incoming, key, expected_model=reference.name)
        except SignatureError as refused:  # name the version, not the scratch folder about to go
            refusal = SignatureError(str(refused).replace(f"{incoming}/", f"{reference.name} version {version}, "))
        else:
            _keep(incoming, destination, _pull_record(reference, version, tracking_uri, verified))
    if refusal is not None:
        with contextlib.suppress(OSError):
            destination.parent.rmdir()  # only when nothing was ever kept for this model
        raise refusal
    return PulledModel(reference.name, version, destination, verify_model_folder(destination, key, reference.name))


def _pull_record(reference: ModelReference, version: str, tracking_uri: str, verified: VerifiedModel) -> dict:
    return {
        "model": reference.name,
        "version": version,
        "requested": str(reference),
        "registry": tracking_uri,
        "pulled_by": os.environ.get("MLFLOW_TRACKING_USERNAME", ""),
        "pulled_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "weights_sha256": verified.weights_sha256,
        "signer_public_key_sha256": verified.signer_public_key_sha256,
    }


def _keep(incoming: Path, destination: Path, record: dict) -> None:
    """Write where the verified version came from, then move it into place."""
    (incoming / PULL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    if destination.exists():
        shutil.rmtree(destination)
    incoming.replace(destination)


__all__ = ["ModelReference", "PulledModel", "SignatureError", "pull_model"]
