"""Run a pulled, verified model on one local DICOM series (``cmrfl predict``).

Nothing here leaves the site. The model is the task's own network with the signed
weights (verified again right before loading); what it writes is the task's to say
(``Task.predict``): the LGE task writes a scar segmentation, the scar burden and an
overlay.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from client.local_models import PULL_RECORD, load_verified_local_model
from client.model_trust import WEIGHTS_FILE, VerifiedModel
from cmr.series_folder import SeriesError
from tasks import get_task
from tasks.base import Prediction, Task, pick_device

__all__ = ["SeriesError", "load_model", "predict_series"]


def load_model(verified: VerifiedModel) -> tuple[Task, torch.nn.Module]:
    """The task the card names, sized as the card says, with the verified weights."""
    card = verified.card
    task = get_task(card["task"]["name"]).with_network(card.get("network", {}))
    checkpoint = torch.load(verified.folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model = task.build_model()
    model.load_state_dict(checkpoint["state_dict"])
    return task, model.eval()


def predict_series(
    site_dir: Path, model_name: str, series_dir: Path, out_dir: Path, version: str | None = None, device: str = "auto"
) -> Prediction:
    verified = load_verified_local_model(site_dir, model_name, version)
    task, model = load_model(verified)
    pulled = verified.folder / PULL_RECORD
    model_version = json.loads(pulled.read_text())["version"] if pulled.is_file() else verified.folder.name
    provenance = {
        "name": model_name,
        "version": model_version,
        "weights_sha256": verified.weights_sha256,
        "signature": "verified against the site's pinned model-signing key",
    }
    return task.predict(model, Path(series_dir), Path(out_dir), pick_device(device), provenance)
