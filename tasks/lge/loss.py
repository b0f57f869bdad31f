"""The LGE training loss: Dice + cross-entropy over the three classes.

Scar is a small class (a few per cent of the myocardium, absent in many slices),
so cross-entropy weighs it up, and the Dice part is computed over the whole batch
(``batch=True``) so that a slice without scar does not produce a degenerate
per-slice Dice term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceCELoss

DEFAULT_CLASS_WEIGHTS = (1.0, 1.0, 3.0)  # background, myocardium, scar (cross-entropy)


def segmentation_loss(class_weights: Sequence[float] = DEFAULT_CLASS_WEIGHTS) -> torch.nn.Module:
    """Loss on logits [batch, class, row, col] against labels [batch, 1, row, col]."""
    return DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        weight=torch.tensor(list(class_weights), dtype=torch.float32),
    )


class PerSliceDiceCELoss(torch.nn.Module):
    """Dice + cross-entropy computed slice by slice, then averaged: the loss DP-SGD trains on.

    Opacus clips one gradient per sample, which bounds a patient's influence only if
    each sample's loss depends on that sample alone. ``segmentation_loss`` couples
    the batch twice (Dice over the whole batch; class-weighted cross-entropy divided
    by the batch's total weight), so here both terms are per slice: Dice over the
    slice's own pixels (a slice without scar has a scar Dice loss of 0 when no scar
    is predicted and near 1 when some is) and the weighted cross-entropy normalised by
    the slice's own weight. ``reduction`` is "mean" or "none" (one loss per slice),
    which is what Opacus' ghost clipping switches between.
    """

    class_weights: torch.Tensor  # a buffer (register_buffer), so that it moves with the module

    def __init__(self, class_weights: Sequence[float] = DEFAULT_CLASS_WEIGHTS, reduction: str = "mean") -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=False, reduction="none")
        self.register_buffer("class_weights", torch.tensor(list(class_weights), dtype=torch.float32))
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dice = self.dice(logits, labels).flatten(1).mean(dim=1)
        target = labels[:, 0].long()
        cross_entropy = torch.nn.functional.cross_entropy(logits, target, weight=self.class_weights, reduction="none")
        pixel_weights = self.class_weights[target]
        cross_entropy = cross_entropy.flatten(1).sum(dim=1) / pixel_weights.flatten(1).sum(dim=1)
        per_slice = dice + cross_entropy
        if self.reduction == "none":
            return per_slice
        if self.reduction == "mean":
            return per_slice.mean()
        raise ValueError(f"reduction={self.reduction!r}: 'mean' or 'none'")


def per_slice_segmentation_loss(class_weights: Sequence[float] = DEFAULT_CLASS_WEIGHTS) -> PerSliceDiceCELoss:
    return PerSliceDiceCELoss(class_weights)
