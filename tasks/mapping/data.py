"""From MOLLI series to network tensors, and the synthetic motion that training adds.

Network input (``network_input``), for a series of F ≤ ``max_frames`` frames, in
three blocks of ``max_frames`` channels (zero for frames the series does not have):

* the frames in order of inversion time, divided by the series' 99th-percentile
  magnitude (scanner gain and coil scaling vary): anatomy, to find the heart;
* the same frames divided pixel by pixel by that pixel's largest magnitude over the
  frames (floored at ``PIXEL_SCALE_FLOOR``): each pixel's recovery curve on its own
  scale, since T1 is in the curve's shape over time, not in its height;
* each frame's inversion time / ``TIME_SCALE_MS`` as a constant image. Inversion
  times depend on the heart rate (MOLLI's later inversions fall one RR interval
  apart), so the network is told them rather than left to assume one heart rate.

Target: T1 / ``T1_SCALE_MS`` with a per-pixel weight (``pixel_weights``): 1 where the
reference is defined, more on the blood pool and most on the myocardium, 0 where the
reference is undefined (0 or not finite).

Motion (``random_frame_motion``): each frame is moved on its own by a random
in-plane translation and rotation, as breathing and imperfect breath-holds move the
heart between the frames of one MOLLI series, while the reference map stays where it
was. MOCOnet (UK Biobank T1 maps) was trained this way: the network learns to read T1
from misregistered frames instead of needing a registration first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from cmr.labels import MYOCARDIAL_LABELS, TissueLabel
from cmr.mapping_store import T1MappingCase

T1_SCALE_MS = 1000.0
TIME_SCALE_MS = 1000.0
DEFAULT_MAX_FRAMES = 11  # 5(3)3 has 8 frames, 4(1)3(1)2 has 9; room for longer schemes
INPUT_CHANNELS_PER_FRAME = 3  # series-scaled frame, pixel-scaled frame, inversion time
PIXEL_SCALE_FLOOR = 0.05  # of the series' 99th percentile: background noise is not blown up


def network_input(
    frames: np.ndarray | torch.Tensor, inversion_times_ms: Sequence[float] | np.ndarray, max_frames: int
) -> torch.Tensor:
    """[3·max_frames, row, col] float32 network input of one series (see the module docstring)."""
    frames = torch.as_tensor(np.asarray(frames, dtype=np.float32))
    times = np.asarray(inversion_times_ms, dtype=np.float64)
    if frames.ndim != 3:
        raise ValueError(f"frames must be [frame, row, col], got shape {tuple(frames.shape)}")
    if times.shape != (frames.shape[0],):
        raise ValueError(f"{times.size} inversion times for {frames.shape[0]} frames")
    if not np.all(np.isfinite(times)):
        raise ValueError(f"inversion times must be finite, got {times.tolist()}")
    if frames.shape[0] > max_frames:
        raise ValueError(f"{frames.shape[0]} frames; this network takes at most {max_frames}")
    order = np.argsort(times, kind="stable")
    frames, times = frames[torch.as_tensor(order)], times[order]
    scale = float(torch.quantile(frames.abs().flatten().float(), 0.99)) if frames.numel() else 0.0
    frames = frames / scale if scale > 0 else frames
    # Each pixel's recovery curve on its own scale: T1 is in the curve's shape, not its height.
    curves = frames / frames.abs().amax(dim=0, keepdim=True).clamp_min(PIXEL_SCALE_FLOOR)
    rows, columns = frames.shape[1:]
    channels = torch.zeros((INPUT_CHANNELS_PER_FRAME * max_frames, rows, columns), dtype=torch.float32)
    n = frames.shape[0]
    channels[:n] = frames
    channels[max_frames : max_frames + n] = curves
    channels[2 * max_frames : 2 * max_frames + n] = torch.as_tensor(times / TIME_SCALE_MS, dtype=torch.float32)[
        :, None, None
    ]
    return channels


def pixel_weights(
    reference_t1_ms: np.ndarray, tissue_mask: np.ndarray | None, blood_weight: float, myocardium_weight: float
) -> np.ndarray:
    """Loss weight per pixel: 0 where the reference is undefined, 1 elsewhere, more on the heart.

    The myocardium, a few pixels thick and the tissue whose T1 is reported, weighs most:
    otherwise the loss is cheapest with a map that blurs it into the blood pool.
    """
    defined = np.isfinite(reference_t1_ms) & (reference_t1_ms > 0)
    weights = defined.astype(np.float32)
    if tissue_mask is not None:
        weights[defined & (tissue_mask == TissueLabel.LV_BLOOD_POOL)] = blood_weight
        weights[defined & np.isin(tissue_mask, MYOCARDIAL_LABELS)] = myocardium_weight
    return weights


def network_target(case: T1MappingCase, blood_weight: float, myocardium_weight: float) -> torch.Tensor:
    """[2, row, col]: T1 / T1_SCALE_MS (0 where undefined) and the pixel weights."""
    if case.reference_t1_ms is None:
        raise ValueError(f"case {case.entry.case_id}: no reference T1 map; it cannot be trained on or scored")
    reference = np.nan_to_num(case.reference_t1_ms, nan=0.0, posinf=0.0, neginf=0.0)
    weights = pixel_weights(case.reference_t1_ms, case.tissue_mask, blood_weight, myocardium_weight)
    return torch.as_tensor(np.stack([reference / T1_SCALE_MS * (weights > 0), weights]).astype(np.float32))


def pad_or_crop(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre crop or zero-pad the last two axes to ``size`` (the heart is near the centre)."""
    rows, columns = image.shape[-2:]
    out = image.new_zeros((*image.shape[:-2], *size))
    r0, c0 = max((rows - size[0]) // 2, 0), max((columns - size[1]) // 2, 0)  # crop offsets
    R0, C0 = max((size[0] - rows) // 2, 0), max((size[1] - columns) // 2, 0)  # pad offsets
    h, w = min(rows, size[0]), min(columns, size[1])
    out[..., R0 : R0 + h, C0 : C0 + w] = image[..., r0 : r0 + h, c0 : c0 + w]
    return out


def random_frame_motion(
    images: torch.Tensor,
    n_frames: int,
    max_shift_px: float,
    max_rotation_deg: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Move each of the first ``n_frames`` image channels by its own random rigid motion.

    ``images``: [channel, row, col] network input; both frame blocks move alike (the
    inversion-time channels are constant). Shifts are uniform in ±``max_shift_px`` per
    axis, rotations in ±``max_rotation_deg`` about the image centre; bilinear, zeros
    outside.
    """
    if n_frames == 0 or (max_shift_px <= 0 and max_rotation_deg <= 0):
        return images
    rows, columns = images.shape[-2:]
    angles = (torch.rand(n_frames, generator=generator) * 2 - 1) * math.radians(max_rotation_deg)
    shifts = (torch.rand((n_frames, 2), generator=generator) * 2 - 1) * max_shift_px
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros((n_frames, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    # affine_grid works in [-1, 1] coordinates: a shift of s pixels is 2s/size.
    theta[:, 0, 2] = 2 * shifts[:, 1] / columns
    theta[:, 1, 2] = 2 * shifts[:, 0] / rows
    grid = torch.nn.functional.affine_grid(theta, [n_frames, 1, rows, columns], align_corners=False)
    max_frames = images.shape[0] // INPUT_CHANNELS_PER_FRAME
    frame_channels = [block * max_frames + frame for block in range(2) for frame in range(n_frames)]
    moved = torch.nn.functional.grid_sample(
        images[frame_channels].reshape(2, n_frames, rows, columns).transpose(0, 1),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    result = images.clone()
    result[frame_channels] = moved.transpose(0, 1).reshape(2 * n_frames, rows, columns)
    return result


class SeriesTrainingSet(torch.utils.data.Dataset):
    """Training items (network input, target), one per MOLLI series or one per patient.

    ``groups``: the item → series indices it draws from. One group per series trains
    on series; one group per patient (DP-SGD) draws one of the patient's series per
    access, so that a patient is one record however many series it has. Each access
    moves the frames, with probability ``motion_probability``, by fresh synthetic
    motion (up to ``max_shift_px[series]`` and ``max_rotation_deg``) and returns tensors cropped or padded to ``size``.
    """

    def __init__(
        self,
        inputs: Sequence[torch.Tensor],
        targets: Sequence[torch.Tensor],
        n_frames: Sequence[int],
        groups: Sequence[Sequence[int]],
        size: tuple[int, int],
        max_shift_px: Sequence[float],
        max_rotation_deg: float,
        seed: int,
        motion_probability: float = 1.0,
    ) -> None:
        self.inputs, self.targets, self.n_frames = list(inputs), list(targets), list(n_frames)
        self.groups = [list(group) for group in groups if group]
        self.size, self.max_shift_px, self.max_rotation_deg = size, list(max_shift_px), max_rotation_deg
        self.motion_probability = motion_probability
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        group = self.groups[index]
        series = group[int(torch.randint(len(group), (1,), generator=self._generator))] if len(group) > 1 else group[0]
        image = self.inputs[series]
        if float(torch.rand(1, generator=self._generator)) < self.motion_probability:
            image = random_frame_motion(
                image, self.n_frames[series], self.max_shift_px[series], self.max_rotation_deg, self._generator
            )
        return pad_or_crop(image, self.size), pad_or_crop(self.targets[series], self.size)


def groups_by(keys: Sequence[str]) -> list[list[int]]:
    """Indices grouped by key, in order of first appearance."""
    grouped: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        grouped.setdefault(key, []).append(index)
    return list(grouped.values())
