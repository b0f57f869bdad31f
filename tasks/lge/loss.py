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
