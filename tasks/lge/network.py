"""The LGE segmentation network: a small 2D MONAI U-Net that DP-SGD can train.

Opacus needs per-sample gradients, so there is no BatchNorm (it mixes samples):
instance normalisation with learnable affine parameters and a parameter-free
LeakyReLU instead, both of which Opacus supports natively.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet

from tasks.lge.classes import NUM_CLASSES


def build_unet(
    channels: Sequence[int] = (16, 32, 64, 128),
    num_res_units: int = 0,
) -> torch.nn.Module:
    """2D U-Net, 1 input channel (LGE magnitude), one output channel per LgeClass (logits)."""
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=NUM_CLASSES,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        act=("leakyrelu", {"negative_slope": 0.1, "inplace": False}),
        norm=("instance", {"affine": True}),
    )
