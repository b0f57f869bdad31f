"""A consortium of synthetic hospitals for the T1-mapping task, written as a site would hold it.

Each site has the scanner (vendor, field) and patient mix that ``plan_sites`` gives
the LGE consortium; each patient one examination (``simulate_mapping_case``) with
a native and a post-contrast MOLLI series. Per site, under ``site-NN/``::

    dicom/<PatientID>/MOLLI_NATIVE/IM_0001.dcm …   one file per frame, InversionTime each
    dicom/<PatientID>/MOLLI_POST/IM_0001.dcm …
    labels/<SeriesInstanceUID>.nii.gz              tissue mask (cmr.labels) of the slice
    labels/<SeriesInstanceUID>_t1.nii.gz           reference T1 map, ms (the ground truth)
    manifest.csv                                   ethnicity, haematocrit, contrast per series

Breathing and cardiac motion between frames is drawn per examination, uniformly up to
``max_motion_mm`` (0 for every examination by default), so that a site holds still
and moving series as hospitals do. The reference map is the motion-free ground truth,
0 outside the body (air), where T1 is not defined. Deterministic for the arguments.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from cmr.parametric_map import write_parametric_map
from cmr.phantom.anatomy import Tissue
from cmr.phantom.consortium import plan_sites, prepare_output
from cmr.phantom.demographics import sample_patient
from cmr.phantom.mapping import MappingCase, simulate_mapping_case
from cmr.phantom.mapping_dicom import write_mapping_mask, write_mapping_series

MANIFEST_COLUMNS = ("patient_id", "series_instance_uid", "mask_file", "ethnicity", "haematocrit", "contrast")
SERIES = (("molli_native", "MOLLI_NATIVE", "native"), ("molli_post", "MOLLI_POST", "post"))
HEART_RATE_BPM = (50.0, 100.0)


def case_seed(seed: int, site_index: int, case_index: int) -> int:
    """The examination's own seed: also its PatientID and UIDs in the DICOM (cmr.phantom.mapping_dicom)."""
    return (seed * 100 + site_index) * 10_000 + case_index


def reference_t1_ms(case: MappingCase, contrast: str) -> np.ndarray:
    t1 = case.t1_native_ms if contrast == "native" else case.t1_post_ms
    return np.where(case.tissue == Tissue.AIR, 0.0, t1).astype(np.float32)


def generate_mapping_consortium(
    out_dir: Path,
    n_sites: int,
    cases_per_site: int,
    seed: int,
    on_case_written: Callable[[], None] | None = None,
    *,
    max_motion_mm: float = 0.0,
    noise: float = 0.01,
) -> dict:
    """Write ``n_sites`` hospitals of ``cases_per_site`` mapping examinations; returns the ground truth."""
    if n_sites < 1 or cases_per_site < 1:
        raise ValueError(f"need at least one site and one case per site, got {n_sites} x {cases_per_site}")
    if max_motion_mm < 0:
        raise ValueError(f"max_motion_mm must be ≥ 0, got {max_motion_mm}")
    out_dir = Path(out_dir)
    prepare_output(out_dir)
    truth: dict = {"seed": seed, "task": "mapping", "max_motion_mm": max_motion_mm, "noise": noise, "cases": []}
    for site_index, site in enumerate(plan_sites(n_sites, seed)):
        site_dir = out_dir / site.site_id
        field = "1.5T" if site.scanner.field_strength_t < 2 else "3T"
        rows = []
        for case_index in range(cases_per_site):
            examination_seed = case_seed(seed, site_index, case_index)
            rng = np.random.default_rng([examination_seed, 99])
            patient = sample_patient(rng, site.demographics)
            case = simulate_mapping_case(
                examination_seed,
                field_strength=field,
                vendor=site.scanner.vendor,
                sex="M" if patient.sex == "male" else "F",
                heart_rate_bpm=float(rng.uniform(*HEART_RATE_BPM)),
                motion_mm=float(rng.uniform(0.0, max_motion_mm)) if max_motion_mm > 0 else 0.0,
                noise=noise,
            )
            patient_id = f"MAP{examination_seed:06d}"
            for kind, folder, contrast in SERIES:
                paths = write_mapping_series(case, site_dir / "dicom" / patient_id / folder, kind)
                uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
                labels = site_dir / "labels"
                write_mapping_mask(case, labels / f"{uid}.nii.gz")
                write_parametric_map(labels / f"{uid}_t1.nii.gz", reference_t1_ms(case, contrast), case.geometry)
                rows.append((patient_id, uid, f"{uid}.nii.gz", patient.ethnicity, f"{case.haematocrit:.4f}", contrast))
            truth["cases"].append(
                {
                    "site_id": site.site_id,
                    "case_index": case_index,
                    "patient_id": patient_id,
                    **{k: v for k, v in case.attributes.items() if k not in ("seed", "ethnicity")},
                    "ethnicity": patient.ethnicity,  # the site's patient mix; the manifest says it
                    "haematocrit": round(case.haematocrit, 4),
                    "myocardial_t1_native_ms": round(float(case.t1_native_ms[case.myocardium_mask].mean()), 1),
                    "myocardial_ecv": round(float(case.ecv[case.myocardium_mask & ~case.scar_mask].mean()), 4),
                }
            )
            if on_case_written is not None:
                on_case_written()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
        (site_dir / "manifest.csv").write_text(buffer.getvalue())
    (out_dir / "consortium.json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth
