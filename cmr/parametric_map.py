"""A parametric map as NIfTI on its source series' grid, and myocardial statistics from a label mask.

The map of one slice is written ``[column, row, 1]`` float32 with the series'
RAS affine (cmr.geometry), so nibabel users and the reference masks of
cmr.masks line up with it. Myocardium is ``cmr.labels.MYOCARDIAL_LABELS``
(healthy myocardium and scar), the blood pool ``LV_BLOOD_POOL``.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cmr.geometry import StackGeometry, stack_to_nifti_array
from cmr.labels import MYOCARDIAL_LABELS, TissueLabel
from cmr.masks import load_mask


@dataclass(frozen=True)
class RegionStatistics:
    n_pixels: int  # with a valid value
    n_invalid: int  # in the region, but no valid value (fit failed)
    mean: float
    sd: float
    median: float


def write_parametric_map(path: Path, values: np.ndarray, geometry: StackGeometry) -> None:
    """Write a [row, col] map (float32; NaN stays NaN) with ``geometry``'s RAS affine."""
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: the map is written as NIfTI; name it .nii.gz or .nii")
    affine = geometry.affine_ras()
    image = nib.Nifti1Image(stack_to_nifti_array(np.asarray(values, dtype=np.float32)[None]), affine)
    image.set_data_dtype(np.float32)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = image.to_bytes()
    path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0) if path.name.endswith(".gz") else data)


def load_label_mask(path: Path, geometry: StackGeometry, shape: tuple[int, int]) -> np.ndarray:
    """The [row, col] cmr.labels mask of one slice; cmr.masks.MaskMismatch says why not."""
    return load_mask(Path(path), geometry, (1, *shape))[0]


def myocardium(labels: np.ndarray) -> np.ndarray:
    return np.isin(labels, [int(label) for label in MYOCARDIAL_LABELS])


def blood_pool(labels: np.ndarray) -> np.ndarray:
    return labels == TissueLabel.LV_BLOOD_POOL


def region_statistics(values: np.ndarray, region: np.ndarray) -> RegionStatistics:
    inside = np.asarray(values, dtype=np.float64)[np.asarray(region, dtype=bool)]
    finite = inside[np.isfinite(inside)]
    if finite.size == 0:
        return RegionStatistics(0, int(inside.size), float("nan"), float("nan"), float("nan"))
    return RegionStatistics(
        n_pixels=int(finite.size),
        n_invalid=int(inside.size - finite.size),
        mean=float(finite.mean()),
        sd=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        median=float(np.median(finite)),
    )
