"""Run a pulled, verified model on one local DICOM series (``cmrfl predict``).

Nothing here leaves the site. The model is the consortium's approved version unless a
version is named (client/local_models.py says which is approved and what to warn about
otherwise), the task's own network with the signed weights, verified again right before
loading; what it writes is the task's to say (``Task.predict``): the LGE task writes a
scar segmentation, the scar burden and an overlay.
"""

from __future__ import annotations

from pathlib import Path

import torch

from client.local_models import LocalModel
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


def predict_series(chosen: LocalModel, series_dir: Path, out_dir: Path, device: str = "auto") -> Prediction:
    """``chosen`` (``load_local_model``: verified, approved or not) applied to one series."""
    task, model = load_model(chosen.verified)
    approval = chosen.approval if chosen.approved else None
    provenance = {
        "name": chosen.name,
        "version": chosen.version,
        "weights_sha256": chosen.verified.weights_sha256,
        "signature": "verified against the site's pinned model-signing key",
        "approved": chosen.approved,
        "approval": None if approval is None else {"approved_utc": approval.approved_utc, "by": approval.approved_by},
    }
    return task.predict(model, Path(series_dir), Path(out_dir), pick_device(device), provenance)
