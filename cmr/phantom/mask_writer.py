"""The reference mask of a series as NIfTI, in exactly the series' geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from cmr.geometry import StackGeometry, stack_to_nifti_array


def write_mask(path: Path, mask: np.ndarray, geometry: StackGeometry) -> None:
    """Write a uint8 ``[slice, row, column]`` mask with the series' RAS affine.

    The gzip stream carries no timestamp or file name, so the same mask gives the
    same bytes on every run.
    """
    affine = geometry.affine_ras()
    image = nib.Nifti1Image(stack_to_nifti_array(mask.astype(np.uint8)), affine)
    image.set_data_dtype(np.uint8)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))
