"""The synthetic hospital generator: deterministic, real DICOM, sites that differ."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cmr.labels import TissueLabel
from cmr.phantom import generate_consortium
from cmr.phantom.spec import SubgroupDifficulty

REQUIRED_TAGS = (
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "InversionTime",
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "PatientSex",
    "PatientAge",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "InstitutionName",
    "AccessionNumber",
)


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    out = tmp_path_factory.mktemp("hospitals")
    spec = generate_consortium(out, n_sites=4, cases_per_site=3, seed=11, whole_exam=False)  # the LGE stack alone
    return out, spec


def test_the_same_seed_writes_the_same_bytes_in_one_process_or_several_and_another_seed_does_not(tmp_path: Path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_consortium(tmp_path / name, n_sites=2, cases_per_site=2, seed=seed)
    generate_consortium(tmp_path / "parallel", n_sites=2, cases_per_site=2, seed=5, workers=2)
    first, again, other, parallel = (file_digests(tmp_path / n) for n in ("a", "b", "c", "parallel"))
    assert first == again
    assert parallel == first  # processes finishing in any order write the same bytes
    assert set(first.values()).isdisjoint(v for k, v in other.items() if k.endswith(".dcm"))


def test_every_slice_is_mr_image_storage_with_the_tags_a_scanner_writes(consortium):
    out, _ = consortium
    files = sorted(out.glob("site-*/dicom/**/*.dcm"))
    assert files
    for path in files[:: max(1, len(files) // 40)]:
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        missing = [tag for tag in REQUIRED_TAGS if tag not in ds]
        assert not missing, f"{path}: missing {missing}"
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
        assert str(ds.SOPInstanceUID).startswith("2.25.")
        assert pydicom.uid.UID(ds.SOPInstanceUID).is_valid


def test_slices_of_a_series_share_geometry_and_step_along_the_normal(consortium):
    out, _ = consortium
    series_dir = next(p for p in sorted(out.glob("site-01/dicom/*/*")) if p.is_dir())
    slices = [pydicom.dcmread(p) for p in sorted(series_dir.glob("*.dcm"))]
    orientation = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([np.array(s.ImagePositionPatient, dtype=float) @ normal for s in slices])
    assert len({tuple(s.ImageOrientationPatient) for s in slices}) == 1
    steps = np.diff(np.sort(positions))
    assert np.allclose(steps, steps[0], atol=1e-3) and steps[0] >= float(slices[0].SliceThickness) - 1e-3


def test_sites_differ_in_vendor_and_field_strength(consortium):
    _, spec = consortium
    scanners = {(site.scanner.vendor, site.scanner.field_strength_t) for site in spec.sites}
    assert len({vendor for vendor, _ in scanners}) == 4
    assert {field for _, field in scanners} == {1.5, 3.0}


def test_masks_and_manifest_match_the_dicom_series(consortium):
    out, spec = consortium
    for site in spec.sites:
        site_dir = out / site.site_id
        rows = list(csv.DictReader((site_dir / "manifest.csv").open()))
        assert len(rows) == 3
        for row in rows:
            mask = nib.Nifti1Image.from_filename(site_dir / "labels" / row["mask_file"])
            series = [
                p
                for p in (site_dir / "dicom").rglob("*.dcm")
                if pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID == row["series_instance_uid"]
            ]
            assert mask.shape[2] == len(series)
            labels = set(np.unique(np.asarray(mask.dataobj)).tolist())
            assert {TissueLabel.BACKGROUND, TissueLabel.LV_BLOOD_POOL, TissueLabel.MYOCARDIUM} <= labels
            assert (TissueLabel.SCAR in labels) == (row["scar_type"] != "none")


def test_a_subgroup_difficulty_must_name_a_real_group():
    with pytest.raises(ValueError, match="'Female' is not a sex value"):
        SubgroupDifficulty(attribute="sex", group="Female")


def test_patient_ids_stay_unique_beyond_a_thousand_cases_per_site():
    from cmr.phantom.demographics import Patient
    from cmr.phantom.identity import sample_identity

    patient = Patient(sex="female", age_years=60, ethnicity="Asian", height_cm=160.0, weight_kg=60.0)
    for site_index in range(8):  # every MRN style
        ids = [
            sample_identity(
                np.random.default_rng([3, case]), site_index, case, 1500, patient, 2018, 2024, 0.4, 0.1
            ).patient_id
            for case in range(1500)
        ]
        assert len(set(ids)) == len(ids)
