"""Reference masks (NIfTI) checked against the series they label.

A mask must lie on the series' voxel grid: same shape and the same RAS affine as
``StackGeometry.affine_ras()`` (NIfTI indexed ``[column, row, slice]``, see
``cmr.geometry``). A mask written in another voxel order of the same grid (axes
flipped or swapped, as some converters do) is reoriented with nibabel; anything else
is rejected with the reason, and the case is then ingested without a mask.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import io_orientation, ornt_transform
from nibabel.spatialimages import SpatialImage

from cmr.geometry import StackGeometry, affines_match, nifti_array_to_stack
from cmr.labels import TissueLabel

MASK_SUFFIXES = (".nii.gz", ".nii")


class MaskMismatch(Exception):
    """The mask cannot be used for its series; the message is the reason."""


def default_mask_path(labels_dir: Path, series_instance_uid: str) -> Path | None:
    """``<labels>/<SeriesInstanceUID>.nii.gz`` (or ``.nii``) when it exists."""
    for suffix in MASK_SUFFIXES:
        candidate = Path(labels_dir) / f"{series_instance_uid}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _corner_distance_mm(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance between where two affines put the corner voxels of a grid."""
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    ).T
    return float(np.linalg.norm((a @ corners - b @ corners)[:3], axis=0).max())


def load_mask(path: Path, geometry: StackGeometry, stack_shape: tuple[int, int, int]) -> np.ndarray:
    """The mask as uint8 ``[slice, row, column]`` on the series' grid, or MaskMismatch."""
    try:
        image = nib.load(path)
        if not isinstance(image, SpatialImage):
            raise TypeError(f"{type(image).__name__} is not a volume")
        data = np.asanyarray(image.dataobj)
    except Exception as error:
        raise MaskMismatch(f"cannot be read as NIfTI ({type(error).__name__}: {error})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise MaskMismatch(f"has {data.ndim} dimensions; a mask is one 3D volume")
    n_slices, n_rows, n_columns = stack_shape
    expected_shape = (n_columns, n_rows, n_slices)
    target = geometry.affine_ras()
    affine = image.affine
    if not (data.shape == expected_shape and affines_match(affine, target)):
        # Same grid in another voxel order? Reorient to the series' axis order and compare.
        transform = ornt_transform(io_orientation(affine), io_orientation(target))
        reoriented = image.as_reoriented(transform)
        candidate = np.asanyarray(reoriented.dataobj).reshape(reoriented.shape[:3])
        if candidate.shape == expected_shape and affines_match(reoriented.affine, target):
            data, affine = candidate, reoriented.affine
        elif data.shape != expected_shape:
            raise MaskMismatch(f"shape {data.shape} [column,row,slice] does not match the series' {expected_shape}")
        else:
            distance = _corner_distance_mm(affine, target, expected_shape)
            raise MaskMismatch(
                f"geometry does not match the series (affine differs by {distance:.2f} mm at the corners)"
            )
    if not np.issubdtype(data.dtype, np.integer) and not np.array_equal(data, np.round(data)):
        raise MaskMismatch("holds non-integer values; a mask holds the integer labels of cmr.labels")
    allowed = {int(label) for label in TissueLabel}
    found = {int(v) for v in np.unique(data)}
    if not found <= allowed:
        raise MaskMismatch(
            f"holds labels {sorted(found - allowed)} outside the cmr.labels convention {sorted(allowed)}"
        )
    return nifti_array_to_stack(data.astype(np.uint8))
