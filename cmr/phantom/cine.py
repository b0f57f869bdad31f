"""Cine: the patient's heart contracting over one cardiac cycle, as bSSFP images.

The anatomy (cmr.phantom.anatomy) is the end-diastolic heart. Each image plane is
classified once, at end-diastole, and every phase is that image warped by the
contraction, sampled by interpolation, so that a stack of slices × 25 phases costs
little more than its end-diastolic images.

Contraction is radial about the LV long axis, level by level. At phase fraction
``c`` (0 at end-diastole, 1 at end-systole) the cavity at (``phi``, ``z``) loses the
fraction ``EF · c · (1 − 0.9 · T)`` of its area, ``T`` the scar's transmural extent
there (smoothed around the circumference: a border zone); the cavity scales
uniformly, and everything outside it moves as an incompressible layer
(``r0² = r² + Δ``), so myocardial area is conserved and the wall thickens, less
over scar. The displacement fades out beyond the heart (the chest stays still) and
above the base plane (the atria are not modelled as contracting). No longitudinal
shortening: the base does not descend. Without scar the LV ejection fraction is
``EF`` itself; the right ventricle only follows the septum.

The volume curve: a cosine ejection to end-systole at ~330 ms, rapid early filling,
diastasis and the atrial kick in the last fifth of diastole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cmr.phantom.anatomy import HeartPlan, MyocardialPattern, anatomical_axes, classify_plane
from cmr.phantom.lge_signal import point_spread
from cmr.phantom.long_axis import LongAxisView
from cmr.phantom.tissue_points import classify_points

EJECTION_FRACTION = (0.55, 0.65)
SCAR_HYPOKINESIA = 0.9  # loss of contraction over fully transmural scar
END_SYSTOLE_MS = 330.0
_PHI_BINS = 72
_Z_STEP_MM = 2.0
_DEPTH_SAMPLES = 10


def contraction_curve(n_phases: int, rr_ms: float) -> np.ndarray:
    """Fraction of end-systolic contraction at each phase ``k · RR / n`` (0 at end-diastole)."""
    f = np.arange(n_phases) / n_phases
    f_es = float(np.clip(END_SYSTOLE_MS / rr_ms, 0.28, 0.45))
    systole = 0.5 * (1.0 - np.cos(np.pi * np.minimum(f / f_es, 1.0)))
    g = np.clip((f - f_es) / (1.0 - f_es), 0.0, 1.0)
    atrial = np.clip((g - 0.8) / 0.2, 0.0, 1.0)
    diastole = 0.25 * (1.0 - atrial * atrial * (3.0 - 2.0 * atrial)) + 0.75 * np.exp(-((g / 0.2) ** 2))
    return np.where(f <= f_es, systole, diastole)


@dataclass(frozen=True)
class Contraction:
    """How far tissue at end-diastole moved to reach a point at phase fraction ``c``."""

    heart: HeartPlan
    ejection_fraction: float
    transmurality: np.ndarray  # (z levels, phi bins), smoothed fraction of the wall that is scar

    @classmethod
    def of(cls, heart: HeartPlan, scar: MyocardialPattern, ejection_fraction: float) -> Contraction:
        phi = (np.arange(_PHI_BINS) + 0.5) / _PHI_BINS * 2 * np.pi - np.pi
        depth = (np.arange(_DEPTH_SAMPLES) + 0.5) / _DEPTH_SAMPLES
        phi_grid, depth_grid = np.broadcast_arrays(phi[:, None], depth[None, :])
        levels = np.arange(0.0, heart.epicardial_apex_mm + _Z_STEP_MM, _Z_STEP_MM)
        table = np.stack([scar.contains(phi_grid, float(z), depth_grid).mean(axis=1) for z in levels])
        table = ndimage.gaussian_filter1d(table.astype(np.float32), 1.5, axis=1, mode="wrap")
        return cls(heart=heart, ejection_fraction=ejection_fraction, transmurality=table)

    def _transmurality(self, phi: np.ndarray, z: np.ndarray) -> np.ndarray:
        i = np.clip(np.rint(np.asarray(z) / _Z_STEP_MM).astype(int), 0, self.transmurality.shape[0] - 1)
        j = ((np.asarray(phi) + np.pi) / (2 * np.pi) * _PHI_BINS).astype(int) % _PHI_BINS
        return self.transmurality[i, j]

    def source_radius(self, r: np.ndarray, phi: np.ndarray, z: np.ndarray | float, c: np.ndarray) -> np.ndarray:
        """End-diastolic distance from the LV axis of what lies at ``r`` at phase fraction ``c`` (broadcast)."""
        heart = self.heart
        z = np.asarray(z, dtype=np.float32)
        axial = np.sqrt(np.clip(1.0 - (np.maximum(z, 0.0) / heart.long_axis_mm) ** 2, 0.0, 1.0))
        shape = 1.0 + heart.ellipticity * np.cos(2.0 * (phi - heart.ellipticity_angle))
        endo = heart.cavity_radius_mm * shape * axial
        above_base = np.clip((z + 8.0) / 8.0, 0.0, 1.0)
        local = self.ejection_fraction * (1.0 - SCAR_HYPOKINESIA * self._transmurality(phi, z)) * above_base
        lost = local * c  # fraction of the cavity's area lost at this phase
        inner = np.sqrt(1.0 - lost)
        r_in = heart.epicardial_radius_mm * (1.0 + heart.ellipticity) + heart.hcm_septal_extra_mm + 4.0
        r_out = heart.extent_mm + 8.0
        taper = np.clip((r_out - r) / (r_out - r_in), 0.0, 1.0)
        outer = np.sqrt(r * r + endo * endo * lost * taper)
        return np.where(r < endo * inner, r / inner, outer).astype(np.float32)

    @property
    def reach_mm(self) -> float:
        """Beyond this distance from the axis nothing moves."""
        return self.heart.extent_mm + 8.0


def _bilinear(image: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``image`` at fractional (row, column) positions, clamped to the image."""
    height, width = image.shape
    r0 = np.clip(rows.astype(np.int32), 0, height - 2)  # positions are ≥ 0 here: truncation floors
    c0 = np.clip(columns.astype(np.int32), 0, width - 2)
    fr = np.clip(rows - r0, 0.0, 1.0)
    fc = np.clip(columns - c0, 0.0, 1.0)
    flat = image.ravel()
    index = r0 * width + c0
    top = flat[index] + (flat[index + 1] - flat[index]) * fc
    index += width
    bottom = flat[index] + (flat[index + 1] - flat[index]) * fc
    return top + (bottom - top) * fr


def render_cine_stack(
    contraction: Contraction,
    scar: MyocardialPattern,
    levels_mm: tuple[float, ...],
    x_mm: np.ndarray,
    y_mm: np.ndarray,
    pixel_mm: float,
    table: np.ndarray,
    psf_sigma_px: float,
    curve: np.ndarray,
) -> Iterator[np.ndarray]:
    """Noise-free short-axis cine, one slice ``[phase, row, column]`` (float32) at a time.

    ``x_mm`` (columns,) and ``y_mm`` (rows,) are pixel centres relative to the LV axis.
    One slice at a time keeps the arrays small (a whole stack is some 7 million pixels).
    """
    heart = contraction.heart
    anterior, septal = anatomical_axes(heart)
    x, y = np.meshgrid(x_mm.astype(np.float32), y_mm.astype(np.float32))
    moving = np.flatnonzero(np.hypot(x, y).ravel() < contraction.reach_mm)
    xm, ym = x.ravel()[moving], y.ravel()[moving]
    r = np.hypot(xm, ym)
    phi = np.arctan2(xm * septal[0] + ym * septal[1], xm * anterior[0] + ym * anterior[1])
    phases = curve.astype(np.float32)[:, None]
    for z in levels_mm:
        tissue = classify_plane(heart, scar, x_mm[None, :].astype(np.float32), y_mm[:, None].astype(np.float32), z)
        end_diastole = point_spread(table[tissue][None], psf_sigma_px)[0]
        out = np.repeat(end_diastole[None], curve.size, axis=0)
        ratio = contraction.source_radius(r[None], phi[None], z, phases) / np.maximum(r[None], 1e-3)
        source_rows = (ym[None] * ratio - np.float32(y_mm[0])) * np.float32(1.0 / pixel_mm)
        source_columns = (xm[None] * ratio - np.float32(x_mm[0])) * np.float32(1.0 / pixel_mm)
        out.reshape(curve.size, -1)[:, moving] = _bilinear(end_diastole, source_rows, source_columns)
        yield out


def long_axis_tissue(
    views: list[LongAxisView], heart: HeartPlan, scar: MyocardialPattern, thickness_mm: float
) -> np.ndarray:
    """End-diastolic tissue codes ``[view, depth, row, column]``, three depths across the slice.

    Views whose rows lie at the same levels are classified together (one call per level).
    """
    across = (np.arange(3) - 1.0) * thickness_mm / 3.0
    points = [v.heart_points(heart, float(a)) for v in views for a in across]
    x, y, z = (np.stack([p[i] for p in points]) for i in range(3))
    return classify_points(heart, scar, x, y, z).reshape(len(views), across.size, *x.shape[1:])


def long_axis_images(tissue: np.ndarray, table: np.ndarray, psf_sigma_px: float) -> np.ndarray:
    """Noise-free images ``[view, row, column]`` of ``long_axis_tissue`` codes: partial volume, point spread."""
    return point_spread(table[tissue].mean(axis=1), psf_sigma_px)


def render_long_axis_cines(
    views: list[LongAxisView], end_diastole: np.ndarray, contraction: Contraction, curve: np.ndarray
) -> np.ndarray:
    """Long-axis cines ``[view, phase, row, column]`` from their end-diastolic images.

    A long-axis plane contains the axis, so radial motion keeps every point in its image
    row: each row is warped along itself.
    """
    heart = contraction.heart
    out = np.repeat(end_diastole[:, None], curve.size, axis=1)
    for index, view in enumerate(views):
        rows = np.flatnonzero((view.z_mm > -8.0) & (view.z_mm < heart.epicardial_apex_mm))
        columns = np.flatnonzero(np.abs(view.u_mm) < contraction.reach_mm)
        if rows.size == 0 or columns.size == 0:
            continue
        u = view.u_mm[columns].astype(np.float32)[None, :]
        phi = np.where(u >= 0, view.phi, view.phi + np.pi)
        phi = (phi + np.pi) % (2 * np.pi) - np.pi
        z = view.z_mm[rows].astype(np.float32)[:, None]
        phases = curve.astype(np.float32)[:, None, None]
        source = np.sign(u) * contraction.source_radius(np.abs(u)[None], phi[None], z[None], phases)
        source_columns = (source - view.u_mm[0]) / view.image.pixel_mm  # (phases, rows, columns)
        c0 = np.clip(np.floor(source_columns).astype(np.int32), 0, view.u_mm.size - 2)
        fraction = np.clip(source_columns - c0, 0.0, 1.0)
        image = end_diastole[index][rows]
        row_index = np.arange(rows.size)[None, :, None]
        block = image[row_index, c0] * (1 - fraction) + image[row_index, c0 + 1] * fraction
        out[index][:, rows[:, None], columns[None, :]] = block
    return out
