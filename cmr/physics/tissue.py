"""Tissue relaxation for mapping: native T1/T2 by field strength, post-contrast T1 from ECV.

Native T1 values are the LGE phantom's (``cmr.phantom.knobs.NATIVE_T1_MS``), so
both tasks see the same tissue. Post-contrast relaxation uses fast water
exchange and an extracellular agent of relaxivity r1 at plasma concentration
Cp (mM):

    R1_post = R1_native + r1 · ECV · Cp          (tissue)
    R1_post = R1_native + r1 · (1 − Hct) · Cp    (blood: its ECV is the plasma fraction)

so that ``ECV = (1 − Hct) · ΔR1_myocardium / ΔR1_blood`` holds exactly: the
ground truth that ECV mapping estimates. Values, ranges and sources:
docs/mapping.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr.phantom import knobs

FIELD_STRENGTHS = ("1.5T", "3T")
MATERIALS = ("air", "lung", "fat", "muscle", "liver", "blood", "marrow", "myocardium", "scar")

# (1.5 T, 3 T), ms. Myocardium: von Knobelsdorff-Brenkenhoff 2013, Baessler 2015;
# blood: arterial, oxygenated; others: Stanisz 2005, de Bazelaire 2004.
NATIVE_T2_MS = {
    "air": (1.0, 1.0),
    "lung": (40.0, 35.0),
    "fat": (75.0, 65.0),
    "muscle": (35.0, 32.0),
    "liver": (46.0, 34.0),
    "blood": (250.0, 180.0),
    "marrow": (50.0, 45.0),
    "myocardium": (52.0, 46.0),
    "scar": (58.0, 52.0),  # chronic fibrosis, mildly above remote
}
# Between-subject spread of healthy native values (ms, sd).
NATIVE_T1_SD_MS = {"myocardium": (25.0, 30.0), "blood": (50.0, 60.0), "scar": (40.0, 45.0)}
NATIVE_T2_SD_MS = {"myocardium": (2.5, 2.5), "blood": (20.0, 15.0), "scar": (4.0, 4.0)}
# Women's native myocardial T1 is higher (Piechnik 2013, Dabir 2014; larger under 45 years).
FEMALE_MYOCARDIAL_T1_EXCESS_MS = 20.0
# Residual scatter of native T1 between vendors' MOLLI implementations (Dabir 2014
# reports centre/vendor means within about ±30 ms): illustrative offsets, added to
# myocardium, scar and blood.
VENDOR_NATIVE_T1_OFFSET_MS = {"Siemens": 0.0, "Philips": 12.0, "GE": -15.0, "Canon": 6.0}
# Blood R1 rises with haematocrit (Lu 2004 at 3 T: R1 = 0.52·Hct + 0.38 s⁻¹): slope in 1/ms.
BLOOD_R1_PER_HAEMATOCRIT_PER_MS = 0.52e-3
# Gd-chelate r1 in plasma at 37 °C, 1/(mM·s) (Rohrer 2005), by field.
RELAXIVITY_PER_MM_S = {"gadoterate": (3.6, 3.5), "gadobutrol": (5.2, 5.0)}
# Plasma Gd ~10-20 min after 0.1-0.2 mmol/kg (sets blood post-contrast T1 ≈ 300-500 ms at 1.5 T).
PLASMA_GD_MM = (0.6, 1.2)


@dataclass(frozen=True)
class TissueRelaxation:
    t1_native_ms: float
    t2_ms: float
    proton_density: float
    ecv: float  # blood: 1 − Hct
    t1_post_ms: float


@dataclass(frozen=True)
class Examination:
    """Every material's relaxation in one patient on one scanner, before and after contrast."""

    field_strength: str
    vendor: str
    haematocrit: float
    contrast_agent: str
    plasma_gd_mm: float
    relaxivity_per_mm_s: float
    tissues: dict[str, TissueRelaxation]


def field_index(field_strength: str) -> int:
    if field_strength not in FIELD_STRENGTHS:
        raise ValueError(f"field_strength: expected one of {FIELD_STRENGTHS}, got {field_strength!r}")
    return FIELD_STRENGTHS.index(field_strength)


def blood_ecv(haematocrit: float) -> float:
    """Blood's extracellular (plasma) fraction."""
    return 1.0 - haematocrit


def post_contrast_t1_ms(
    native_t1_ms: np.ndarray | float, ecv: np.ndarray | float, plasma_gd_mm: float, relaxivity_per_mm_s: float
) -> np.ndarray | float:
    """T1 after contrast: ``1/T1 = 1/T1_native + r1 · ECV · Cp`` (r1 per mM per s, so /1000 per ms)."""
    return 1.0 / (1.0 / np.asarray(native_t1_ms) + relaxivity_per_mm_s * np.asarray(ecv) * plasma_gd_mm / 1000.0)


def sample_examination(
    rng: np.random.Generator,
    field_strength: str,
    vendor: str,
    sex: str,
    scar_type: str = "none",
    haematocrit: float | None = None,
    contrast_agent: str = "gadoterate",
) -> Examination:
    """Draw one patient's tissue values; ``sex`` is ``"female"`` or ``"male"``."""
    index = field_index(field_strength)
    if vendor not in VENDOR_NATIVE_T1_OFFSET_MS:
        raise ValueError(f"vendor: expected one of {tuple(VENDOR_NATIVE_T1_OFFSET_MS)}, got {vendor!r}")
    if sex not in ("female", "male"):
        raise ValueError(f"sex: expected female or male, got {sex!r}")
    if contrast_agent not in RELAXIVITY_PER_MM_S:
        raise ValueError(f"contrast_agent: expected one of {tuple(RELAXIVITY_PER_MM_S)}, got {contrast_agent!r}")
    if haematocrit is None:
        haematocrit = float(
            np.clip(rng.normal(knobs.HAEMATOCRIT_MEAN[sex], knobs.HAEMATOCRIT_SD), *knobs.HAEMATOCRIT_CLIP)
        )
    elif not 0.15 <= haematocrit <= 0.65:
        raise ValueError(f"haematocrit: expected a fraction within 0.15-0.65, got {haematocrit}")
    plasma_gd = float(rng.uniform(*PLASMA_GD_MM))
    relaxivity = RELAXIVITY_PER_MM_S[contrast_agent][index]

    def ecv_draw(name: str) -> float:
        mean, sd = knobs.ECV[name]
        return float(np.clip(rng.normal(mean, sd), 0.05, 0.9))

    ecv_myocardium = float(np.clip(ecv_draw(f"myocardium_{sex}"), *knobs.ECV_MYOCARDIUM_CLIP))
    ecv_scar = ecv_draw("scar_ischaemic" if scar_type == "ischaemic" else "scar_non_ischaemic")
    ecv_scar = min(max(ecv_scar, ecv_myocardium + knobs.SCAR_MIN_ECV_EXCESS), 0.9)
    ecv = {
        "air": 0.0,
        "fat": 0.0,
        "blood": blood_ecv(haematocrit),
        "myocardium": ecv_myocardium,
        "scar": ecv_scar,
        "muscle": ecv_draw("muscle"),
        "liver": ecv_draw("liver"),
        "lung": ecv_draw("lung"),
        "marrow": ecv_draw("marrow"),
    }

    offset = VENDOR_NATIVE_T1_OFFSET_MS[vendor]
    tissues = {}
    for material in MATERIALS:
        t1 = 1000.0 if material == "air" else knobs.NATIVE_T1_MS[material][index]
        t2 = NATIVE_T2_MS[material][index]
        if material in NATIVE_T1_SD_MS:
            t1 += offset + rng.normal(0.0, NATIVE_T1_SD_MS[material][index])
            t2 += rng.normal(0.0, NATIVE_T2_SD_MS[material][index])
        if material in ("myocardium", "scar") and sex == "female":
            t1 += FEMALE_MYOCARDIAL_T1_EXCESS_MS
        if material == "blood":  # reference values are at the sex's mean haematocrit
            r1 = 1.0 / t1 + BLOOD_R1_PER_HAEMATOCRIT_PER_MS * (haematocrit - knobs.HAEMATOCRIT_MEAN[sex])
            t1 = 1.0 / r1
        post = t1 if material == "air" else float(post_contrast_t1_ms(t1, ecv[material], plasma_gd, relaxivity))
        tissues[material] = TissueRelaxation(
            t1_native_ms=float(t1),
            t2_ms=float(max(t2, 1.0)),
            proton_density=knobs.PROTON_DENSITY[material],
            ecv=float(ecv[material]),
            t1_post_ms=float(post),
        )
    return Examination(
        field_strength=field_strength,
        vendor=vendor,
        haematocrit=float(haematocrit),
        contrast_agent=contrast_agent,
        plasma_gd_mm=plasma_gd,
        relaxivity_per_mm_s=relaxivity,
        tissues=tissues,
    )
