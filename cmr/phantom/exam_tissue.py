"""The patient's tissue for the series around the LGE stack, and the bSSFP signal they give.

Native T1 and T2 come from cmr.physics.tissue (its between-subject, sex and vendor
variation; native T1 is higher in scar). Post-contrast T1 (the post-contrast MOLLI)
uses the *LGE's* extracellular volumes, haematocrit and blood ΔR1
(``Relaxation``), through the same fast-exchange model as cmr.physics.tissue, so
that ECV from the MOLLI pair is the ECV that made the LGE contrast. Arrays are
indexed by ``Tissue`` code, for lookup by a tissue map.

Cine, localizer and the MOLLI/T2-prep readouts are balanced SSFP; its steady state
on resonance (Scheffler & Lehnhardt 2003) with TE = TR/2,

    S = PD · sin α (1 − E1) / (1 − (E1 − E2) cos α − E1·E2) · exp(−TE/T2),

depends mostly on T2/T1: blood and fat bright, myocardium and liver dark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr.phantom.anatomy import TISSUE_MATERIAL, Tissue
from cmr.phantom.lge_signal import Relaxation
from cmr.physics.tissue import RELAXIVITY_PER_MM_S, field_index, post_contrast_t1_ms, sample_examination

CONTRAST_AGENT = "gadoterate"


@dataclass(frozen=True)
class ExamTissue:
    t1_native_ms: np.ndarray  # per Tissue code
    t1_post_ms: np.ndarray  # at the post-contrast MOLLI
    t2_ms: np.ndarray
    proton_density: np.ndarray
    haematocrit: float


def sample_exam_tissue(
    rng: np.random.Generator, relaxation: Relaxation, field_strength_t: float, vendor: str, sex: str, scar_type: str
) -> ExamTissue:
    field = "1.5T" if field_strength_t < 2.0 else "3T"
    native = sample_examination(rng, field, vendor, sex, scar_type, relaxation.haematocrit, CONTRAST_AGENT)
    relaxivity = RELAXIVITY_PER_MM_S[CONTRAST_AGENT][field_index(field)]
    # The LGE's ΔR1_blood·ECV/(1 − Hct) is r1·Cp·ECV: the plasma Gd concentration that gave it.
    plasma_gd_mm = 1000.0 * relaxation.delta_r1_blood / ((1.0 - relaxation.haematocrit) * relaxivity)
    arrays = {name: np.zeros(len(Tissue)) for name in ("t1", "post", "t2", "pd")}
    for code, material in TISSUE_MATERIAL.items():
        values = native.tissues[material]
        ecv = relaxation.ecv.get(material, 0.0)
        arrays["t1"][code] = values.t1_native_ms
        arrays["post"][code] = post_contrast_t1_ms(values.t1_native_ms, ecv, plasma_gd_mm, relaxivity)
        arrays["t2"][code] = values.t2_ms
        arrays["pd"][code] = values.proton_density
    return ExamTissue(
        t1_native_ms=arrays["t1"],
        t1_post_ms=arrays["post"],
        t2_ms=arrays["t2"],
        proton_density=arrays["pd"],
        haematocrit=relaxation.haematocrit,
    )


def bssfp_table(tissue: ExamTissue, flip_deg: float, tr_ms: float) -> np.ndarray:
    """Steady-state bSSFP signal of every ``Tissue`` code (native relaxation), float32."""
    e1 = np.exp(-tr_ms / tissue.t1_native_ms)
    e2 = np.exp(-tr_ms / tissue.t2_ms)
    alpha = np.deg2rad(flip_deg)
    steady = np.sin(alpha) * (1.0 - e1) / (1.0 - (e1 - e2) * np.cos(alpha) - e1 * e2)
    return (tissue.proton_density * steady * np.exp(-tr_ms / 2.0 / tissue.t2_ms)).astype(np.float32)
