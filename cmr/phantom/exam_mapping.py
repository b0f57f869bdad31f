"""The exam's mapping series: native and post-contrast MOLLI, T2-prep, and the scanner's maps.

One mid-ventricular short-axis slice (the mapping phantom's level and slice
thickness, cmr.phantom.mapping) in the LGE stack's orientation, of this patient's
heart and scar, with this patient's tissue (cmr.phantom.exam_tissue). Source images
are rendered as the mapping phantom renders them (partial volume over sub-pixel and
through-slice samples, point spread, one coil field for the three series, Rician
noise), without motion. Signals come from cmr.physics (MOLLI Bloch model, T2-prep).

The scanner's own maps (separate derived series) are what its inline fit gives: the
per-tissue T1 a three-parameter Look-Locker fit of the noise-free MOLLI signal
returns (cmr.fitting: so the scanner map carries MOLLI's underestimation of long
T1s), mixed by each pixel's partial volume, blurred like the images, with noise
growing where proton density is low, and 0 where the signal is too low to fit (air,
lung), as scanners mask them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr.fitting import fit_t1, fit_t2
from cmr.phantom import knobs
from cmr.phantom.anatomy import HeartPlan, MyocardialPattern, Tissue, classify_plane
from cmr.phantom.lge_signal import point_spread, rician_magnitude_f32
from cmr.phantom.long_axis import HeartFrame, PlaneImage, plane_image
from cmr.phantom.mapping import MID_VENTRICULAR_LEVEL, NATIVE_SCHEME, POST_SCHEME, SLICE_THICKNESS_MM, sample_grid
from cmr.physics.molli import molli_inversion_times, molli_signed_signal
from cmr.physics.t2prep import DEFAULT_T2PREP_MS, t2prep_signal

SCHEMES = {"native": NATIVE_SCHEME, "post": POST_SCHEME}
MAP_NOISE_PER_SIGNAL_NOISE = {"t1": 3.0, "t2": 4.0}  # relative map sd = this × image noise / PD
MIN_PROTON_DENSITY = 0.3  # below this (lung, air, partial volume with them) the scanner writes 0


@dataclass(frozen=True)
class MappingSlice:
    image: PlaneImage
    tissue: np.ndarray  # Tissue codes at pixel centres (rows, columns)
    fractions: np.ndarray  # (rows · columns, len(Tissue)): partial volume of every tissue

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.rows, self.image.columns


def mapping_slice(
    frame: HeartFrame,
    heart: HeartPlan,
    scar: MyocardialPattern,
    heart_offset_mm: tuple[float, float],
    pixel: float,
    rows: int,
    columns: int,
) -> MappingSlice:
    z = MID_VENTRICULAR_LEVEL * heart.long_axis_mm
    centre = frame.to_patient(-heart_offset_mm[0], -heart_offset_mm[1], z)
    image = plane_image(centre, frame.x, frame.y, rows, columns, pixel)
    x, y = sample_grid((rows, columns), pixel, heart_offset_mm, 1)
    tissue = classify_plane(heart, scar, np.ascontiguousarray(x), np.ascontiguousarray(y), z)
    s = knobs.IN_PLANE_SUPERSAMPLING
    xs, ys = (np.ascontiguousarray(v) for v in sample_grid((rows, columns), pixel, heart_offset_mm, s))
    depths = ((np.arange(knobs.THROUGH_PLANE_SAMPLES) + 0.5) / knobs.THROUGH_PLANE_SAMPLES - 0.5) * SLICE_THICKNESS_MM
    pixel_index = (np.arange(rows)[:, None, None, None] * columns + np.arange(columns)[None, None, :, None]) * len(
        Tissue
    )
    pixel_index = np.broadcast_to(pixel_index, (rows, s, columns, s)).reshape(rows * s, columns * s)
    counts = np.zeros(rows * columns * len(Tissue))
    for depth in depths:
        codes = classify_plane(heart, scar, xs, ys, z + float(depth))
        counts += np.bincount((pixel_index + codes).ravel(), minlength=counts.size)
    fractions = (counts / (s * s * depths.size)).reshape(rows * columns, len(Tissue))
    return MappingSlice(image=image, tissue=tissue, fractions=fractions.astype(np.float32))


@dataclass(frozen=True)
class MappingSeries:
    frames: np.ndarray  # magnitude, proton-density units (frames, rows, columns)
    times_ms: np.ndarray  # inversion times (MOLLI) or prep durations (T2-prep), acquisition order
    scanner_map_ms: np.ndarray  # (rows, columns) what the scanner's derived map holds
    reference_ms: np.ndarray  # (rows, columns) true T1 or T2 at pixel centres, 0 in air


def _images(
    rng: np.random.Generator,
    slice_: MappingSlice,
    tables: np.ndarray,
    coil: np.ndarray,
    psf_sigma_px: float,
    noise: float,
) -> np.ndarray:
    signal = (slice_.fractions @ tables.T.astype(np.float32)).T.reshape(tables.shape[0], *slice_.shape)
    return rician_magnitude_f32(rng, point_spread(signal, psf_sigma_px) * coil, noise)


def _scanner_map(
    rng: np.random.Generator,
    slice_: MappingSlice,
    per_tissue_ms: np.ndarray,
    proton_density: np.ndarray,
    psf_sigma_px: float,
    relative_noise: float,
) -> np.ndarray:
    values = np.nan_to_num(per_tissue_ms, nan=0.0).astype(np.float32)
    pd = (slice_.fractions @ proton_density.astype(np.float32)).reshape(slice_.shape)
    fitted = point_spread((slice_.fractions @ values).reshape(1, *slice_.shape), psf_sigma_px)[0]
    sd = fitted * relative_noise * proton_density[Tissue.MYOCARDIUM] / np.maximum(pd, MIN_PROTON_DENSITY)
    noisy = fitted + sd * rng.standard_normal(fitted.shape, dtype=np.float32)
    return np.where(pd >= MIN_PROTON_DENSITY, np.maximum(noisy, 0.0), 0.0)


def render_molli(
    rng: np.random.Generator,
    slice_: MappingSlice,
    t1_ms: np.ndarray,
    t2_ms: np.ndarray,
    proton_density: np.ndarray,
    contrast: str,
    heart_rate_bpm: float,
    coil: np.ndarray,
    psf_sigma_px: float,
    noise: float,
) -> MappingSeries:
    """MOLLI of ``contrast`` (native: 5(3)3, post: 4(1)3(1)2); ``t1_ms`` etc. per Tissue code."""
    scheme = SCHEMES[contrast]
    times = molli_inversion_times(heart_rate_bpm, scheme)
    tables = molli_signed_signal(
        t1_ms, proton_density, times, t2_ms=t2_ms, scheme=scheme, heart_rate_bpm=heart_rate_bpm
    )
    frames = _images(rng, slice_, tables, coil, psf_sigma_px, noise)
    apparent = fit_t1(np.abs(tables), times).t1_ms  # the scanner's fit of each tissue's clean signal
    apparent = np.where(proton_density > 0, apparent, 0.0)
    relative = MAP_NOISE_PER_SIGNAL_NOISE["t1"] * noise
    scanner_map = _scanner_map(rng, slice_, apparent, proton_density, psf_sigma_px, relative)
    reference = np.where(slice_.tissue == Tissue.AIR, 0.0, t1_ms[slice_.tissue]).astype(np.float32)
    return MappingSeries(frames=frames, times_ms=times, scanner_map_ms=scanner_map, reference_ms=reference)


def render_t2prep(
    rng: np.random.Generator,
    slice_: MappingSlice,
    t2_ms: np.ndarray,
    proton_density: np.ndarray,
    coil: np.ndarray,
    psf_sigma_px: float,
    noise: float,
) -> MappingSeries:
    durations = np.asarray(DEFAULT_T2PREP_MS, dtype=np.float64)
    tables = t2prep_signal(t2_ms, proton_density, durations)
    frames = _images(rng, slice_, tables, coil, psf_sigma_px, noise)
    apparent = np.where(proton_density > 0, fit_t2(tables, durations).t2_ms, 0.0)
    relative = MAP_NOISE_PER_SIGNAL_NOISE["t2"] * noise
    scanner_map = _scanner_map(rng, slice_, apparent, proton_density, psf_sigma_px, relative)
    reference = np.where(slice_.tissue == Tissue.AIR, 0.0, t2_ms[slice_.tissue]).astype(np.float32)
    return MappingSeries(frames=frames, times_ms=durations, scanner_map_ms=scanner_map, reference_ms=reference)
