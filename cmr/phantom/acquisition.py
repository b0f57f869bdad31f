"""Where the scanner puts the short-axis stack, and the per-examination settings.

The stack runs from base to apex. Slices are parallel, oblique short-axis planes
whose normal (row direction × column direction) is the LV long axis pointing
to the apex, so consecutive ``ImagePositionPatient`` values step along the
normal by ``SpacingBetweenSlices`` and ``InstanceNumber`` rises with them. The
image shows anterior at the top and the septum / right ventricle on the image
right (the mirror of the usual radiological display, which would need slices
stepping against the normal). Patient coordinates are DICOM LPS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr.geometry import StackGeometry
from cmr.phantom import knobs
from cmr.phantom.anatomy import HeartPlan
from cmr.phantom.spec import ScannerProfile

# Typical LV long axis (base → apex) in LPS: towards the patient's left, anterior, inferior.
_NOMINAL_LONG_AXIS = np.array([0.62, -0.55, -0.56])
_ANTERIOR = np.array([0.0, -1.0, 0.0])


@dataclass(frozen=True)
class Acquisition:
    geometry: StackGeometry  # built from exactly the values written to DICOM
    slice_positions: tuple[tuple[float, float, float], ...]  # ImagePositionPatient per slice
    slice_locations: tuple[float, ...]
    slice_z_mm: tuple[float, ...]  # slice centres along the LV axis, from the base plane
    heart_offset_mm: tuple[float, float]  # LV axis from the image centre (along columns, rows)
    rows: int
    columns: int
    pixel_spacing_mm: float
    slice_thickness_mm: float
    inversion_time_ms: float
    snr_blood: float
    receiver_gain: float

    @property
    def n_slices(self) -> int:
        return len(self.slice_z_mm)

    def heart_centre_px(self) -> tuple[float, float]:
        """(row, column) of the LV axis in the image."""
        return (
            (self.rows - 1) / 2 + self.heart_offset_mm[1] / self.pixel_spacing_mm,
            (self.columns - 1) / 2 + self.heart_offset_mm[0] / self.pixel_spacing_mm,
        )


def _tilted(axis: np.ndarray, rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    perpendicular = np.cross(axis, rng.normal(size=3))
    perpendicular /= np.linalg.norm(perpendicular)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    tilted = axis * np.cos(angle) + perpendicular * np.sin(angle)
    return tilted / np.linalg.norm(tilted)


def slice_levels(rng: np.random.Generator, heart: HeartPlan, spacing_mm: float) -> tuple[float, ...]:
    """Slice centres along the long axis: from just below the base towards the apex."""
    first = float(rng.uniform(*knobs.BASE_PLANE_MARGIN_MM))
    last_allowed = heart.epicardial_apex_mm - knobs.APEX_MARGIN_MM
    n = int(np.floor((last_allowed - first) / spacing_mm)) + 1
    n = int(np.clip(n, *knobs.N_SLICES))
    if first + (n - 1) * spacing_mm > last_allowed:  # a short heart: start higher
        first = max(-4.0, last_allowed - (n - 1) * spacing_mm)
    return tuple(round(first + k * spacing_mm, 4) for k in range(n))


def plan_acquisition(
    rng: np.random.Generator,
    scanner: ScannerProfile,
    heart: HeartPlan,
    myocardium_null_ti_ms: float,
    snr_scale: float = 1.0,
) -> Acquisition:
    spacing = scanner.spacing_between_slices_mm
    levels = slice_levels(rng, heart, spacing)
    long_axis = _tilted(_NOMINAL_LONG_AXIS, rng, knobs.LONG_AXIS_TILT_DEG)
    anterior = _ANTERIOR - (_ANTERIOR @ long_axis) * long_axis
    anterior /= np.linalg.norm(anterior)
    row_direction = np.cross(long_axis, anterior)  # image +column: septal side
    column_direction = -anterior  # image +row: posterior
    orientation = tuple(round(float(v), 6) for v in (*row_direction, *column_direction))
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    normal /= np.linalg.norm(normal)

    pixel = scanner.pixel_spacing_mm
    rows, columns = scanner.rows, scanner.columns
    limit = knobs.HEART_OFFSET_FROM_IMAGE_CENTRE_MM
    offset = (float(rng.uniform(-limit, limit)), float(rng.uniform(-limit, limit)))
    lv_base_centre = np.array([20.0, 15.0, -30.0]) + rng.normal(0.0, 12.0, size=3)
    image_centre = (
        lv_base_centre
        + levels[0] * normal
        - offset[0] * np.asarray(orientation[:3])
        - offset[1] * np.asarray(orientation[3:])
    )
    first = (
        image_centre
        - (columns - 1) / 2 * pixel * np.asarray(orientation[:3])
        - (rows - 1) / 2 * pixel * np.asarray(orientation[3:])
    )
    first_position = tuple(round(float(v), 4) for v in first)
    step = tuple(float(v) for v in spacing * normal)
    geometry = StackGeometry(
        image_orientation=orientation,  # type: ignore[arg-type]
        first_position=first_position,  # type: ignore[arg-type]
        pixel_spacing=(pixel, pixel),
        slice_step=step,  # type: ignore[arg-type]
    )
    positions = tuple(tuple(round(v, 4) for v in geometry.slice_position(k)) for k in range(len(levels)))
    locations = tuple(round(float(np.dot(p, normal)), 4) for p in positions)
    ti_offset = scanner.ti_offset_ms + rng.normal(0.0, knobs.TI_CASE_JITTER_SD_MS)
    inversion_time = myocardium_null_ti_ms + float(np.clip(ti_offset, *knobs.TI_OFFSET_CLIP_MS))
    snr = scanner.snr_blood * max(0.5, 1.0 + rng.normal(0.0, knobs.SNR_CASE_JITTER_SD)) * snr_scale
    return Acquisition(
        geometry=geometry,
        slice_positions=positions,  # type: ignore[arg-type]
        slice_locations=locations,
        slice_z_mm=levels,
        heart_offset_mm=offset,
        rows=rows,
        columns=columns,
        pixel_spacing_mm=pixel,
        slice_thickness_mm=scanner.slice_thickness_mm,
        inversion_time_ms=round(float(max(inversion_time, 120.0)), 1),
        snr_blood=float(snr),
        receiver_gain=float(rng.uniform(*knobs.RECEIVER_GAIN_JITTER)),
    )
