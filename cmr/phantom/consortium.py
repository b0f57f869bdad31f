"""A consortium of synthetic hospitals: plan the sites, then generate and write every case.

A case is one patient: the LGE short-axis stack (its mask and manifest row) and, with
``whole_exam``, the rest of the patient's CMR exam (cmr.phantom.exam).

Every random draw comes from its own stream keyed by (seed, site, case, purpose),
and every UID is a name-based UUID of (seed, site, case, role), so the same
arguments write the same bytes. Adding sites leaves the existing sites unchanged;
changing the number of cases per site keeps each existing patient, though their
scar-type quotas depend on it.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from enum import IntEnum
from pathlib import Path

import numpy as np

from cmr.labels import TissueLabel
from cmr.phantom import knobs
from cmr.phantom.acquisition import plan_acquisition
from cmr.phantom.anatomy import sample_heart
from cmr.phantom.demographics import Patient, assign_scar_types, sample_patient, site_demographics
from cmr.phantom.dicom_writer import SeriesUids, encode_pixels, series_folder_name, write_lge_series
from cmr.phantom.exam import ExamStreams, LgeCase, write_exam
from cmr.phantom.exam_protocols import site_exam_protocol
from cmr.phantom.exam_tissue import sample_exam_tissue
from cmr.phantom.identity import derive_uid, institution, sample_identity
from cmr.phantom.lge_signal import sample_relaxation, tissue_signal_table
from cmr.phantom.mask_writer import write_mask
from cmr.phantom.render import render_magnitude, render_mask, render_signal, render_tissue
from cmr.phantom.scanners import sample_scanner, site_vendor_and_field
from cmr.phantom.scar import sample_scar, sample_scar_pattern
from cmr.phantom.spec import CaseTruth, ConsortiumSpec, ExamSeriesTruth, SiteSpec, SubgroupDifficulty
from cmr.series_kinds import SeriesKind

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    "patient_id",
    "series_instance_uid",
    "mask_file",
    "ethnicity",
    "scar_type",
    "height_cm",
    "weight_kg",
    "haematocrit",  # MOLLI rows (whole exams); blank for LGE rows
    "contrast",  # MOLLI rows: native / post
)
_LGE_COLUMNS = MANIFEST_COLUMNS[:7]  # an LGE-only consortium writes the manifest it always did
_SITE_FOLDER = re.compile(r"site-\d{2,}")


class _Stream(IntEnum):
    """Purpose of a random stream; part of the seed key, so never renumber."""

    VENDORS = 1
    ARCHETYPES = 2
    SCANNER = 3
    DEMOGRAPHICS = 4
    SCAR_ASSIGNMENT = 5
    PATIENT = 10
    IDENTITY = 11
    SCAR_PATTERN = 12
    HEART = 13
    SCAR = 14
    RELAXATION = 15
    ACQUISITION = 16
    BIAS = 17
    NOISE = 18
    # The rest of the exam (cmr.phantom.exam): each its own stream, so LGE draws never shift.
    EXAM_PROTOCOL = 19  # per site
    EXAM_TISSUE = 20
    CINE = 21
    CINE_NOISE = 22
    LOCALIZER = 23
    LGE_LONG_AXIS = 24
    MAPPING = 25


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**64, *key])


def site_id(site_index: int) -> str:
    return f"site-{site_index + 1:02d}"


def plan_sites(n_sites: int, seed: int) -> tuple[SiteSpec, ...]:
    """Each site's scanner, protocol and patient mix (no cases yet)."""
    sites = []
    for index in range(n_sites):
        vendor, field = site_vendor_and_field(
            index, _rng(seed, 0, _Stream.VENDORS), _rng(seed, 1, index, _Stream.VENDORS)
        )
        name, address = institution(index)
        sites.append(
            SiteSpec(
                site_id=site_id(index),
                institution_name=name,
                institution_address=address,
                scanner=sample_scanner(_rng(seed, 1, index, _Stream.SCANNER), index, vendor, field),
                demographics=site_demographics(
                    index, _rng(seed, 0, _Stream.ARCHETYPES), _rng(seed, 1, index, _Stream.DEMOGRAPHICS)
                ),
            )
        )
    return tuple(sites)


def _in_harder_group(patient: Patient, difficulty: SubgroupDifficulty) -> bool:
    value = {"sex": patient.sex, "ethnicity": patient.ethnicity, "age_band": patient.age_band}[difficulty.attribute]
    return value == difficulty.group


def prepare_output(out_dir: Path) -> None:
    """Create ``out_dir``; replace an earlier phantom there, refuse to touch anything else."""
    out_dir.mkdir(parents=True, exist_ok=True)
    foreign = [
        p.name
        for p in out_dir.iterdir()
        if not (p.name == "consortium.json" or (p.is_dir() and _SITE_FOLDER.fullmatch(p.name)))
    ]
    if foreign:
        raise FileExistsError(
            f"{out_dir}: holds {sorted(foreign)[:5]}, which is not phantom output; choose an empty folder"
        )
    for path in out_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _write_rest_of_exam(
    out_dir: Path, lge: LgeCase, site_index: int, case_index: int, scar_type: str, seed: int
) -> tuple[tuple[ExamSeriesTruth, ...], tuple[tuple[str, ...], ...]]:
    """Every series of the patient's exam but the LGE stack; the truth of all and the MOLLI manifest rows."""
    key = (seed, 2, site_index, case_index)
    scanner, patient, identity = lge.site.scanner, lge.patient, lge.identity
    exam = write_exam(
        out_dir,
        lge,
        sample_exam_tissue(
            _rng(*key, _Stream.EXAM_TISSUE),
            lge.relaxation,
            scanner.field_strength_t,
            scanner.vendor,
            patient.sex,
            scar_type,
        ),
        site_exam_protocol(_rng(seed, 1, site_index, _Stream.EXAM_PROTOCOL), scanner, knobs.CINE_PHASES),
        ExamStreams(
            cine=_rng(*key, _Stream.CINE),
            cine_noise=_rng(*key, _Stream.CINE_NOISE),
            localizer=_rng(*key, _Stream.LOCALIZER),
            lge_long_axis=_rng(*key, _Stream.LGE_LONG_AXIS),
            mapping=_rng(*key, _Stream.MAPPING),
            psir_bias=_rng(*key, _Stream.BIAS),  # fresh copies: the PSIR shares the magnitude's
            psir_noise=_rng(*key, _Stream.NOISE),  # coil field and noise, and consumes nothing
        ),
        lambda *role: derive_uid(seed, site_index, case_index, *role),
    )
    rows = tuple(
        (
            identity.patient_id,
            row.series_instance_uid,
            f"{row.series_instance_uid}.nii.gz",
            identity.ethnicity_recorded,
            scar_type,
            f"{patient.height_cm:.1f}",
            f"{patient.weight_kg:.1f}",
            row.haematocrit,
            row.contrast,
        )
        for row in exam.mapping_rows
    )
    return exam.series, rows


def _write_case(
    out_dir: Path,
    site: SiteSpec,
    site_index: int,
    case_index: int,
    cases_per_site: int,
    patient: Patient,
    scar_type: str,
    seed: int,
    difficulty: SubgroupDifficulty | None,
    whole_exam: bool = False,
) -> tuple[CaseTruth, tuple[tuple[str, ...], ...]]:
    """Write one patient's LGE series (and, with ``whole_exam``, the rest of the exam).

    Returns the truth and the manifest rows of the exam's mapping series (none for LGE only).
    """
    key = (seed, 2, site_index, case_index)
    scanner = site.scanner
    identity = sample_identity(
        _rng(*key, _Stream.IDENTITY),
        site_index,
        case_index,
        cases_per_site,
        patient,
        *knobs.STUDY_YEARS,
        ethnic_group_in_dicom_fraction=knobs.ETHNIC_GROUP_IN_DICOM_FRACTION,
        ethnicity_unrecorded_fraction=knobs.ETHNICITY_UNRECORDED_FRACTION,
    )
    harder = difficulty is not None and _in_harder_group(patient, difficulty)
    wall_scale = snr_scale = contrast_scale = 1.0
    if harder and difficulty is not None:
        wall_scale, snr_scale, contrast_scale = (
            difficulty.wall_thickness_scale,
            difficulty.snr_scale,
            difficulty.scar_contrast_scale,
        )

    pattern = sample_scar_pattern(_rng(*key, _Stream.SCAR_PATTERN), scar_type)
    heart = sample_heart(_rng(*key, _Stream.HEART), patient, pattern, wall_scale)
    relaxation = sample_relaxation(
        _rng(*key, _Stream.RELAXATION), scanner.field_strength_t, patient.sex, scar_type, contrast_scale
    )
    acquisition = plan_acquisition(
        _rng(*key, _Stream.ACQUISITION), scanner, heart, relaxation.myocardium_null_ti_ms, snr_scale
    )

    scar_rng = _rng(*key, _Stream.SCAR)
    for attempt in range(8):
        scar = sample_scar(scar_rng, pattern, heart, size_boost=1.0 + 0.25 * attempt)
        tissue = render_tissue(heart, scar, acquisition)
        mask = render_mask(tissue)
        if pattern == "none" or int((mask == TissueLabel.SCAR).sum()) >= knobs.MIN_SCAR_VOXELS:
            break
    else:
        raise RuntimeError(f"{site.site_id} case {case_index}: could not place a visible {pattern} scar")

    table = tissue_signal_table(relaxation, acquisition.inversion_time_ms)
    signal = render_signal(heart, scar, acquisition, table)
    magnitude = render_magnitude(
        _rng(*key, _Stream.BIAS),
        _rng(*key, _Stream.NOISE),
        signal,
        acquisition,
        table,
        scanner.psf_sigma_px,
        scanner.bias_log_amplitude,
    )
    stored, slope, intercept = encode_pixels(magnitude, scanner, acquisition.receiver_gain)

    uids = SeriesUids(
        study=derive_uid(seed, site_index, case_index, "study"),
        series=derive_uid(seed, site_index, case_index, "series"),
        frame_of_reference=derive_uid(seed, site_index, case_index, "frame-of-reference"),
        instances=tuple(derive_uid(seed, site_index, case_index, "instance", k) for k in range(acquisition.n_slices)),
    )
    site_dir = out_dir / site.site_id
    series_dir = site_dir / "dicom" / identity.patient_id / series_folder_name(identity)
    write_lge_series(series_dir, site, patient, identity, acquisition, stored, (slope, intercept), uids)
    mask_path = site_dir / "labels" / f"{uids.series}.nii.gz"
    write_mask(mask_path, mask, acquisition.geometry)

    lge_truth = ExamSeriesTruth(
        kind=SeriesKind.LGE_STACK.value,
        series_instance_uid=uids.series,
        series_number=identity.series_number,
        dicom_dir=series_dir.relative_to(out_dir).as_posix(),
        n_images=acquisition.n_slices,
        series_description=scanner.series_description,
    )
    exam_series: tuple[ExamSeriesTruth, ...] = (lge_truth,)
    mapping_rows: tuple[tuple[str, ...], ...] = ()
    if whole_exam:
        lge = LgeCase(site, patient, identity, heart, scar, relaxation, acquisition, signal, table, uids, series_dir)
        exam_series, mapping_rows = _write_rest_of_exam(out_dir, lge, site_index, case_index, scar_type, seed)

    n_scar = int((mask == TissueLabel.SCAR).sum())
    n_myocardium = int((mask == TissueLabel.MYOCARDIUM).sum()) + n_scar
    voxel_ml = acquisition.pixel_spacing_mm**2 * scanner.spacing_between_slices_mm / 1000.0
    truth = CaseTruth(
        site_id=site.site_id,
        case_index=case_index,
        patient_id=identity.patient_id,
        study_instance_uid=uids.study,
        series_instance_uid=uids.series,
        series_number=identity.series_number,
        study_date=identity.study_date,
        dicom_dir=series_dir.relative_to(out_dir).as_posix(),
        mask_file=mask_path.relative_to(out_dir).as_posix(),
        sex=patient.sex,
        age_years=patient.age_years,
        age_band=patient.age_band,
        ethnicity=patient.ethnicity,
        ethnicity_recorded=identity.ethnicity_recorded,
        ethnic_group_dicom=identity.ethnic_group_dicom,
        height_cm=patient.height_cm,
        weight_kg=patient.weight_kg,
        bmi=round(patient.bmi, 1),
        bsa_m2=round(patient.bsa_m2, 3),
        scar_type=scar_type,
        scar_pattern=pattern,
        scar_burden_percent=round(100.0 * n_scar / max(n_myocardium, 1), 3),
        myocardial_volume_ml=round(n_myocardium * voxel_ml, 2),
        scar_volume_ml=round(n_scar * voxel_ml, 2),
        wall_thickness_mm=round(heart.wall_mm, 2),
        cavity_diameter_mm=round(2 * heart.cavity_radius_mm, 2),
        long_axis_mm=round(heart.long_axis_mm, 2),
        n_slices=acquisition.n_slices,
        inversion_time_ms=acquisition.inversion_time_ms,
        myocardium_null_ti_ms=round(relaxation.myocardium_null_ti_ms, 1),
        snr_blood=round(acquisition.snr_blood, 2),
        harder_group=harder,
        exam_series=exam_series,
    )
    return truth, mapping_rows


def _manifest_text(cases: list[tuple[CaseTruth, tuple[tuple[str, ...], ...]]]) -> str:
    """One row per LGE series, then its exam's mapping series; LGE-only: the 7 columns it always had."""
    columns = MANIFEST_COLUMNS if any(rows for _, rows in cases) else _LGE_COLUMNS
    blank = ("",) * (len(columns) - len(_LGE_COLUMNS))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for case, mapping_rows in cases:
        writer.writerow(
            (
                case.patient_id,
                case.series_instance_uid,
                Path(case.mask_file).name,  # relative to the site's labels/ folder
                case.ethnicity_recorded,
                case.scar_type,
                f"{case.height_cm:.1f}",
                f"{case.weight_kg:.1f}",
                *blank,
            )
        )
        writer.writerows(mapping_rows)
    return buffer.getvalue()


def _write_cases(
    jobs: list[tuple], workers: int, on_case_written: Callable[[], None] | None
) -> list[tuple[CaseTruth, tuple[tuple[str, ...], ...]]]:
    """``_write_case(*job)`` for every job, in order; in ``workers`` processes when more than one.

    Each case draws only from its own keyed streams, so the order in which the
    processes finish changes nothing in what they write. Spawned, not forked: the
    caller may already hold torch's or Ray's threads.
    """
    if workers <= 1 or len(jobs) <= 1:
        truths = []
        for job in jobs:
            truths.append(_write_case(*job))
            if on_case_written is not None:
                on_case_written()
        return truths
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(_write_case, *job) for job in jobs]
        for _ in as_completed(futures):
            if on_case_written is not None:
                on_case_written()
        return [future.result() for future in futures]


def generate_consortium(
    out_dir: Path,
    n_sites: int,
    cases_per_site: int,
    seed: int,
    on_case_written: Callable[[], None] | None = None,
    *,
    subgroup_difficulty: SubgroupDifficulty | None = None,
    workers: int = 1,
    whole_exam: bool = True,
) -> ConsortiumSpec:
    """Write ``n_sites`` synthetic hospitals of ``cases_per_site`` patients each into ``out_dir``.

    Layout: ``consortium.json`` (ground truth) and per site ``site-NN/dicom/<PatientID>/
    <StudyDate>_<SeriesNumber>_<NAME>/IM_0001.dcm…``, ``site-NN/labels/<SeriesInstanceUID>.nii.gz``
    and ``site-NN/manifest.csv``. ``whole_exam`` writes each patient's whole CMR exam
    (cmr.phantom.exam: localizer, cines, LGE with its PSIR and long-axis views, MOLLI and
    T2-prep with the scanner's maps); without it only the LGE short-axis stack (``NAME``
    LGE_SAX), byte for byte the same either way. The same arguments always give the same
    bytes, with any number of ``workers`` (processes writing cases side by side).
    ``subgroup_difficulty`` injects a gap for fairness benchmarks (off by default).
    """
    if n_sites < 1 or cases_per_site < 1:
        raise ValueError(f"need at least one site and one case per site, got {n_sites} x {cases_per_site}")
    out_dir = Path(out_dir)
    prepare_output(out_dir)
    sites = plan_sites(n_sites, seed)
    jobs: list[tuple] = []
    for site_index, site in enumerate(sites):
        mix = site.demographics
        patients = [
            sample_patient(_rng(seed, 2, site_index, case_index, _Stream.PATIENT), mix)
            for case_index in range(cases_per_site)
        ]
        scar_types = assign_scar_types(
            _rng(seed, 1, site_index, _Stream.SCAR_ASSIGNMENT), patients, mix.scar_type_fractions
        )
        jobs.extend(
            (
                out_dir,
                site,
                site_index,
                case_index,
                cases_per_site,
                patient,
                scar_type,
                seed,
                subgroup_difficulty,
                whole_exam,
            )
            for case_index, (patient, scar_type) in enumerate(zip(patients, scar_types))
        )
    written = _write_cases(jobs, workers, on_case_written)
    all_cases: list[CaseTruth] = []
    for site_index, site in enumerate(sites):
        site_cases = written[site_index * cases_per_site : (site_index + 1) * cases_per_site]
        (out_dir / site.site_id / "manifest.csv").write_text(_manifest_text(site_cases))
        site_truths = [case for case, _ in site_cases]
        log.info(
            "%s: %d cases, %s %s %.1f T",
            site.site_id,
            len(site_truths),
            site.scanner.manufacturer,
            site.scanner.model,
            site.scanner.field_strength_t,
        )
        all_cases.extend(site_truths)
    spec = ConsortiumSpec(
        seed=seed,
        n_sites=n_sites,
        cases_per_site=cases_per_site,
        sites=sites,
        cases=tuple(all_cases),
        subgroup_difficulty=subgroup_difficulty,
        notes={
            "layout": "site-NN/dicom/<PatientID>/<StudyDate>_<SeriesNumber>_<NAME>/IM_NNNN.dcm"
            " (NAME LGE_SAX, and with whole exams LOCALIZER, CINE_SAX, CINE_2CH/3CH/4CH, LGE_SAX_PSIR,"
            " LGE_2CH/4CH, MOLLI_NATIVE/POST, T1MAP_NATIVE/POST, T2PREP, T2MAP);"
            " site-NN/labels/<SeriesInstanceUID>.nii.gz (MOLLI series also <SeriesInstanceUID>_t1.nii.gz);"
            " site-NN/manifest.csv",
            "labels": "0 background, 1 LV blood pool (incl. papillary muscles), 2 healthy myocardium,"
            " 3 scar, 4 RV blood pool",
            "knobs": "cmr/phantom/knobs.py, documented in docs/phantom.md",
        },
    )
    (out_dir / "consortium.json").write_text(spec.to_json())
    return spec
