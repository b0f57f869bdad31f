"""Register a finished run's final model as a signed, carded model version.

The version's files (weights, model card as JSON and Markdown, detached signature)
are logged as the run's ``registered-model`` artifacts and the version points at
them; sites fetch them file by file through the registry's model-version artifact
route, which needs READ on the registered model and nothing else.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from server.registry.model_files import write_signed_model
from server.registry.signing import WEIGHTS_FILE, file_sha256, load_signing_key
from server.registry.tracking import EXPERIMENT, log_run_dir

MODEL_ARTIFACT_PATH = "registered-model"
CANDIDATE, APPROVED = "candidate", "approved"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    weights_sha256: str
    card_sha256: str


def register_run(
    client: MlflowClient, run_dir: Path, model_name: str, signing_key_path: Path, experiment_name: str = EXPERIMENT
) -> RegisteredVersion:
    load_signing_key(signing_key_path)
    run_id = log_run_dir(client, run_dir, experiment_name)
    with tempfile.TemporaryDirectory(prefix="cmrfl-register-") as scratch:
        folder = write_signed_model(run_dir, model_name, signing_key_path, Path(scratch) / MODEL_ARTIFACT_PATH, run_id)
        client.log_artifacts(run_id, str(folder), MODEL_ARTIFACT_PATH)
        weights_sha256, card_sha256 = file_sha256(folder / WEIGHTS_FILE), file_sha256(folder / "model-card.json")
    try:
        client.create_registered_model(
            model_name,
            description="Federated cmrfl model; every version carries a model card and a consortium signature.",
        )
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    run = client.get_run(run_id)
    version = client.create_model_version(
        model_name,
        source=f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}",
        run_id=run_id,
        tags={"weights_sha256": weights_sha256, "card_sha256": card_sha256},
        description=f"Final model of {Path(run_dir).resolve().name}; see model-card.md among its files.",
    )
    _wait_until_ready(client, model_name, version.version)
    client.set_registered_model_alias(model_name, CANDIDATE, version.version)
    return RegisteredVersion(model_name, version.version, run_id, weights_sha256, card_sha256)


def _wait_until_ready(client: MlflowClient, name: str, version: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (status := client.get_model_version(name, version).status) == "PENDING_REGISTRATION":
        if time.monotonic() > deadline:
            raise TimeoutError(f"model {name} version {version} still pending after {timeout_s:.0f} s")
        time.sleep(0.5)
    if status != "READY":
        raise RuntimeError(f"model {name} version {version}: registration ended as {status}")


def promote(client: MlflowClient, model_name: str, version: str) -> None:
    """Move the alias ``approved`` to ``version`` (which must exist)."""
    client.get_model_version(model_name, version)  # raises naming the model and version if absent
    client.set_registered_model_alias(model_name, APPROVED, version)
