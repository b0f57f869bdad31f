"""Where the myocardium is scarred: ischaemic infarcts and non-ischaemic fibrosis.

Ischaemic scar sits in one coronary territory (AHA 17-segment assignment:
LAD anterior/anteroseptal and apex, RCA inferior/inferoseptal, LCx lateral),
always reaches the endocardium (the ischaemic wavefront), is most transmural at
the territory's centre and thinner towards its edges, spans several contiguous
slices, and thins the wall where it is transmural.

Non-ischaemic scar is patchy and spares the endocardium: mid-wall patches and RV
insertion-point enhancement (HCM-like), a septal mid-wall stripe (DCM-like), or
subepicardial lateral/inferolateral patches (myocarditis-like).

Angles ``phi``: 0 anterior, +90° septal, ±180° inferior, −90° lateral.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr.phantom import knobs
from cmr.phantom.anatomy import HeartPlan, rv_insertion_angles

ISCHAEMIC_TERRITORIES = ("LAD", "RCA", "LCx")
NON_ISCHAEMIC_PHENOTYPES = ("hcm", "dcm_midwall", "myocarditis")


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _sigmoid(value: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-value))


class NoScar:
    def thinning(self, phi: np.ndarray, z: float) -> np.ndarray | float:
        return 0.0

    def contains(self, phi: np.ndarray, z: float, transmural: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(phi), dtype=bool)


@dataclass(frozen=True)
class IschaemicScar:
    territory: str
    centre: float  # phi, radians
    half_width: float  # radians
    z_start_mm: float
    z_end_mm: float
    transmurality: float  # peak transmural extent, fraction of the wall
    apical_wrap_from_mm: float | None  # LAD: the territory widens around the apex
    apex_mm: float
    ripple_amplitude: float
    ripple_phase: float
    max_thinning: float

    def weight(self, phi: np.ndarray, z: float) -> np.ndarray:
        half_width = self.half_width
        if self.apical_wrap_from_mm is not None and z > self.apical_wrap_from_mm:
            reach = min(1.0, (z - self.apical_wrap_from_mm) / max(self.apex_mm - self.apical_wrap_from_mm, 1.0))
            half_width = half_width + (np.pi - half_width) * reach
        distance = np.abs(_wrap(phi - self.centre))
        angular = np.exp(-((distance / half_width) ** 4))
        axial = _sigmoid((z - self.z_start_mm) / 3.0) * _sigmoid((self.z_end_mm - z) / 3.0)
        ripple = 1.0 + self.ripple_amplitude * np.sin(3.0 * phi + self.ripple_phase + 0.08 * z)
        return np.clip(angular * axial * ripple, 0.0, 1.0)

    def thinning(self, phi: np.ndarray, z: float) -> np.ndarray:
        return self.max_thinning * self.transmurality**2 * self.weight(phi, z)

    def contains(self, phi: np.ndarray, z: float, transmural: np.ndarray) -> np.ndarray:
        weight = self.weight(phi, z)
        return (weight > 0.2) & (transmural < self.transmurality * weight)


@dataclass(frozen=True)
class NonIschaemicScar:
    phenotype: str
    # One row per patch: centre phi, half-width phi, centre z, half-length z,
    # centre transmural depth, half-depth (radians, mm, wall fractions).
    patches: tuple[tuple[float, float, float, float, float, float], ...]

    def thinning(self, phi: np.ndarray, z: float) -> float:
        return 0.0

    def contains(self, phi: np.ndarray, z: float, transmural: np.ndarray) -> np.ndarray:
        inside = np.zeros(np.shape(phi), dtype=bool)
        for centre, half_width, z_centre, half_length, depth_centre, half_depth in self.patches:
            if abs(z - z_centre) >= half_length:
                continue
            distance = (
                (_wrap(phi - centre) / half_width) ** 2
                + ((z - z_centre) / half_length) ** 2
                + ((transmural - depth_centre) / half_depth) ** 2
            )
            inside |= distance < 1.0
        return inside


def sample_scar_pattern(rng: np.random.Generator, scar_type: str) -> str:
    """The kind of scar: ``none``, a coronary territory, or a non-ischaemic phenotype."""
    if scar_type == "none":
        return "none"
    if scar_type == "ischaemic":
        names, weights = zip(*knobs.ISCHAEMIC_TERRITORY_WEIGHTS.items())
    elif scar_type == "non_ischaemic":
        names, weights = zip(*knobs.NON_ISCHAEMIC_PHENOTYPE_WEIGHTS.items())
    else:
        raise ValueError(f"scar_type: expected none, ischaemic or non_ischaemic, got {scar_type!r}")
    p = np.asarray(weights) / np.sum(weights)
    return str(names[int(rng.choice(len(names), p=p))])


def sample_scar(
    rng: np.random.Generator, pattern: str, heart: HeartPlan, size_boost: float = 1.0
) -> NoScar | IschaemicScar | NonIschaemicScar:
    """Draw the scar of kind ``pattern`` in ``heart``; ``size_boost`` > 1 on a redraw of a scar too small to see."""
    if pattern == "none":
        return NoScar()
    length = heart.long_axis_mm
    if pattern in knobs.ISCHAEMIC_TERRITORIES:
        centre_deg, start, end = knobs.ISCHAEMIC_TERRITORIES[pattern]
        half_width = min(np.deg2rad(rng.uniform(*knobs.ISCHAEMIC_HALF_WIDTH_DEG)) * size_boost, np.deg2rad(100.0))
        return IschaemicScar(
            territory=pattern,
            centre=float(np.deg2rad(centre_deg + rng.normal(0.0, knobs.ISCHAEMIC_CENTRE_SD_DEG))),
            half_width=float(half_width),
            z_start_mm=float(rng.uniform(*start) * length / size_boost),
            z_end_mm=float(min(rng.uniform(*end) * length * size_boost, 1.15 * length)),
            transmurality=float(min(1.0, rng.uniform(*knobs.ISCHAEMIC_TRANSMURALITY) * size_boost)),
            apical_wrap_from_mm=knobs.LAD_APICAL_WRAP_FROM * length if pattern == "LAD" else None,
            apex_mm=heart.epicardial_apex_mm,
            ripple_amplitude=float(rng.uniform(*knobs.ISCHAEMIC_BORDER_RIPPLE)),
            ripple_phase=float(rng.uniform(0.0, 2 * np.pi)),
            max_thinning=knobs.ISCHAEMIC_WALL_THINNING,
        )
    if pattern not in NON_ISCHAEMIC_PHENOTYPES:
        raise ValueError(f"scar pattern: unknown {pattern!r}")

    def patch(
        centre_deg: float,
        half_width_deg: tuple[float, float],
        z_fraction: tuple[float, float],
        half_length_mm: tuple[float, float],
        depth: float,
        half_depth: tuple[float, float],
    ):
        return (
            float(np.deg2rad(centre_deg)),
            float(np.deg2rad(rng.uniform(*half_width_deg)) * size_boost),
            float(rng.uniform(*z_fraction) * length),
            float(rng.uniform(*half_length_mm) * size_boost),
            depth,
            float(min(rng.uniform(*half_depth) * size_boost, 0.5)),
        )

    n_patches = int(rng.integers(knobs.NON_ISCHAEMIC_PATCHES[0], knobs.NON_ISCHAEMIC_PATCHES[1] + 1))
    half_width = knobs.NON_ISCHAEMIC_PATCH_HALF_WIDTH_DEG
    half_length = knobs.NON_ISCHAEMIC_PATCH_HALF_LENGTH_MM
    patches = []
    if pattern == "hcm":
        for rvip in (np.rad2deg(angle) for angle in rv_insertion_angles(heart)):
            width, z_range, length_range, depth, depth_range = knobs.HCM_RV_INSERTION_PATCH
            patches.append(patch(rvip + rng.normal(0.0, 5.0), width, z_range, length_range, depth, depth_range))
        centre, spread, z_range, depth, depth_range = knobs.HCM_SEPTAL_PATCH
        for _ in range(max(1, n_patches - 2)):
            patches.append(
                patch(centre + rng.normal(0.0, spread), half_width, z_range, half_length, depth, depth_range)
            )
    elif pattern == "dcm_midwall":
        centre, spread, width, z_range, length_range, depth, depth_range = knobs.DCM_STRIPE
        for _ in range(max(1, n_patches // 2)):
            patches.append(patch(centre + rng.normal(0.0, spread), width, z_range, length_range, depth, depth_range))
    else:  # myocarditis
        phi_range, z_range, depth, depth_range = knobs.MYOCARDITIS_PATCH
        for _ in range(n_patches):
            patches.append(patch(float(rng.uniform(*phi_range)), half_width, z_range, half_length, depth, depth_range))
    return NonIschaemicScar(phenotype=pattern, patches=tuple(patches))
