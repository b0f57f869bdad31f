"""One mid-ventricular short-axis mapping examination on the LGE phantom's anatomy.

``simulate_mapping_case`` draws a patient, heart and scar exactly as the LGE
phantom does (cmr.phantom.anatomy, cmr.phantom.scar), places a single slice at
mid-ventricular level and renders three series of it: native MOLLI 5(3)3,
post-contrast MOLLI 4(1)3(1)2 and T2-prepared bSSFP (0/25/55 ms), with the
signal models of cmr.physics and tissue values of cmr.physics.tissue.

Per frame, the signed signal is averaged over sub-pixel and through-slice
samples (partial volume), blurred by the point spread, multiplied by a fixed
coil field and made a magnitude with complex Gaussian noise of sd ``noise``
(relative to fully relaxed blood). Motion: each frame's anatomy is displaced
in-plane by a breathing drift (rigid, along one direction, phase from the
frame's acquisition time) plus a cardiac-phase mismatch (a radial
expansion/contraction around the LV axis), together at most ``motion_mm``.
The ground-truth maps and masks are the motion-free anatomy at pixel centres.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cmr.geometry import StackGeometry
from cmr.phantom import knobs
from cmr.phantom.anatomy import TISSUE_MATERIAL, HeartPlan, MyocardialPattern, Tissue, classify_plane, sample_heart
from cmr.phantom.demographics import ETHNIC_GROUPS, sample_patient
from cmr.phantom.lge_signal import bias_field, point_spread, rician_magnitude
from cmr.phantom.scar import sample_scar, sample_scar_pattern
from cmr.phantom.spec import DemographicMix
from cmr.physics.molli import BssfpReadout, molli_inversion_times, molli_readout_times, molli_signed_signal
from cmr.physics.t2prep import DEFAULT_T2PREP_MS, t2prep_signal
from cmr.physics.tissue import Examination, sample_examination

NATIVE_SCHEME = "5(3)3"  # SCMR 2017 consensus: 5(3)3 native, 4(1)3(1)2 post-contrast
POST_SCHEME = "4(1)3(1)2"
MID_VENTRICULAR_LEVEL = 0.45  # slice centre as a fraction of the base-to-apex length
SLICE_THICKNESS_MM = 8.0
PIXEL_SPACING_MM = (1.8, 2.2)  # acquired in-plane resolution of clinical MOLLI
SCAR_TYPE_WEIGHTS = {"none": 0.5, "ischaemic": 0.3, "non_ischaemic": 0.2}
BREATHING_PERIOD_S = (3.5, 5.0)
CARDIAC_SHARE_OF_MOTION = 0.3  # the rest of motion_mm is the rigid breathing drift
T2PREP_FRAME_SPACING_BEATS = 4  # images 3 recovery beats apart
_SEX = {"F": "female", "M": "male"}
_POPULATION = DemographicMix(
    name="mapping",
    ethnicity_weights={"White": 0.6, "Black": 0.13, "Asian": 0.17, "Mixed": 0.05, "Other": 0.05},
    male_fraction=0.5,
    age_mean_years=55.0,
    bmi_mean=27.0,
    scar_type_fractions=SCAR_TYPE_WEIGHTS,
)


@dataclass(frozen=True)
class MappingCase:
    """Three mapping series of one slice and their ground truth (frame axis first)."""

    molli_native: np.ndarray  # float32 (frames, rows, cols), magnitude, PD units
    inversion_times_native_ms: np.ndarray  # acquisition order
    molli_post: np.ndarray
    inversion_times_post_ms: np.ndarray
    t2prep: np.ndarray
    t2prep_ms: np.ndarray
    t1_native_ms: np.ndarray  # float32 (rows, cols), true T1 (not MOLLI's estimate)
    t1_post_ms: np.ndarray
    t2_ms: np.ndarray
    ecv: np.ndarray  # fraction
    haematocrit: float
    myocardium_mask: np.ndarray  # LV myocardium, scar included
    blood_mask: np.ndarray  # LV blood pool (papillary muscles excluded)
    scar_mask: np.ndarray
    pixel_spacing_mm: float
    attributes: dict[str, Any]
    geometry: StackGeometry = field(repr=False)  # where the slice lies (LPS), for DICOM and NIfTI
    tissue: np.ndarray = field(repr=False)  # Tissue codes at pixel centres, motion-free
    displacement_mm: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # per series, (frames, 2)

    @property
    def shape(self) -> tuple[int, int]:
        return self.t1_native_ms.shape


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, 7, stream])


def _slice_geometry(rng: np.random.Generator, shape: tuple[int, int], pixel: float) -> StackGeometry:
    """An oblique short-axis plane through a typical LV position (as cmr.phantom.acquisition)."""
    long_axis = np.array([0.62, -0.55, -0.56]) + rng.normal(0.0, 0.08, size=3)
    long_axis /= np.linalg.norm(long_axis)
    anterior = np.array([0.0, -1.0, 0.0]) - (-long_axis[1]) * long_axis
    anterior /= np.linalg.norm(anterior)
    row_direction = np.cross(long_axis, anterior)
    column_direction = -anterior
    orientation = tuple(round(float(v), 6) for v in (*row_direction, *column_direction))
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    normal /= np.linalg.norm(normal)
    centre = np.array([20.0, 15.0, -30.0]) + rng.normal(0.0, 12.0, size=3)
    rows, columns = shape
    first = (
        centre
        - (columns - 1) / 2 * pixel * np.asarray(orientation[:3])
        - (rows - 1) / 2 * pixel * np.asarray(orientation[3:])
    )
    return StackGeometry(
        image_orientation=orientation,  # type: ignore[arg-type]
        first_position=tuple(round(float(v), 4) for v in first),  # type: ignore[arg-type]
        pixel_spacing=(pixel, pixel),
        slice_step=tuple(float(v) for v in SLICE_THICKNESS_MM * normal),  # type: ignore[arg-type]
    )


def sample_grid(shape: tuple[int, int], pixel: float, offset_mm: tuple[float, float], supersampling: int):
    """(x, y) in mm relative to the LV axis, 2-D, ``supersampling`` samples per pixel and axis."""
    rows, columns = shape
    sub = (np.arange(supersampling) + 0.5) / supersampling - 0.5
    col = (np.arange(columns)[:, None] + sub[None, :]).ravel()
    row = (np.arange(rows)[:, None] + sub[None, :]).ravel()
    x = (col - (columns - 1) / 2) * pixel - offset_mm[0]
    y = (row - (rows - 1) / 2) * pixel - offset_mm[1]
    return np.broadcast_to(x[None, :], (row.size, col.size)), np.broadcast_to(y[:, None], (row.size, col.size))


def _displacements(rng: np.random.Generator, times_ms: np.ndarray, motion_mm: float) -> np.ndarray:
    """Per frame (rigid dx, rigid dy, cardiac radial peak) in mm; all zero without motion."""
    n = times_ms.size
    if motion_mm <= 0:
        return np.zeros((n, 3))
    rigid_max = (1.0 - CARDIAC_SHARE_OF_MOTION) * motion_mm
    direction = rng.uniform(0.0, 2 * np.pi)
    period = rng.uniform(*BREATHING_PERIOD_S) * 1000.0
    phase = rng.uniform(0.0, 2 * np.pi)
    along = rigid_max * 0.8 * np.sin(2 * np.pi * times_ms / period + phase)
    across = rng.uniform(-0.2, 0.2, size=n) * rigid_max
    dx = along * np.cos(direction) - across * np.sin(direction)
    dy = along * np.sin(direction) + across * np.cos(direction)
    radial = rng.uniform(-1.0, 1.0, size=n) * CARDIAC_SHARE_OF_MOTION * motion_mm
    return np.stack([dx, dy, radial], axis=1)


_CARDIAC_REACH_MM = 40.0  # radius around the LV axis where the cardiac displacement peaks


def _warp(x: np.ndarray, y: np.ndarray, displacement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the tissue now at (x, y) came from, for a displacement (dx, dy, radial peak)."""
    dx, dy, radial = displacement
    xs, ys = x - dx, y - dy
    if radial == 0.0:
        return xs, ys
    r = np.hypot(xs, ys)
    # radial displacement r·exp(−r²/2R²), scaled so that its maximum (at r = R) is ``radial``
    profile = radial * (r / _CARDIAC_REACH_MM) * np.exp(0.5 - 0.5 * (r / _CARDIAC_REACH_MM) ** 2)
    scale = 1.0 - profile / np.maximum(r, 1e-6)
    return xs * scale, ys * scale


def _render_series(
    heart: HeartPlan,
    scar: MyocardialPattern,
    z_mm: float,
    shape: tuple[int, int],
    pixel: float,
    offset_mm: tuple[float, float],
    tables: np.ndarray,
    displacements: np.ndarray,
) -> np.ndarray:
    """Noise-free signed signal (frames, rows, cols) with partial volume; ``tables`` is (frames, tissues)."""
    s = knobs.IN_PLANE_SUPERSAMPLING
    x, y = sample_grid(shape, pixel, offset_mm, s)
    thickness = (np.arange(knobs.THROUGH_PLANE_SAMPLES) + 0.5) / knobs.THROUGH_PLANE_SAMPLES - 0.5
    rows, columns = shape
    signal = np.zeros((tables.shape[0], rows, columns), dtype=np.float32)
    cache: dict[tuple[float, ...], list[np.ndarray]] = {}
    for frame, displacement in enumerate(displacements):
        key = tuple(np.round(displacement, 6))
        if key not in cache:
            xw, yw = _warp(x, y, displacement)
            cache[key] = [classify_plane(heart, scar, xw, yw, z_mm + float(t) * SLICE_THICKNESS_MM) for t in thickness]
        for tissue in cache[key]:
            signal[frame] += tables[frame][tissue].reshape(rows, s, columns, s).mean(axis=(1, 3))
    return signal / len(thickness)


def _tissue_arrays(examination: Examination) -> dict[str, np.ndarray]:
    """Per ``Tissue`` code: native/post T1, T2, PD and ECV."""
    out = {name: np.zeros(len(Tissue)) for name in ("t1_native", "t1_post", "t2", "pd", "ecv")}
    for code, material in TISSUE_MATERIAL.items():
        values = examination.tissues[material]
        out["t1_native"][code] = values.t1_native_ms
        out["t1_post"][code] = values.t1_post_ms
        out["t2"][code] = values.t2_ms
        out["pd"][code] = values.proton_density
        out["ecv"][code] = values.ecv
    return out


def _magnitude(
    rng: np.random.Generator, signal: np.ndarray, coil: np.ndarray, psf_sigma: float, noise: float
) -> np.ndarray:
    blurred = point_spread(signal, psf_sigma) * coil
    return rician_magnitude(rng, blurred, noise).astype(np.float32) if noise > 0 else np.abs(blurred).astype(np.float32)


def simulate_mapping_case(
    seed: int,
    *,
    field_strength: str = "1.5T",
    vendor: str = "Siemens",
    sex: str = "F",
    heart_rate_bpm: float = 60.0,
    motion_mm: float = 0.0,
    noise: float = 0.01,
    haematocrit: float | None = None,
    shape: tuple[int, int] = (96, 96),
    scar_type: str | None = None,
    pixel_spacing_mm: float | None = None,
    t2prep_ms: tuple[float, ...] = DEFAULT_T2PREP_MS,
    readout: BssfpReadout | None = None,
) -> MappingCase:
    """One patient's native/post-contrast MOLLI and T2-prep series; deterministic for ``seed``.

    ``scar_type`` (none, ischaemic, non_ischaemic) is drawn from the seed when not given;
    ``haematocrit`` likewise (by sex). ``noise`` is the complex noise sd relative to the
    fully relaxed blood signal.
    """
    if sex not in _SEX:
        raise ValueError(f"sex: expected 'F' or 'M', got {sex!r}")
    if motion_mm < 0 or noise < 0:
        raise ValueError(f"motion_mm and noise must be ≥ 0, got {motion_mm}, {noise}")
    if len(shape) != 2 or min(shape) < 32:
        raise ValueError(f"shape: expected (rows, cols) of at least 32 each, got {shape}")
    readout = readout or BssfpReadout()
    sex_word = _SEX[sex]
    population = replace(_POPULATION, male_fraction=1.0 if sex == "M" else 0.0)
    patient = sample_patient(_rng(seed, 0), population)
    if scar_type is None:
        names, weights = zip(*SCAR_TYPE_WEIGHTS.items())
        scar_type = str(names[int(_rng(seed, 1).choice(len(names), p=np.asarray(weights)))])
    pattern = sample_scar_pattern(_rng(seed, 2), scar_type)
    heart = sample_heart(_rng(seed, 3), patient, pattern)
    scar = sample_scar(_rng(seed, 4), pattern, heart)
    examination = sample_examination(_rng(seed, 5), field_strength, vendor, sex_word, scar_type, haematocrit)

    geometry_rng = _rng(seed, 6)
    pixel = float(pixel_spacing_mm) if pixel_spacing_mm else round(float(geometry_rng.uniform(*PIXEL_SPACING_MM)), 3)
    geometry = _slice_geometry(geometry_rng, shape, pixel)
    offset = (float(geometry_rng.uniform(-6.0, 6.0)), float(geometry_rng.uniform(-6.0, 6.0)))
    psf_sigma = float(geometry_rng.uniform(*knobs.PSF_SIGMA_PX))
    z_mm = MID_VENTRICULAR_LEVEL * heart.long_axis_mm

    # Ground truth: motion-free tissue at pixel centres.
    x, y = sample_grid(shape, pixel, offset, 1)
    tissue = classify_plane(heart, scar, np.ascontiguousarray(x), np.ascontiguousarray(y), z_mm)
    per_tissue = _tissue_arrays(examination)

    field_t = 1.5 if field_strength == "1.5T" else 3.0
    amplitude = float(np.mean(knobs.BIAS_LOG_AMPLITUDE[field_t]))
    centre_px = ((shape[0] - 1) / 2 + offset[1] / pixel, (shape[1] - 1) / 2 + offset[0] / pixel)
    coil = bias_field(_rng(seed, 8), (1, *shape), amplitude, centre_px)

    series: dict[str, np.ndarray] = {}
    displacement: dict[str, np.ndarray] = {}
    times: dict[str, np.ndarray] = {}
    rr = 60000.0 / heart_rate_bpm
    for index, (name, scheme, t1_key) in enumerate(
        (("molli_native", NATIVE_SCHEME, "t1_native"), ("molli_post", POST_SCHEME, "t1_post"))
    ):
        ti = molli_inversion_times(heart_rate_bpm, scheme)
        tables = molli_signed_signal(
            per_tissue[t1_key],
            per_tissue["pd"],
            ti,
            t2_ms=per_tissue["t2"],
            readout=readout,
            scheme=scheme,
            heart_rate_bpm=heart_rate_bpm,
        )
        acquisition_ms = molli_readout_times(heart_rate_bpm, scheme)
        displacement[name] = _displacements(_rng(seed, 10 + index), acquisition_ms, motion_mm)
        signal = _render_series(heart, scar, z_mm, shape, pixel, offset, tables.astype(np.float32), displacement[name])
        series[name] = _magnitude(_rng(seed, 20 + index), signal, coil, psf_sigma, noise)
        times[name] = ti

    durations = np.asarray(t2prep_ms, dtype=np.float64)
    tables = t2prep_signal(per_tissue["t2"], per_tissue["pd"], durations)
    acquisition_ms = np.arange(durations.size) * T2PREP_FRAME_SPACING_BEATS * rr
    displacement["t2prep"] = _displacements(_rng(seed, 12), acquisition_ms, motion_mm)
    signal = _render_series(heart, scar, z_mm, shape, pixel, offset, tables.astype(np.float32), displacement["t2prep"])
    series["t2prep"] = _magnitude(_rng(seed, 22), signal, coil, psf_sigma, noise)

    myocardium = (tissue == Tissue.MYOCARDIUM) | (tissue == Tissue.SCAR)
    attributes = {
        "sex": sex,
        "vendor": vendor,
        "field_strength": field_strength,
        "heart_rate_bpm": float(heart_rate_bpm),
        "age_years": patient.age_years,
        "age_band": patient.age_band,
        "ethnicity": patient.ethnicity if patient.ethnicity in ETHNIC_GROUPS else "unknown",
        "scar_type": scar_type,
        "scar_pattern": pattern,
        "motion_mm": float(motion_mm),
        "noise": float(noise),
        "seed": int(seed),
    }
    return MappingCase(
        molli_native=series["molli_native"],
        inversion_times_native_ms=times["molli_native"],
        molli_post=series["molli_post"],
        inversion_times_post_ms=times["molli_post"],
        t2prep=series["t2prep"],
        t2prep_ms=durations,
        t1_native_ms=per_tissue["t1_native"][tissue].astype(np.float32),
        t1_post_ms=per_tissue["t1_post"][tissue].astype(np.float32),
        t2_ms=per_tissue["t2"][tissue].astype(np.float32),
        ecv=per_tissue["ecv"][tissue].astype(np.float32),
        haematocrit=examination.haematocrit,
        myocardium_mask=myocardium,
        blood_mask=tissue == Tissue.LV_BLOOD,
        scar_mask=tissue == Tissue.SCAR,
        pixel_spacing_mm=pixel,
        attributes=attributes,
        geometry=geometry,
        displacement_mm=displacement,
        tissue=tissue,
    )
