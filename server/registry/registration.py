"""Register a finished run's final model as a signed, carded model version; approve one.

The version's files (weights, model card as JSON and Markdown, detached signature)
are logged as the run's ``registered-model`` artifacts and the version points at
them; sites fetch them file by file through the registry's model-version artifact
route, which needs READ on the registered model and nothing else. Once MLflow has
numbered the version, a signed release record (``model-release.json``) joins them: it
binds the files to this model name and this version number.

Approval is a signed record too (``promote``), kept in the version's tag
``cmrfl.approval``; the alias ``approved`` only points at it.
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
from server.registry.signing import (
    CARD_FILE,
    RELEASE_FILE,
    RELEASE_FORMAT,
    WEIGHTS_FILE,
    RecordError,
    approval_record,
    file_sha256,
    load_signing_key,
    sign_record,
    verify_record,
    write_release,
)
from server.registry.tracking import EXPERIMENT, log_run_dir

MODEL_ARTIFACT_PATH = "registered-model"
CANDIDATE, APPROVED = "candidate", "approved"
APPROVAL_TAG = "cmrfl.approval"  # the signed approval of a version; sites read it with READ access


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
    key = load_signing_key(signing_key_path)
    run_id = log_run_dir(client, run_dir, experiment_name)
    with tempfile.TemporaryDirectory(prefix="cmrfl-register-") as scratch:
        folder = write_signed_model(run_dir, model_name, signing_key_path, Path(scratch) / MODEL_ARTIFACT_PATH, run_id)
        client.log_artifacts(run_id, str(folder), MODEL_ARTIFACT_PATH)
        weights_sha256, card_sha256 = file_sha256(folder / WEIGHTS_FILE), file_sha256(folder / CARD_FILE)
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
        release = write_release(folder, model_name, version.version, key)  # the version's number exists only now
        client.log_artifact(run_id, str(release), MODEL_ARTIFACT_PATH)
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


def promote(client: MlflowClient, model_name: str, version: str, signing_key_path: Path, approved_by: str) -> dict:
    """Sign the approval of ``version`` (its signed release must check out), then move the alias ``approved``.

    Returns the approval record.
    """
    key = load_signing_key(signing_key_path)
    run_id = client.get_model_version(model_name, version).run_id  # raises naming the model and version if absent
    source = f"{model_name} version {version}'s {RELEASE_FILE}"
    if not run_id or RELEASE_FILE not in {
        Path(a.path).name for a in client.list_artifacts(run_id, MODEL_ARTIFACT_PATH)
    }:
        raise RecordError(f"{source}: missing (registered before releases were signed); register the run again")
    with tempfile.TemporaryDirectory(prefix="cmrfl-promote-") as scratch:
        path = client.download_artifacts(run_id, f"{MODEL_ARTIFACT_PATH}/{RELEASE_FILE}", scratch)
        release = verify_record(Path(path).read_bytes(), key, source, RELEASE_FORMAT)
    if (release.get("model"), release.get("version")) != (model_name, version):
        raise RecordError(f"{source}: signed for {release.get('model')} version {release.get('version')}")
    approval = approval_record(model_name, version, str(release["weights_sha256"]), approved_by)
    client.set_model_version_tag(model_name, version, APPROVAL_TAG, sign_record(approval, key))
    client.set_registered_model_alias(model_name, APPROVED, version)
    return approval
