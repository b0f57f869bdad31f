"""Per-case LGE metrics: Dice (MONAI), scar burden and scar presence calls.

Definitions (on the case's original grid, over the slices that carry a reference
annotation):
  dice_myocardium   Dice of whole myocardium (healthy ∪ scar); NaN when the
                    reference has no myocardium
  dice_scar         Dice of scar; NaN when the reference has no scar (MONAI's
                    ``ignore_empty``): a scar-free case has no scar overlap to score,
                    false-positive scar shows up in the burden error and the calls
  scar_burden_percent_reference / _predicted
                    100 · scar volume / myocardial volume (voxel volumes from the
                    pixel and slice spacing); the reference is NaN without
                    reference myocardium, the prediction is 0 without predicted
                    myocardium (no scar was predicted)
  scar_burden_abs_error
                    |predicted − reference| in percentage points
  scar_present_reference   any reference scar voxel
  scar_present_predicted   predicted burden ≥ the presence threshold (default 1 %),
                           so a few stray voxels do not make a positive call
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import compute_dice

from tasks.lge.classes import LgeClass

METRIC_NAMES = (
    "dice_myocardium",
    "dice_scar",
    "scar_burden_percent_reference",
    "scar_burden_percent_predicted",
    "scar_burden_abs_error",
)
SUMMARY_METRICS = ("dice_myocardium", "dice_scar", "scar_burden_abs_error")


def _myocardium_and_scar(classes: np.ndarray) -> torch.Tensor:
    """[1, 2, ...] binary channels: whole myocardium, scar (not mutually exclusive)."""
    labels = torch.as_tensor(np.asarray(classes))
    channels = torch.stack([labels >= LgeClass.MYOCARDIUM, labels == LgeClass.SCAR])
    return channels[None].float()


def dice_myocardium_and_scar(reference: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Dice of whole myocardium and of scar between two LGE class masks (NaN: empty reference)."""
    if reference.shape != predicted.shape:
        raise ValueError(f"reference {reference.shape} and prediction {predicted.shape} differ in shape")
    dice = compute_dice(
        _myocardium_and_scar(predicted), _myocardium_and_scar(reference), include_background=True, ignore_empty=True
    )[0]
    return float(dice[0]), float(dice[1])


def scar_burden_percent(classes: np.ndarray, voxel_volume_mm3: float) -> float:
    """100 · scar volume / myocardial volume; NaN when there is no myocardium."""
    myocardium_mm3 = float(np.count_nonzero(classes >= LgeClass.MYOCARDIUM)) * voxel_volume_mm3
    scar_mm3 = float(np.count_nonzero(classes == LgeClass.SCAR)) * voxel_volume_mm3
    return math.nan if myocardium_mm3 == 0 else 100.0 * scar_mm3 / myocardium_mm3


def case_metrics(
    reference: np.ndarray,
    predicted: np.ndarray,
    voxel_volume_mm3: float,
    scar_presence_threshold_percent: float = 1.0,
) -> tuple[dict[str, float], dict[str, bool]]:
    """Metrics and presence calls of one case from its reference and predicted LGE classes."""
    dice_myocardium, dice_scar = dice_myocardium_and_scar(reference, predicted)
    burden_reference = scar_burden_percent(reference, voxel_volume_mm3)
    burden_predicted = scar_burden_percent(predicted, voxel_volume_mm3)
    if math.isnan(burden_predicted):
        burden_predicted = 0.0
    metrics = {
        "dice_myocardium": dice_myocardium,
        "dice_scar": dice_scar,
        "scar_burden_percent_reference": burden_reference,
        "scar_burden_percent_predicted": burden_predicted,
        "scar_burden_abs_error": abs(burden_predicted - burden_reference),
    }
    calls = {
        "scar_present_reference": bool(np.any(reference == LgeClass.SCAR)),
        "scar_present_predicted": bool(burden_predicted >= scar_presence_threshold_percent),
    }
    return metrics, calls


def nan_mean(values: list[float]) -> float:
    """Mean of the finite values; NaN when there are none (a metric undefined everywhere)."""
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan
