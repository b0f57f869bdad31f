"""The files of one model version: weights, model card (JSON, Markdown) and signature.

Kept apart from registration so that writing them (the demo does, after every run)
does not import MLflow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from server.registry.card import build_model_card, write_model_card
from server.registry.signing import WEIGHTS_FILE, load_signing_key, sign_model_files


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
