"""The files of one model version: weights, model card (JSON, Markdown) and signature.

Kept apart from registration so that writing them (the demo does, after every run)
does not import MLflow. ``write_released_model`` writes a version as a site holds it once
pulled (with its release record and, if approved, its approval), for a site that gets
its models by hand rather than from the registry.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from server.registry.card import build_model_card, write_model_card
from server.registry.signing import (
    APPROVAL_FILE,
    WEIGHTS_FILE,
    approval_record,
    file_sha256,
    load_signing_key,
    sign_model_files,
    sign_record,
    write_release,
)


def write_signed_model(
    run_dir: Path, model_name: str, signing_key_path: Path, folder: Path, tracking_run_id: str | None = None
) -> Path:
    """Weights, card (JSON, Markdown) and signature of ``run_dir``'s final model into ``folder``."""
    key = load_signing_key(signing_key_path)  # first: a bad key fails before any work
    card = build_model_card(run_dir, model_name, tracking_run_id)
    folder.mkdir(parents=True, exist_ok=True)
    if folder.resolve() != Path(run_dir).resolve():  # the demo signs in place, beside the run's outputs
        shutil.copyfile(Path(run_dir) / WEIGHTS_FILE, folder / WEIGHTS_FILE)
    write_model_card(card, folder)
    sign_model_files(folder, key)
    return folder


def write_released_model(
    run_dir: Path, model_name: str, version: str, signing_key_path: Path, folder: Path, approved_by: str | None = None
) -> Path:
    """``run_dir``'s model as version ``version`` of ``model_name``, as a site keeps it in SITE_DIR/models/NAME/VERSION.

    Signed files and release record; with ``approved_by``, also the consortium's signed approval.
    """
    write_signed_model(run_dir, model_name, signing_key_path, folder)
    key = load_signing_key(signing_key_path)
    write_release(folder, model_name, version, key)
    if approved_by is not None:
        approval = approval_record(model_name, version, file_sha256(folder / WEIGHTS_FILE), approved_by)
        (folder / APPROVAL_FILE).write_text(sign_record(approval, key))
    return folder
