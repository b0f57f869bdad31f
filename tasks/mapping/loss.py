"""The T1-mapping loss: weighted L1 in units of T1_SCALE_MS, per series.

L1 rather than L2: a few pixels whose reference T1 the frames cannot support (at
tissue borders moved by motion) should not dominate. Each series' loss is
normalised by its own weights, so that one series' loss depends on that series
alone, which is what DP-SGD's per-sample clipping needs; the batch loss is the mean.
"""

from __future__ import annotations

import torch


class WeightedL1Loss(torch.nn.Module):
    """Loss of predictions [batch, 1, row, col] against targets [batch, 2, row, col] (T1, weight)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction  # Opacus' ghost clipping switches it to "none"

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        reference, weights = target[:, 0], target[:, 1]
        absolute = (predicted[:, 0].float() - reference).abs() * weights
        per_series = absolute.flatten(1).sum(dim=1) / weights.flatten(1).sum(dim=1).clamp_min(1e-6)
        if self.reduction == "none":
            return per_series
        if self.reduction == "mean":
            return per_series.mean()
        raise ValueError(f"reduction={self.reduction!r}: 'mean' or 'none'")
