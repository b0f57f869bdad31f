"""Geometry of a short-axis stack, shared by the phantom writer and site ingest.

A stack is held as a numpy array indexed ``[slice, row, column]`` (the order a
person reads DICOM in). On disk as NIfTI it is indexed ``[column, row, slice]``
with a RAS affine derived from the DICOM tags, which is what dcm2niix-style
converters and nibabel users expect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# DICOM patient coordinates are LPS; NIfTI affines are RAS.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class StackGeometry:
    """Where each voxel of a ``[slice, row, column]`` stack lies, in millimetres (LPS)."""

    image_orientation: tuple[float, float, float, float, float, float]
    first_position: tuple[float, float, float]  # ImagePositionPatient of slice 0
    pixel_spacing: tuple[float, float]  # (between rows, between columns), DICOM order
    slice_step: tuple[float, float, float]  # vector from one slice origin to the next

    @property
    def slice_spacing(self) -> float:
        return float(np.linalg.norm(self.slice_step))

    def slice_position(self, index: int) -> tuple[float, float, float]:
        x, y, z = (float(v) for v in np.asarray(self.first_position) + index * np.asarray(self.slice_step))
        return x, y, z

    def affine_lps(self) -> np.ndarray:
        """4x4 affine mapping (column, row, slice) indices to LPS millimetres."""
        row_direction = np.asarray(self.image_orientation[:3])  # along a row: +column
        column_direction = np.asarray(self.image_orientation[3:])  # along a column: +row
        affine = np.eye(4)
        affine[:3, 0] = row_direction * self.pixel_spacing[1]
        affine[:3, 1] = column_direction * self.pixel_spacing[0]
        affine[:3, 2] = np.asarray(self.slice_step)
        affine[:3, 3] = np.asarray(self.first_position)
        return affine

    def affine_ras(self) -> np.ndarray:
        return _LPS_TO_RAS @ self.affine_lps()


def stack_to_nifti_array(stack: np.ndarray) -> np.ndarray:
    """``[slice, row, column]`` → NIfTI ``[column, row, slice]``."""
    return np.ascontiguousarray(np.transpose(stack, (2, 1, 0)))


def nifti_array_to_stack(data: np.ndarray) -> np.ndarray:
    """NIfTI ``[column, row, slice]`` → ``[slice, row, column]``."""
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0)))


def affines_match(a: np.ndarray, b: np.ndarray, tolerance_mm: float = 0.05) -> bool:
    """True when two affines put every voxel of a stack in the same place."""
    return bool(np.allclose(a, b, atol=tolerance_mm))
