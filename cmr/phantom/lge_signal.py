"""The late-gadolinium-enhancement signal: magnitude inversion recovery after contrast.

Post-contrast T1 follows the fast-exchange model used for ECV mapping,
``1/T1_post = 1/T1_native + ΔR1_blood · ECV / (1 − Hct)``, so that scar (large
extracellular volume) ends up with a short T1, blood shorter still or similar,
and healthy myocardium longest. The signal at inversion time TI is

    S = PD · (1 − 2·exp(−TI / T1))         (signed longitudinal magnetisation)

and the image is its magnitude after point-spread blur, a smooth multiplicative
coil/B1 bias and complex Gaussian noise (so that dark regions are Rician/Rayleigh
distributed, never negative). The technologist picks TI to null the healthy
myocardium, ``TI_null = T1_myo · ln 2``; each site misses by its own offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, special

from cmr.phantom import knobs
from cmr.phantom.anatomy import TISSUE_MATERIAL, Tissue

MATERIALS = ("air", "lung", "fat", "muscle", "liver", "blood", "marrow", "myocardium", "scar")


@dataclass(frozen=True)
class Relaxation:
    """Post-contrast T1 (ms) and proton density of every material, for one examination.

    ``haematocrit``, ``ecv`` and ``delta_r1_blood`` are what the T1s were made from, kept so
    that the rest of the examination (MOLLI, cmr.phantom.exam_tissue) sees the same patient.
    """

    t1_ms: dict[str, float]
    proton_density: dict[str, float]
    haematocrit: float = 0.42
    ecv: dict[str, float] = field(default_factory=dict)
    delta_r1_blood: float = 0.0  # 1/ms

    @property
    def myocardium_null_ti_ms(self) -> float:
        return self.t1_ms["myocardium"] * float(np.log(2.0))


def sample_relaxation(
    rng: np.random.Generator,
    field_strength_t: float,
    sex: str,
    scar_type: str,
    scar_contrast_scale: float = 1.0,
) -> Relaxation:
    """Tissue T1s ~10-20 min after contrast for one patient on one scanner."""
    field_index = 0 if field_strength_t < 2.0 else 1
    native = {material: values[field_index] for material, values in knobs.NATIVE_T1_MS.items()}
    blood_t1_at_1p5 = rng.uniform(*knobs.BLOOD_POST_CONTRAST_T1_MS_AT_1P5T)
    delta_r1_blood = 1.0 / blood_t1_at_1p5 - 1.0 / knobs.NATIVE_T1_MS["blood"][0]
    if field_index == 1:
        delta_r1_blood *= knobs.RELAXIVITY_RATIO_3T
    haematocrit = float(np.clip(rng.normal(knobs.HAEMATOCRIT_MEAN[sex], knobs.HAEMATOCRIT_SD), *knobs.HAEMATOCRIT_CLIP))

    def draw(name: str) -> float:
        mean, sd = knobs.ECV[name]
        return float(np.clip(rng.normal(mean, sd), 0.05, 0.9))

    ecv_myocardium = float(np.clip(draw(f"myocardium_{sex}"), *knobs.ECV_MYOCARDIUM_CLIP))
    ecv_scar = draw("scar_ischaemic" if scar_type == "ischaemic" else "scar_non_ischaemic")
    excess = max(ecv_scar - ecv_myocardium, knobs.SCAR_MIN_ECV_EXCESS)
    ecv_scar = min(ecv_myocardium + excess * scar_contrast_scale, 0.9)
    ecv = {
        "blood": 1.0 - haematocrit,  # so that ΔR1 · ECV/(1 − Hct) = ΔR1_blood
        "myocardium": ecv_myocardium,
        "scar": ecv_scar,
        "muscle": draw("muscle"),
        "liver": draw("liver"),
        "lung": draw("lung"),
        "marrow": draw("marrow"),
        "fat": 0.0,  # gadolinium barely reaches fat
    }
    t1 = {
        material: 1.0 / (1.0 / native[material] + delta_r1_blood * ecv[material] / (1.0 - haematocrit))
        for material in native
    }
    t1["air"] = 1000.0
    return Relaxation(
        t1_ms=t1,
        proton_density=dict(knobs.PROTON_DENSITY),
        haematocrit=haematocrit,
        ecv=ecv,
        delta_r1_blood=float(delta_r1_blood),
    )


def inversion_recovery(proton_density: np.ndarray | float, t1_ms: np.ndarray | float, ti_ms: float):
    """Signed longitudinal magnetisation read out at TI after an ideal inversion."""
    return proton_density * (1.0 - 2.0 * np.exp(-ti_ms / np.asarray(t1_ms)))


def tissue_signal_table(relaxation: Relaxation, ti_ms: float) -> np.ndarray:
    """Signed IR signal of every ``Tissue`` code, for lookup by a tissue map."""
    table = np.zeros(len(Tissue), dtype=np.float32)
    for tissue, material in TISSUE_MATERIAL.items():
        table[tissue] = inversion_recovery(relaxation.proton_density[material], relaxation.t1_ms[material], ti_ms)
    return table


def point_spread(signal: np.ndarray, sigma_px: float) -> np.ndarray:
    """In-plane blur of a [slice, row, column] stack (k-space truncation, interpolation)."""
    return ndimage.gaussian_filter(signal, sigma=(0.0, sigma_px, sigma_px), mode="nearest")


def bias_field(
    rng: np.random.Generator, shape: tuple[int, int, int], log_amplitude: float, centre_px: tuple[float, float]
) -> np.ndarray:
    """Smooth multiplicative coil/B1 field, 1 at the heart's centre, log-sd ``log_amplitude``."""
    n_slices, rows, columns = shape
    zz = np.linspace(-1.0, 1.0, n_slices)[:, None, None] if n_slices > 1 else np.zeros((1, 1, 1))
    yy = (np.arange(rows)[None, :, None] - (rows - 1) / 2) / (rows / 2)
    xx = (np.arange(columns)[None, None, :] - (columns - 1) / 2) / (columns / 2)
    basis = [xx, yy, xx * xx - 1 / 3, xx * yy, yy * yy - 1 / 3, 0.3 * zz]
    coefficients = rng.normal(0.0, 1.0, size=len(basis))
    log_field = sum(c * b for c, b in zip(coefficients, basis))
    log_field = np.broadcast_to(log_field, shape)
    log_field = log_field * (log_amplitude / max(float(log_field.std()), 1e-6))
    cy = int(np.clip(round(centre_px[0]), 0, rows - 1))
    cx = int(np.clip(round(centre_px[1]), 0, columns - 1))
    log_field = log_field - log_field[n_slices // 2, cy, cx]
    return np.exp(log_field).astype(np.float32)


def rician_magnitude(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """|signal + complex Gaussian noise|: the magnitude image a scanner reconstructs."""
    real = signal + rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
    return np.hypot(real, imaginary)


# Standard normal quantiles at 2^16 equally likely levels: a normal deviate per random uint16,
# several times cheaper than drawing normals (tails cut at ±4.2 sd, invisible in images).
_NORMAL_LEVELS = special.ndtri((np.arange(2**16) + 0.5) / 2**16).astype(np.float32)


def standard_normal_f32(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    return _NORMAL_LEVELS[np.frombuffer(rng.bytes(2 * n), dtype="<u2")].reshape(shape)


def rician_magnitude_f32(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """``rician_magnitude`` with quantised float32 noise: the exam's cines hold millions of pixels."""
    real = standard_normal_f32(rng, signal.shape)
    real *= np.float32(sigma)
    real += signal
    imaginary = standard_normal_f32(rng, signal.shape)
    imaginary *= np.float32(sigma)
    real *= real
    imaginary *= imaginary
    real += imaginary
    return np.sqrt(real, out=real)
