"""The T1-mapping network: a small 2D MONAI U-Net from a MOLLI series to a T1 map.

Input: the frames and their inversion times (``tasks.mapping.data.network_input``);
output: one channel, T1 / ``T1_SCALE_MS``. No normalisation layers: instance or
group normalisation would subtract each channel's spatial mean after the first
convolution and so erase the constant inversion-time channels, and BatchNorm mixes
samples, which DP-SGD (Opacus' per-sample gradients) cannot have.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet

from tasks.mapping.data import INPUT_CHANNELS_PER_FRAME


def build_mapping_unet(max_frames: int, channels: Sequence[int] = (16, 32, 64, 128)) -> torch.nn.Module:
    """2D U-Net, 3·max_frames input channels (``tasks.mapping.data.network_input``), 1 output channel."""
    return UNet(
        spatial_dims=2,
        in_channels=INPUT_CHANNELS_PER_FRAME * max_frames,
        out_channels=1,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=0,
        act=("leakyrelu", {"negative_slope": 0.1, "inplace": False}),
        # MONAI's UNet annotates norm as tuple | str, but passes it to Convolution, which takes None (no norm)
        norm=None,  # type: ignore[arg-type]
    )


def size_multiple(channels: Sequence[int]) -> int:
    """Image sides must be multiples of this for the U-Net's down- and up-sampling to line up."""
    return 2 ** (len(channels) - 1)
