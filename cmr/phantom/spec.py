"""What the generator decided: sites, scanners, patient mixes and per-case truth.

These records are the generator's ground truth, written to ``consortium.json``.
A hospital would never hold them; tests and benchmarks read them to know what
the data should show.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cmr.attributes import AGE_BANDS, ETHNICITIES, SEXES
from cmr.phantom import knobs

GENERATOR_VERSION = "1"
SUBGROUP_ATTRIBUTES = ("sex", "ethnicity", "age_band")


@dataclass(frozen=True)
class SubgroupDifficulty:
    """An injected gap: one group's cases are made harder than anatomy alone would.

    ``attribute`` is one of ``sex``, ``ethnicity``, ``age_band`` and ``group`` a
    value of it in the cmr.attributes vocabulary (``"female"``, ``"Black"``,
    ``"75+"``). Off (``None`` on the consortium) unless a benchmark asks for it.
    """

    attribute: str
    group: str
    wall_thickness_scale: float = knobs.DIFFICULTY_WALL_SCALE
    snr_scale: float = knobs.DIFFICULTY_SNR_SCALE
    # Scales the scar ECV excess over remote myocardium.
    scar_contrast_scale: float = knobs.DIFFICULTY_SCAR_ECV_SCALE

    def __post_init__(self) -> None:
        if self.attribute not in SUBGROUP_ATTRIBUTES:
            raise ValueError(
                f"subgroup_difficulty.attribute: expected one of {SUBGROUP_ATTRIBUTES}, got {self.attribute!r}"
            )
        vocabulary = {"sex": SEXES, "ethnicity": ETHNICITIES, "age_band": AGE_BANDS}[self.attribute]
        if self.group not in vocabulary:
            raise ValueError(
                f"subgroup_difficulty.group: {self.group!r} is not a {self.attribute} value;"
                f" expected one of {vocabulary}"
            )
        for name in ("wall_thickness_scale", "snr_scale", "scar_contrast_scale"):
            value = getattr(self, name)
            if not 0.2 <= value <= 2.0:
                raise ValueError(f"subgroup_difficulty.{name}: expected 0.2-2.0, got {value}")


@dataclass(frozen=True)
class DemographicMix:
    """Who a hospital sees: its referral population."""

    name: str
    ethnicity_weights: dict[str, float]  # cmr.attributes.ETHNICITIES (without unknown)
    male_fraction: float
    age_mean_years: float
    bmi_mean: float
    scar_type_fractions: dict[str, float]  # none / ischaemic / non_ischaemic


@dataclass(frozen=True)
class ScannerProfile:
    """One site's scanner and LGE protocol, as its DICOM headers and images show it."""

    vendor: str  # normalised (cmr.attributes.VENDORS)
    manufacturer: str  # the raw string the scanner writes
    model: str
    field_strength_t: float
    software_version: str
    station_name: str
    device_serial_number: str
    series_description: str
    image_type: tuple[str, ...]
    scanning_sequence: str
    sequence_variant: str
    sequence_name: str
    repetition_time_ms: float
    echo_time_ms: float
    flip_angle_deg: float
    pixel_spacing_mm: float
    rows: int
    columns: int
    slice_thickness_mm: float
    slice_gap_mm: float
    ti_offset_ms: float  # mis-nulling: chosen TI minus the myocardial null
    snr_blood: float
    bias_log_amplitude: float
    psf_sigma_px: float
    raw_gain: float  # stored-value scale of a fully relaxed proton density of 1
    rescale_slope: float | None  # None: the vendor writes no rescale tags
    rescale_intercept: float | None

    @property
    def spacing_between_slices_mm(self) -> float:
        return round(self.slice_thickness_mm + self.slice_gap_mm, 2)


@dataclass(frozen=True)
class SiteSpec:
    site_id: str  # "site-01"
    institution_name: str
    institution_address: str
    scanner: ScannerProfile
    demographics: DemographicMix


@dataclass(frozen=True)
class ExamSeriesTruth:
    """One series of a patient's examination, as written."""

    kind: str  # a cmr.series_kinds.SeriesKind value
    series_instance_uid: str
    series_number: int
    dicom_dir: str  # relative to the consortium folder
    n_images: int  # files in dicom_dir
    series_description: str
    contrast: str = ""  # MOLLI and T1 maps: "native" or "post"


@dataclass(frozen=True)
class CaseTruth:
    """Everything known about one generated case (one patient, its LGE series and the rest of its exam)."""

    site_id: str
    case_index: int
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    series_number: int
    study_date: str
    dicom_dir: str  # relative to the consortium folder
    mask_file: str  # relative to the consortium folder
    sex: str  # "male" / "female"
    age_years: int
    age_band: str
    ethnicity: str  # true group, cmr.attributes vocabulary
    ethnicity_recorded: str  # manifest value; "" when unrecorded
    ethnic_group_dicom: str | None  # free text in EthnicGroup, None when absent
    height_cm: float
    weight_kg: float
    bmi: float
    bsa_m2: float
    scar_type: str  # none / ischaemic / non_ischaemic
    scar_pattern: str  # none, LAD / RCA / LCx, hcm / dcm_midwall / myocarditis
    scar_burden_percent: float  # scar voxels / LV myocardial voxels of the mask
    myocardial_volume_ml: float
    scar_volume_ml: float
    wall_thickness_mm: float  # mean mid-ventricular wall before disease remodelling
    cavity_diameter_mm: float
    long_axis_mm: float
    n_slices: int
    inversion_time_ms: float
    myocardium_null_ti_ms: float
    snr_blood: float
    harder_group: bool  # the subgroup_difficulty applied to this case
    # Every series written for the patient, the LGE stack included, in acquisition order
    # (empty in consortium.json files written before whole exams).
    exam_series: tuple[ExamSeriesTruth, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseTruth:
        exam = tuple(ExamSeriesTruth(**series) for series in data.get("exam_series", ()))
        return cls(**{**data, "exam_series": exam})


@dataclass(frozen=True)
class ConsortiumSpec:
    seed: int
    n_sites: int
    cases_per_site: int
    sites: tuple[SiteSpec, ...]
    cases: tuple[CaseTruth, ...] = ()
    subgroup_difficulty: SubgroupDifficulty | None = None
    generator_version: str = GENERATOR_VERSION
    notes: dict[str, str] = field(default_factory=dict)

    def site(self, site_id: str) -> SiteSpec:
        for site in self.sites:
            if site.site_id == site_id:
                return site
        raise KeyError(f"no site {site_id!r} in the consortium (have {[s.site_id for s in self.sites]})")

    def cases_at(self, site_id: str) -> list[CaseTruth]:
        return [case for case in self.cases if case.site_id == site_id]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsortiumSpec:
        sites = tuple(
            SiteSpec(
                site_id=s["site_id"],
                institution_name=s["institution_name"],
                institution_address=s["institution_address"],
                scanner=ScannerProfile(**{**s["scanner"], "image_type": tuple(s["scanner"]["image_type"])}),
                demographics=DemographicMix(**s["demographics"]),
            )
            for s in data["sites"]
        )
        difficulty = data.get("subgroup_difficulty")
        return cls(
            seed=data["seed"],
            n_sites=data["n_sites"],
            cases_per_site=data["cases_per_site"],
            sites=sites,
            cases=tuple(CaseTruth.from_dict(c) for c in data["cases"]),
            subgroup_difficulty=SubgroupDifficulty(**difficulty) if difficulty else None,
            generator_version=data.get("generator_version", GENERATOR_VERSION),
            notes=data.get("notes", {}),
        )

    @classmethod
    def load(cls, path: Path | str) -> ConsortiumSpec:
        """Read ``consortium.json`` (the file or the consortium folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "consortium.json"
        return cls.from_dict(json.loads(path.read_text()))
