"""Site ingest end to end: DICOM + masks + manifest → de-identified case store and report.

Two kinds of input: a small hospital written here with pydicom (so each test knows
exactly what went in) and the synthetic generator's hospitals (``cmr.phantom``).
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.spatialimages import SpatialImage
from pydicom.data import get_testdata_file

from cmr.attributes import SubgroupAttributes
from cmr.deid import case_id_for, load_or_create_salt
from cmr.geometry import nifti_array_to_stack, stack_to_nifti_array
from cmr.ingest import REPORT_FILE, IngestReport, ingest_site
from cmr.store import CaseStore
from ingest_fixtures import Identity, WrittenSeries, files_containing, identifying_strings, write_mask, write_series

MANIFEST_HEADER = [
    "patient_id",
    "series_instance_uid",
    "mask_file",
    "ethnicity",
    "scar_type",
    "height_cm",
    "weight_kg",
    "sex",
    "age",
    "mrn",
]


@dataclass
class Hospital:
    root: Path
    identities: list[Identity]
    a1: WrittenSeries  # patient A, series 1: mask found as <SeriesInstanceUID>.nii.gz
    a2: WrittenSeries  # patient A, series 2: no mask, no manifest row
    b: WrittenSeries  # patient B: manifest row by patient_id only, mask_file in a subfolder
    c: WrittenSeries  # patient C: mask shifted by 5 mm (rejected)
    a1_mask: np.ndarray
    b_mask: np.ndarray

    @property
    def dicom(self) -> Path:
        return self.root / "dicom"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    def ingest(self, site_dir: Path, **kwargs) -> IngestReport:
        return ingest_site(self.dicom, site_dir, manifest=self.manifest, labels_dir=self.labels, **kwargs)


def write_manifest(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)


def make_hospital(root: Path) -> Hospital:
    a, b, c = Identity("A"), Identity("B"), Identity("C")
    a1 = write_series(root / "dicom" / "P1" / "S1", a, series_number=1, n_slices=5)
    a2 = write_series(root / "dicom" / "P1" / "S2", a, series_number=2, n_slices=3, seed=1)
    b_series = write_series(root / "dicom" / "P2" / "LGE", b, n_slices=4, seed=2)
    c_series = write_series(root / "dicom" / "P3" / "LGE", c, n_slices=3, seed=3)
    (root / "dicom" / "P3" / "notes.txt").write_text("scanned with the new coil\n")
    ct_small = get_testdata_file("CT_small.dcm", download=False)
    assert isinstance(ct_small, str), "CT_small.dcm is not bundled with this pydicom"
    shutil.copy(ct_small, root / "dicom" / "P3" / "ct.dcm")
    labels = root / "labels"
    a1_mask = write_mask(labels / f"{a1.series_instance_uid}.nii.gz", a1, seed=1)
    b_mask = write_mask(labels / "masks" / "b.nii.gz", b_series, seed=2)
    write_mask(labels / f"{c_series.series_instance_uid}.nii.gz", c_series, shift_mm=5.0)
    write_mask(labels / "orphan.nii.gz", a2, seed=4, shift_mm=1.0)
    write_manifest(
        root / "manifest.csv",
        [
            [
                a.values["PatientID"],
                a1.series_instance_uid,
                "",
                "Black African",
                "ischaemic",
                "170",
                "80",
                "",
                "",
                a.values["PatientID"],
            ],
            [
                b.values["PatientID"],
                "",
                "masks/b.nii.gz",
                "",
                "non_ischaemic",
                "181",
                "95",
                "M",
                "45",
                b.values["PatientID"],
            ],
            ["MRN-NOBODY", "", "", "White", "none", "", "", "", "", ""],
            [c.values["PatientID"], c_series.series_instance_uid, "", "Not stated", "none", "", "", "", "", ""],
            [a.values["PatientID"], "", "", "Asian", "none", "", "", "", "", ""],
        ],
    )
    return Hospital(root, [a, b, c], a1, a2, b_series, c_series, a1_mask, b_mask)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    return make_hospital(tmp_path_factory.mktemp("hospital"))


@pytest.fixture(scope="module")
def ingested(hospital: Hospital, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IngestReport]:
    site_dir = tmp_path_factory.mktemp("site")
    return site_dir, hospital.ingest(site_dir)


def case_for(site_dir: Path, series: WrittenSeries):
    salt = load_or_create_salt(site_dir)
    identity = series.identity
    case_id = case_id_for(salt, identity.values["PatientID"], identity.study_uid, series.series_instance_uid)
    store = CaseStore(site_dir)
    [entry] = [e for e in store.entries() if e.case_id == case_id]
    return store.load(entry)


# ------------------------------------------------------------------- what is stored


def test_every_usable_series_becomes_a_case(ingested):
    site_dir, report = ingested
    assert (report.files_seen, report.series_found, report.cases_written, report.cases_unchanged) == (17, 4, 4, 0)
    assert report.cases_without_mask == 2  # A2 has no mask; C's mask does not fit
    assert len(CaseStore(site_dir)) == 4


def test_images_are_rescaled_float32_in_slice_order_with_their_geometry(ingested, hospital: Hospital):
    case = case_for(ingested[0], hospital.a1)
    assert case.image.dtype == np.float32
    np.testing.assert_array_equal(case.image, hospital.a1.expected_image)
    np.testing.assert_allclose(np.asarray(case.entry.affine_ras), hospital.a1.geometry.affine_ras(), atol=1e-3)
    assert (case.entry.row_spacing_mm, case.entry.column_spacing_mm) == (1.5, 1.25)
    assert case.entry.slice_spacing_mm == pytest.approx(8.0, abs=1e-3)


def test_masks_are_found_by_series_uid_or_by_the_manifest(ingested, hospital: Hospital):
    np.testing.assert_array_equal(case_for(ingested[0], hospital.a1).mask, hospital.a1_mask)
    np.testing.assert_array_equal(case_for(ingested[0], hospital.b).mask, hospital.b_mask)
    assert case_for(ingested[0], hospital.a2).mask is None


def test_a_mask_off_the_series_grid_is_rejected_and_the_case_kept_without_it(ingested, hospital: Hospital):
    site_dir, report = ingested
    case = case_for(site_dir, hospital.c)
    assert case.mask is None and not case.entry.has_mask
    [mask_rejection] = [r for r in report.rejections if r.kind == "mask"]
    assert mask_rejection.path == f"labels/{hospital.c.series_instance_uid}.nii.gz"
    assert mask_rejection.reason.startswith(
        "geometry does not match the series (affine differs by 5.00 mm at the corners) (series 1 in P3/LGE)"
    )
    assert mask_rejection.reason.endswith("case ingested without a mask")


def test_attributes_come_from_dicom_with_manifest_overrides(ingested, hospital: Hospital):
    site_dir = ingested[0]
    assert case_for(site_dir, hospital.a1).entry.attributes == SubgroupAttributes(
        sex="female", age_band="40-59", ethnicity="Black", vendor="Siemens", field_strength="3T"
    )
    assert case_for(site_dir, hospital.b).entry.attributes == SubgroupAttributes(
        sex="male", age_band="40-59", ethnicity="White", vendor="Siemens", field_strength="3T"
    )
    assert case_for(site_dir, hospital.c).entry.attributes.ethnicity == "unknown"  # "Not stated" wins
    assert case_for(site_dir, hospital.a2).entry.attributes.ethnicity == "White"  # EthnicGroup: no row


def test_case_labels_hold_scar_type_and_nothing_else(ingested, hospital: Hospital):
    site_dir = ingested[0]
    assert case_for(site_dir, hospital.a1).entry.case_labels == {"scar_type": "ischaemic"}
    assert case_for(site_dir, hospital.b).entry.case_labels == {"scar_type": "non_ischaemic"}
    assert case_for(site_dir, hospital.a2).entry.case_labels == {}


def test_a_deidentified_header_is_kept_per_case(ingested, hospital: Hospital):
    site_dir = ingested[0]
    case = case_for(site_dir, hospital.a1)
    header = pydicom.Dataset.from_json((site_dir / "store" / "headers" / f"{case.entry.case_id}.json").read_text())
    assert (header.Manufacturer, header.ManufacturerModelName, float(header.InversionTime)) == (
        "Siemens Healthineers",
        "MAGNETOM Skyra",
        300.0,
    )
    assert list(header.ImagePositionPatient) == pytest.approx(list(hospital.a1.geometry.first_position), abs=1e-3)
    assert "PatientName" not in header and "InstitutionName" not in header and "PixelData" not in header


# ------------------------------------------------------------------- de-identification


def test_no_identifying_value_appears_anywhere_in_the_store(ingested, hospital: Hospital):
    site_dir = ingested[0]
    strings = identifying_strings(hospital.identities, series_numbers=(1, 2))
    assert len(strings) > 50
    assert files_containing(site_dir / "store", strings) == {}
    assert files_containing(site_dir / "secret", strings) == {}


def test_the_search_for_identifiers_would_find_one(tmp_path: Path, hospital: Hospital):
    """The de-identification test above can fail: a leaked value, even compressed, is found."""
    leaked = hospital.identities[0].values["PatientName"]
    np.savez_compressed(tmp_path / "case.npz", image=np.zeros(3), note=np.array(leaked))
    assert files_containing(tmp_path, [leaked]) == {"case.npz": [leaked]}


def test_the_report_names_files_but_no_header_or_manifest_value(ingested, hospital: Hospital):
    site_dir = ingested[0]
    text = (site_dir / REPORT_FILE).read_text()
    report = json.loads(text)
    in_paths = " ".join(r["path"] + " " + r["reason"] for r in report["rejections"] if "labels/" in r["path"])
    leaked = [s for s in identifying_strings(hospital.identities, (1, 2)) if s in text and s not in in_paths]
    assert leaked == []
    assert "MRN-NOBODY" not in text and "Black African" not in text


# ------------------------------------------------------------------- the report


def test_the_report_lists_every_unusable_input_with_a_reason(ingested):
    site_dir, _report = ingested
    document = json.loads((site_dir / REPORT_FILE).read_text())
    assert {
        k: document[k]
        for k in (
            "files_seen",
            "series_found",
            "cases_written",
            "cases_unchanged",
            "cases_without_mask",
            "files_rejected",
            "series_rejected",
        )
    } == {
        "files_seen": 17,
        "series_found": 4,
        "cases_written": 4,
        "cases_unchanged": 0,
        "cases_without_mask": 2,
        "files_rejected": 2,
        "series_rejected": 0,
    }
    found = {(r["kind"], r["path"]): r["reason"] for r in document["rejections"]}
    assert found[("file", "P3/ct.dcm")] == "modality CT: only MR series are ingested"
    assert found[("file", "P3/notes.txt")] == "not a DICOM file (no DICM preamble and no readable header)"
    assert found[("labels", "labels/orphan.nii.gz")].startswith("matches no ingested series")
    manifest = sorted(r["reason"] for r in document["rejections"] if r["kind"] == "manifest")
    assert manifest == [
        "column(s) mrn ignored: not part of the manifest format",
        "line 4: its patient_id matches no usable series (missing, or rejected above)",
        "line 6: this patient has 2 usable series; add series_instance_uid to say which",
    ]
    assert {r["path"] for r in document["rejections"] if r["kind"] == "manifest"} == {"manifest.csv"}


def test_describe_prints_counts_and_the_first_rejections(ingested):
    text = ingested[1].describe(max_rejections=2).plain
    assert "17 files, 4 series: 4 cases written, 0 unchanged, 2 without a mask." in text
    assert "P3/ct.dcm: modality CT" in text
    assert "… and 5 more, listed in ingest-report.json" in text


def test_progress_reaches_its_total(hospital: Hospital, tmp_path: Path):
    calls: list[tuple[int, int]] = []
    hospital.ingest(tmp_path / "site", on_progress=lambda done, total: calls.append((done, total)))
    assert calls[-1][0] == calls[-1][1] == 17 + 15  # files read, then slices decoded
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


# ------------------------------------------------------------------- idempotency


def _stamps(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def test_ingesting_the_same_data_again_writes_nothing(hospital: Hospital, tmp_path: Path):
    site_dir = tmp_path / "site"
    hospital.ingest(site_dir)
    before = {**_stamps(site_dir / "store"), **_stamps(site_dir / "secret")}
    again = hospital.ingest(site_dir)
    assert (again.cases_written, again.cases_unchanged) == (0, 4)
    assert {**_stamps(site_dir / "store"), **_stamps(site_dir / "secret")} == before
    assert json.loads((site_dir / REPORT_FILE).read_text())["cases_unchanged"] == 4


def test_a_changed_manifest_label_rewrites_only_that_case(tmp_path: Path):
    hospital = make_hospital(tmp_path / "hospital")
    site_dir = tmp_path / "site"
    hospital.ingest(site_dir)
    text = hospital.manifest.read_text().replace("non_ischaemic", "ischaemic")
    hospital.manifest.write_text(text)
    again = hospital.ingest(site_dir)
    assert (again.cases_written, again.cases_unchanged) == (1, 3)
    assert case_for(site_dir, hospital.b).entry.case_labels == {"scar_type": "ischaemic"}


# ------------------------------------------------------------------- masks in other forms


def _single_series_with_mask(tmp_path: Path, nifti: np.ndarray, affine: np.ndarray) -> tuple[Path, IngestReport]:
    series = write_series(tmp_path / "dicom" / "s", Identity("M"), n_slices=3)
    (tmp_path / "labels").mkdir()
    nib.save(nib.Nifti1Image(nifti, affine), tmp_path / "labels" / f"{series.series_instance_uid}.nii.gz")
    report = ingest_site(tmp_path / "dicom", tmp_path / "site", labels_dir=tmp_path / "labels")
    return tmp_path / "site", report


def test_a_mask_in_flipped_voxel_order_is_reoriented_onto_the_series(tmp_path: Path):
    series = write_series(tmp_path / "x", Identity("M"), n_slices=3)
    mask = np.random.default_rng(0).integers(0, 5, size=series.shape).astype(np.uint8)
    flipped = stack_to_nifti_array(mask)[:, ::-1, :]  # rows stored bottom-up, affine says so
    affine = series.geometry.affine_ras() @ np.array(
        [[1, 0, 0, 0], [0, -1, 0, series.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float
    )
    site_dir, report = _single_series_with_mask(tmp_path, flipped.astype(np.uint8), affine)
    assert report.rejections == []
    [case] = list(CaseStore(site_dir))
    np.testing.assert_array_equal(case.mask, mask)


def test_a_mask_with_labels_outside_the_convention_is_rejected(tmp_path: Path):
    series = write_series(tmp_path / "x", Identity("M"), n_slices=3)
    nifti = np.full(stack_to_nifti_array(np.zeros(series.shape)).shape, 7, np.uint8)
    _, report = _single_series_with_mask(tmp_path, nifti, series.geometry.affine_ras())
    [rejection] = report.rejections
    assert "holds labels [7] outside the cmr.labels convention [0, 1, 2, 3, 4]" in rejection.reason
    assert report.cases_without_mask == 1


def test_a_mask_of_another_shape_is_rejected(tmp_path: Path):
    series = write_series(tmp_path / "x", Identity("M"), n_slices=3)
    _, report = _single_series_with_mask(tmp_path, np.zeros((10, 12, 2), np.uint8), series.geometry.affine_ras())
    [rejection] = report.rejections
    assert "shape (10, 12, 2) [column,row,slice] does not match the series' (10, 12, 3)" in rejection.reason


def test_a_missing_dicom_folder_is_an_error_naming_it(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        ingest_site(tmp_path / "no-such-folder", tmp_path / "site")


# ------------------------------------------------------------------- the generator's hospitals


@pytest.fixture(scope="module")
def consortium(small_consortium: Path, ingested_sites: list[Path]):
    from cmr.phantom import ConsortiumSpec

    return ConsortiumSpec.load(small_consortium), small_consortium, ingested_sites


def test_generated_hospitals_ingest_completely_with_masks(consortium):
    spec, _, site_dirs = consortium
    for site_dir in site_dirs:
        report = json.loads((site_dir / REPORT_FILE).read_text())
        assert report["rejections"] == []
        # Per patient: the LGE stack and native and post-contrast MOLLI, each with its mask.
        assert report["cases_written"] + report["cases_unchanged"] == 3 * spec.cases_per_site
        assert report["cases_without_mask"] == 0
        lge = CaseStore(site_dir).entries(kinds=["lge-stack"])
        assert len(lge) == spec.cases_per_site and all(entry.has_mask for entry in lge)


def test_generated_cases_match_the_ground_truth(consortium):
    spec, hospitals, site_dirs = consortium
    for site_dir in site_dirs:
        salt = load_or_create_salt(site_dir)
        site = spec.site(site_dir.name)
        entries = {e.case_id: e for e in CaseStore(site_dir).entries(kinds=["lge-stack"])}
        for truth in spec.cases_at(site_dir.name):
            entry = entries[case_id_for(salt, truth.patient_id, truth.study_instance_uid, truth.series_instance_uid)]
            ethnicity = truth.ethnicity_recorded or (truth.ethnicity if truth.ethnic_group_dicom else "unknown")
            assert entry.attributes == SubgroupAttributes(
                sex=truth.sex,
                age_band=truth.age_band,
                ethnicity=ethnicity,
                vendor=site.scanner.vendor,
                field_strength=f"{site.scanner.field_strength_t:g}T",
            ), truth.patient_id
            assert entry.case_labels == {"scar_type": truth.scar_type}
            assert entry.n_slices == truth.n_slices and entry.has_mask
            stored = CaseStore(site_dir).load(entry)
            mask_image = nib.load(hospitals / truth.mask_file)
            assert isinstance(mask_image, SpatialImage)
            written = nifti_array_to_stack(np.asarray(mask_image.dataobj))
            np.testing.assert_array_equal(stored.mask, written)


def test_generated_hospitals_leave_no_identifier_in_the_store(consortium):
    spec, hospitals, site_dirs = consortium
    for site_dir in site_dirs:
        strings: set[str] = set()
        site = spec.site(site_dir.name)
        strings.update((site.institution_name, site.institution_address))
        for truth in spec.cases_at(site_dir.name):
            strings.update((truth.patient_id, truth.study_instance_uid, truth.series_instance_uid))
            first = sorted((hospitals / truth.dicom_dir).rglob("*.dcm"))[0]
            header = pydicom.dcmread(first, stop_before_pixels=True)
            for keyword in (
                "PatientName",
                "PatientBirthDate",
                "AccessionNumber",
                "ReferringPhysicianName",
                "OperatorsName",
                "StationName",
                "DeviceSerialNumber",
                "SOPInstanceUID",
                "FrameOfReferenceUID",
                "StudyID",
            ):
                value = str(header.get(keyword) or "")
                # short all-digit values (a 5-digit StudyID) could occur by chance in numbers
                strings.update(
                    part
                    for part in [value, *value.split("^")]
                    if len(part) >= 5 and not (part.isdigit() and len(part) < 8)
                )
        assert files_containing(site_dir / "store", sorted(strings)) == {}


def test_hospitals_ingest_side_by_side_and_one_broken_hospital_fails_after_the_others(
    small_consortium: Path, tmp_path: Path
):
    """The demo's parallel ingest: each hospital its own process and site folder; progress
    reaches every hospital's total; a hospital that cannot be ingested raises, naming its
    file, once the others are done (their stores complete)."""
    from cmrfl.parallel_ingest import ingest_hospitals

    hospitals = sorted(p for p in small_consortium.iterdir() if p.is_dir())[:2]
    broken = tmp_path / "hospitals" / "site-09"
    shutil.copytree(hospitals[0], broken)
    (broken / "manifest.csv").unlink()
    progress: dict[str, tuple[int, int]] = {}

    def record(name: str, done: int, total: int) -> None:
        progress[name] = (done, total)

    with pytest.raises(FileNotFoundError, match=r"manifest not found: .*site-09"):
        ingest_hospitals([*hospitals, broken], tmp_path / "sites", workers=2, on_progress=record)
    for hospital in hospitals:
        entries = CaseStore(tmp_path / "sites" / hospital.name).entries(kinds=["lge-stack"])
        assert len(entries) == 8 and all(entry.has_mask for entry in entries)
        done, total = progress[hospital.name]
        assert done == total > 0
