"""Who each hospital scans: site patient mixes and the patients drawn from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr.phantom import knobs
from cmr.phantom.spec import DemographicMix

ETHNIC_GROUPS = ("White", "Black", "Asian", "Mixed", "Other")
SCAR_TYPES = ("none", "ischaemic", "non_ischaemic")

# Referral populations of the kind a consortium really has. The first three are
# dealt (in a seed-dependent order) to sites 1-3, the fourth to site 4, so that any
# consortium of three sites has a >80 % White site and a site with a large Black
# and Asian share.
_ARCHETYPES = (
    DemographicMix(
        name="white_majority_regional",
        ethnicity_weights={"White": 0.88, "Black": 0.03, "Asian": 0.05, "Mixed": 0.02, "Other": 0.02},
        male_fraction=0.70,
        age_mean_years=64.0,
        bmi_mean=28.5,
        scar_type_fractions={"none": 0.35, "ischaemic": 0.42, "non_ischaemic": 0.23},
    ),
    DemographicMix(
        name="urban_diverse",
        ethnicity_weights={"White": 0.36, "Black": 0.30, "Asian": 0.26, "Mixed": 0.05, "Other": 0.03},
        male_fraction=0.54,
        age_mean_years=53.0,
        bmi_mean=27.5,
        scar_type_fractions={"none": 0.45, "ischaemic": 0.28, "non_ischaemic": 0.27},
    ),
    DemographicMix(
        name="south_asian_community",
        ethnicity_weights={"White": 0.45, "Black": 0.07, "Asian": 0.41, "Mixed": 0.04, "Other": 0.03},
        male_fraction=0.62,
        age_mean_years=58.0,
        bmi_mean=26.5,
        scar_type_fractions={"none": 0.40, "ischaemic": 0.38, "non_ischaemic": 0.22},
    ),
    DemographicMix(
        name="mixed_teaching_hospital",
        ethnicity_weights={"White": 0.66, "Black": 0.12, "Asian": 0.14, "Mixed": 0.05, "Other": 0.03},
        male_fraction=0.60,
        age_mean_years=60.0,
        bmi_mean=28.0,
        scar_type_fractions={"none": 0.40, "ischaemic": 0.33, "non_ischaemic": 0.27},
    ),
)


def site_demographics(
    site_index: int, rng_consortium: np.random.Generator, rng_site: np.random.Generator
) -> DemographicMix:
    """The referral population of site ``site_index`` (0-based)."""
    order = rng_consortium.permutation(3)
    if site_index < 3:
        return _ARCHETYPES[int(order[site_index])]
    if site_index == 3:
        return _ARCHETYPES[3]
    weights = rng_site.dirichlet([6.0, 1.5, 1.5, 0.5, 0.4])
    scar = rng_site.dirichlet(
        [knobs.REGIONAL_SCAR_TYPE_CONCENTRATION * knobs.SCAR_TYPE_FRACTIONS[t] for t in SCAR_TYPES]
    )
    return DemographicMix(
        name=f"regional_{site_index + 1:02d}",
        ethnicity_weights={g: round(float(w), 3) for g, w in zip(ETHNIC_GROUPS, weights)},
        male_fraction=round(float(rng_site.uniform(0.5, 0.72)), 2),
        age_mean_years=round(float(rng_site.uniform(52.0, 66.0)), 1),
        bmi_mean=round(float(rng_site.uniform(26.0, 29.5)), 1),
        scar_type_fractions={t: round(float(w), 3) for t, w in zip(SCAR_TYPES, scar)},
    )


@dataclass(frozen=True)
class Patient:
    sex: str  # "male" / "female"
    age_years: int
    ethnicity: str
    height_cm: float
    weight_kg: float

    @property
    def bmi(self) -> float:
        return self.weight_kg / (self.height_cm / 100.0) ** 2

    @property
    def bsa_m2(self) -> float:
        """Mosteller body surface area."""
        return float(np.sqrt(self.height_cm * self.weight_kg / 3600.0))

    @property
    def age_band(self) -> str:
        return age_band(self.age_years)


def age_band(age_years: float) -> str:
    if age_years < 18:
        return "0-17"
    if age_years < 40:
        return "18-39"
    if age_years < 60:
        return "40-59"
    if age_years < 75:
        return "60-74"
    return "75+"


def sample_patient(rng: np.random.Generator, mix: DemographicMix) -> Patient:
    sex = "male" if rng.random() < mix.male_fraction else "female"
    weights = np.array([mix.ethnicity_weights.get(g, 0.0) for g in ETHNIC_GROUPS])
    ethnicity = ETHNIC_GROUPS[int(rng.choice(len(ETHNIC_GROUPS), p=weights / weights.sum()))]
    age = float(np.clip(rng.normal(mix.age_mean_years, knobs.AGE_SD_YEARS), *knobs.AGE_CLIP_YEARS))
    height = rng.normal(
        knobs.HEIGHT_MEAN_CM[sex] + knobs.HEIGHT_ETHNICITY_OFFSET_CM[ethnicity], knobs.HEIGHT_SD_CM[sex]
    )
    height = float(np.clip(height, *knobs.HEIGHT_CLIP_CM))
    bmi = float(np.clip(rng.normal(mix.bmi_mean + knobs.BMI_SEX_OFFSET[sex], knobs.BMI_SD), *knobs.BMI_CLIP))
    weight = bmi * (height / 100.0) ** 2
    return Patient(
        sex=sex,
        age_years=int(age),
        ethnicity=ethnicity,
        height_cm=round(height, 1),
        weight_kg=round(weight, 1),
    )


def assign_scar_types(rng: np.random.Generator, patients: list[Patient], fractions: dict[str, float]) -> list[str]:
    """Scar type per patient: site quotas, with infarcts going preferentially to older men."""
    n = len(patients)
    n_ischaemic = round(fractions["ischaemic"] * n)
    n_non_ischaemic = round(fractions["non_ischaemic"] * n)
    if n_ischaemic + n_non_ischaemic > n:
        n_non_ischaemic = n - n_ischaemic
    types = ["none"] * n
    weights = np.array(
        [knobs.ISCHAEMIC_OLDER_MALE_ODDS if (p.sex == "male" and p.age_years >= 55) else 1.0 for p in patients]
    )
    ischaemic = (
        rng.choice(n, size=n_ischaemic, replace=False, p=weights / weights.sum()) if n_ischaemic else np.empty(0, int)
    )
    for i in ischaemic:
        types[int(i)] = "ischaemic"
    remaining = [i for i in range(n) if types[i] == "none"]
    for i in rng.permutation(remaining)[:n_non_ischaemic]:
        types[int(i)] = "non_ischaemic"
    return types
