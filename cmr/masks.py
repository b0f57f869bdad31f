"""Reference masks (NIfTI) checked against the series they label.

A mask must lie on the series' voxel grid: same shape and the same RAS affine as
``StackGeometry.affine_ras()`` (NIfTI indexed ``[column, row, slice]``, see
``cmr.geometry``). A mask written in another voxel order of the same grid (axes
flipped or swapped, as some converters do) is reoriented with nibabel; anything else
is rejected with the reason, and the case is then ingested without a mask.

A label file's shape is checked from its header before its data is read
(:func:`open_label_file`, and the series' shape in :func:`load_mask`): a small
``.nii.gz`` can claim, and inflate to, gigabytes.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import io_orientation, ornt_transform
from nibabel.spatialimages import SpatialImage

from cmr.dicom_limits import MAX_COLUMNS, MAX_FRAMES, MAX_ROWS
from cmr.geometry import StackGeometry, affines_match, nifti_array_to_stack
from cmr.labels import TissueLabel

MASK_SUFFIXES = (".nii.gz", ".nii")
# A label file (a mask, a reference map) lies on one series' grid, so no axis is longer
# than a series' can be (cmr.dicom_limits), and its data is at most a uint8 mask
# of the largest series a site decodes (1 GiB of float32 is 256 Mi voxels).
MAX_LABEL_AXIS = max(MAX_ROWS, MAX_COLUMNS, MAX_FRAMES)
MAX_LABEL_FILE_BYTES = 256 << 20


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


def open_label_file(path: Path) -> SpatialImage:
    """A NIfTI label file whose header is within the limits, its data not yet read; MaskMismatch says why not."""
    try:
        image = nib.load(path)
        if not isinstance(image, SpatialImage):
            raise TypeError(f"{type(image).__name__} is not a volume")
        shape = tuple(int(n) for n in image.header.get_data_shape())
        dtype = np.dtype(image.header.get_data_dtype())
    except Exception as error:
        raise MaskMismatch(f"cannot be read as NIfTI ({type(error).__name__}: {error})") from None
    if any(n > MAX_LABEL_AXIS for n in shape) or int(np.prod(shape)) * dtype.itemsize > MAX_LABEL_FILE_BYTES:
        raise MaskMismatch(
            f"header says shape {shape} of {dtype}: beyond the limit for a label file (axes up to "
            f"{MAX_LABEL_AXIS}, {MAX_LABEL_FILE_BYTES >> 20} MiB of data); not read"
        )
    return image


def _volume_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A NIfTI shape as one volume's: trailing unit axes dropped, a 2D image one slice."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return (*shape, 1) if len(shape) == 2 else shape


def load_mask(path: Path, geometry: StackGeometry, stack_shape: tuple[int, int, int]) -> np.ndarray:
    """The mask as uint8 ``[slice, row, column]`` on the series' grid, or MaskMismatch.

    The shape is checked from the header first: only a file holding the series' voxels,
    in some axis order, is read.
    """
    image = open_label_file(path)
    n_slices, n_rows, n_columns = stack_shape
    expected_shape = (n_columns, n_rows, n_slices)
    shape = _volume_shape(tuple(int(n) for n in image.header.get_data_shape()))
    if len(shape) != 3:
        raise MaskMismatch(f"has {len(shape)} dimensions; a mask is one 3D volume")
    if sorted(shape) != sorted(expected_shape):  # no reorientation makes it fit
        raise MaskMismatch(f"shape {shape} [column,row,slice] does not match the series' {expected_shape}")
    try:
        data: np.ndarray = np.asanyarray(image.dataobj).reshape(shape)
    except Exception as error:
        raise MaskMismatch(f"cannot be read as NIfTI ({type(error).__name__}: {error})") from None
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
