"""Whole CMR exams from the phantom: every series of each patient's study, as scanners export it."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from cmr.labels import TissueLabel
from cmr.phantom import generate_consortium
from cmr.phantom.anatomy import Tissue, sample_heart
from cmr.phantom.cine import Contraction, contraction_curve, render_cine_stack
from cmr.phantom.demographics import Patient
from cmr.phantom.dicom_writer import base_dataset
from cmr.phantom.exam_dicom import SeriesHeader, SeriesWriter, series_dataset
from cmr.phantom.exam_protocols import FOLDERS, series_strings
from cmr.phantom.identity import sample_identity
from cmr.phantom.scar import NoScar
from cmr.phantom.spec import CaseTruth, ConsortiumSpec, ExamSeriesTruth
from cmr.series_kinds import SeriesKind

PHASES = 25


@pytest.fixture(scope="module")
def exams(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConsortiumSpec]:
    out = tmp_path_factory.mktemp("exams")
    spec = generate_consortium(out, n_sites=4, cases_per_site=2, seed=11)  # sites 1-4: one of each vendor
    assert {site.scanner.vendor for site in spec.sites} == {"Siemens", "GE", "Philips", "Canon"}
    return out, spec


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


def _series(case: CaseTruth, kind: SeriesKind) -> list[ExamSeriesTruth]:
    return [s for s in case.exam_series if s.kind == kind.value]


def _normal(ds: pydicom.Dataset) -> np.ndarray:
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def _vendor(spec: ConsortiumSpec, case: CaseTruth) -> str:
    return spec.site(case.site_id).scanner.vendor


def test_every_series_is_written_with_its_truth_in_one_study(exams):
    out, spec = exams
    for case in spec.cases:
        kinds = [s.kind for s in case.exam_series]
        psir = 1 if _vendor(spec, case) in ("Siemens", "Philips") else 0
        assert len(kinds) == 14 + psir
        assert kinds.count("lge-stack") == 1 and kinds.count("lge-psir") == psir
        assert kinds.count("cine-long-axis") == 3 and kinds.count("lge-long-axis") == 2
        assert kinds.count("molli-t1") == 2 and kinds.count("t1-map") == 2
        numbers = [s.series_number for s in case.exam_series]
        assert len(set(numbers)) == len(numbers)
        times = []
        for series in case.exam_series:
            folder = out / series.dicom_dir
            date, number, name = folder.name.split("_", 2)
            assert (date, int(number)) == (case.study_date, series.series_number) and name in FOLDERS.values()
            headers = _headers(folder)
            assert len(headers) == series.n_images
            for ds in headers[:: max(1, len(headers) // 5)]:
                assert ds.SeriesInstanceUID == series.series_instance_uid
                assert ds.SeriesNumber == series.series_number
                assert ds.SeriesDescription == series.series_description
                assert ds.StudyInstanceUID == case.study_instance_uid
                assert ds.PatientID == case.patient_id and ds.Modality == "MR" and ds.BodyPartExamined == "HEART"
            first = headers[0]
            assert first.FrameOfReferenceUID == _headers(out / case.dicom_dir)[0].FrameOfReferenceUID
            assert len({ds.SOPInstanceUID for ds in headers}) == len(headers)
            times.append(first.AcquisitionTime)
        assert times == sorted(times)  # in acquisition order
    lge_only = [p for p in out.glob("*/dicom/*/*_LGE_SAX") if p.is_dir()]
    assert len(lge_only) == len(spec.cases)  # the demo's */*_LGE_SAX glob finds the magnitude only


def test_cine_stacks_hold_every_phase_of_every_lge_plane(exams):
    out, spec = exams
    for case in spec.cases:
        [cine] = _series(case, SeriesKind.CINE)
        headers = _headers(out / cine.dicom_dir)
        lge = _headers(out / case.dicom_dir)
        assert cine.n_images == PHASES * len(lge)
        normal = _normal(lge[0])
        by_position = defaultdict(list)
        for ds in headers:
            assert "InversionTime" not in ds
            assert int(ds.CardiacNumberOfImages) == PHASES and float(ds.NominalInterval) > 0 and ds.HeartRate
            assert np.allclose(_normal(ds), normal, atol=1e-5)
            by_position[tuple(float(v) for v in ds.ImagePositionPatient)].append(float(ds.TriggerTime))
        assert all(len(set(t)) == PHASES for t in by_position.values())
        interval = float(headers[0].NominalInterval)
        assert max(max(t) for t in by_position.values()) < interval
        cine_levels = sorted(np.dot(p, normal) for p in by_position)
        lge_levels = sorted(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal) for ds in lge)
        assert np.allclose(cine_levels, lge_levels, atol=1e-2)  # the LGE stack's planes
        for long_axis in _series(case, SeriesKind.CINE_LONG_AXIS):
            views = _headers(out / long_axis.dicom_dir)
            assert len({tuple(ds.ImagePositionPatient) for ds in views}) == 1
            assert len({float(ds.TriggerTime) for ds in views}) == PHASES


def test_long_axis_planes_contain_the_long_axis(exams):
    out, spec = exams
    for case in spec.cases:
        long_axis = _normal(_headers(out / case.dicom_dir)[0])
        normals = []
        for series in _series(case, SeriesKind.CINE_LONG_AXIS) + _series(case, SeriesKind.LGE_LONG_AXIS):
            ds = _headers(out / series.dicom_dir)[0]
            assert abs(np.dot(_normal(ds), long_axis)) < 1e-4
            assert abs(np.dot(np.asarray(ds.ImageOrientationPatient[3:], dtype=float), long_axis)) > 0.9999
            if series.kind == SeriesKind.CINE_LONG_AXIS.value:
                normals.append(_normal(ds))
        angles = [np.degrees(np.arccos(abs(np.dot(a, b)))) for i, a in enumerate(normals) for b in normals[i + 1 :]]
        assert np.allclose(sorted(angles), [60.0, 60.0, 60.0], atol=0.1)  # 2-, 3-, 4-chamber views


def test_the_localizer_shows_three_orthogonal_planes(exams):
    out, spec = exams
    for case in spec.cases:
        [localizer] = _series(case, SeriesKind.LOCALIZER)
        headers = _headers(out / localizer.dicom_dir)
        normals = np.array([_normal(ds) for ds in headers])
        assert np.allclose(np.abs(normals @ normals.T), np.eye(3), atol=1e-6)
        assert all(2.0 <= float(ds.PixelSpacing[0]) <= 3.3 and "InversionTime" not in ds for ds in headers)


def test_psir_partners_only_at_siemens_and_philips_at_the_lge_positions(exams):
    out, spec = exams
    for case in spec.cases:
        psir = _series(case, SeriesKind.LGE_PSIR)
        if _vendor(spec, case) not in ("Siemens", "Philips"):
            assert psir == []
            continue
        magnitude = [pydicom.dcmread(p) for p in sorted((out / case.dicom_dir).glob("*.dcm"))]
        signed = [pydicom.dcmread(p) for p in sorted((out / psir[0].dicom_dir).glob("*.dcm"))]
        assert len(signed) == len(magnitude)
        for m, s in zip(magnitude, signed):
            for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
                assert m[tag].value == s[tag].value
            assert m.InversionTime == s.InversionTime and m.AcquisitionTime == s.AcquisitionTime
        slope, intercept = float(signed[0].RescaleSlope), float(signed[0].RescaleIntercept)
        assert intercept == pytest.approx(-4096 * slope)
        values = np.stack([ds.pixel_array for ds in signed]) * slope + intercept
        assert values.min() < 0 < values.max()  # signed: nulled myocardium near 0, long-T1 tissue negative
        assert "R" in signed[0].ImageType[2]


def test_mapping_series_carry_times_scanner_maps_and_reference_labels(exams):
    out, spec = exams
    for site in spec.sites:
        rows = list(csv.DictReader((out / site.site_id / "manifest.csv").open()))
        by_uid = {row["series_instance_uid"]: row for row in rows}
        for case in spec.cases_at(site.site_id):
            maps = {s.contrast: s for s in _series(case, SeriesKind.T1_MAP)}
            for molli in _series(case, SeriesKind.MOLLI):
                headers = _headers(out / molli.dicom_dir)
                assert len(headers) == (8 if molli.contrast == "native" else 9)  # 5(3)3 and 4(1)3(1)2
                for ds in headers:
                    assert ds.ImageComments == f"TI {ds.InversionTime}"
                row = by_uid[molli.series_instance_uid]
                assert row["contrast"] == molli.contrast and 0.3 < float(row["haematocrit"]) < 0.55
                labels = out / site.site_id / "labels"
                mask = np.asarray(nib.nifti1.load(labels / f"{molli.series_instance_uid}.nii.gz").dataobj)[:, :, 0].T
                reference_file = labels / f"{molli.series_instance_uid}_t1.nii.gz"
                reference = np.asarray(nib.nifti1.load(reference_file).dataobj)[:, :, 0].T
                assert mask.shape == reference.shape == (headers[0].Rows, headers[0].Columns)
                scanner_map = pydicom.dcmread(next((out / maps[molli.contrast].dicom_dir).glob("*.dcm")))
                assert "DERIVED" in scanner_map.ImageType and "InversionTime" not in scanner_map
                assert (
                    float(scanner_map.RescaleSlope) == 1
                    and scanner_map.ImagePositionPatient == headers[0].ImagePositionPatient
                )
                myocardium = mask == TissueLabel.MYOCARDIUM
                measured = float(np.median(scanner_map.pixel_array[myocardium]))
                assert measured == pytest.approx(float(reference[myocardium].mean()), rel=0.15)
            [t2prep] = _series(case, SeriesKind.T2_PREP)
            frames = _headers(out / t2prep.dicom_dir)
            assert [float(ds.EchoTime) for ds in frames] == [0.0, 25.0, 55.0]
            assert all(ds.ImageComments.startswith("T2prep ") and "InversionTime" not in ds for ds in frames)
            [t2map] = _series(case, SeriesKind.T2_MAP)
            assert t2map.n_images == 1 and "DERIVED" in _headers(out / t2map.dicom_dir)[0].ImageType


def _digests(paths) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_the_lge_series_masks_and_manifest_rows_are_those_of_an_lge_only_consortium(exams, tmp_path: Path):
    out, spec = exams
    lge_only = generate_consortium(tmp_path, n_sites=4, cases_per_site=2, seed=11, whole_exam=False)
    assert [c.exam_series for c in lge_only.cases] == [tuple(_series(c, SeriesKind.LGE_STACK)) for c in spec.cases]
    for whole, alone in zip(spec.cases, lge_only.cases):
        assert _digests(sorted((out / whole.dicom_dir).glob("*"))) == _digests(
            sorted((tmp_path / alone.dicom_dir).glob("*"))
        )
        assert (out / whole.mask_file).read_bytes() == (tmp_path / alone.mask_file).read_bytes()
    for site in spec.sites:
        alone_rows = list(csv.reader((tmp_path / site.site_id / "manifest.csv").open()))
        whole_rows = list(csv.reader((out / site.site_id / "manifest.csv").open()))
        assert whole_rows[0][:7] == alone_rows[0] and len(alone_rows[0]) == 7
        lge_uids = {row[1] for row in alone_rows[1:]}
        assert [row[:7] for row in whole_rows[1:] if row[1] in lge_uids] == alone_rows[1:]
    assert not [p for p in tmp_path.glob("*/dicom/*/*") if not p.name.endswith("_LGE_SAX")]


def test_the_truth_reads_back_and_older_files_without_exams_still_load(exams):
    out, spec = exams
    loaded = ConsortiumSpec.load(out)
    assert loaded.cases == spec.cases
    data = json.loads((out / "consortium.json").read_text())
    for case in data["cases"]:
        del case["exam_series"]
    assert all(case.exam_series == () for case in ConsortiumSpec.from_dict(data).cases)


def test_the_fast_series_writer_writes_what_pydicom_writes(exams, tmp_path: Path):
    _, spec = exams
    site = spec.sites[0]
    patient = Patient(sex="female", age_years=61, ethnicity="Asian", height_cm=160.0, weight_kg=60.0)
    identity = sample_identity(np.random.default_rng(1), 0, 0, 10, patient, 2018, 2024, 0.4, 0.1)
    strings = series_strings(site.scanner, "cine_sax")
    header = SeriesHeader(strings, "2.25.3", 5, "101010", 64, 80, 1.8, 8.0, 40.0, 1.2, 55.0, 62.0)
    ds = series_dataset(base_dataset(site, patient, identity, "2.25.1", "2.25.2"), header)
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    values = {
        "InstanceNumber": 7,
        "ImagePositionPatient": ["1.5", "-2.25", "3"],
        "TriggerTime": "32.5",
        "AcquisitionTime": "101011",
        "ImageComments": "TI 123.5",
    }
    pixels = np.random.default_rng(0).integers(0, 4096, size=(64, 80)).astype(np.uint16)
    SeriesWriter(ds, list(values)).write(tmp_path / "fast.dcm", "2.25.12345", pixels, **values)
    reference = copy.deepcopy(ds)
    reference.file_meta.MediaStorageSOPInstanceUID = UID("2.25.12345")
    reference.SOPInstanceUID = "2.25.12345"
    for keyword, value in values.items():
        setattr(reference, keyword, value)
    reference.PixelData = pixels.tobytes()
    reference.save_as(tmp_path / "pydicom.dcm", enforce_file_format=True)
    assert (tmp_path / "fast.dcm").read_bytes() == (tmp_path / "pydicom.dcm").read_bytes()


def test_the_heart_ejects_its_ejection_fraction_and_conserves_myocardium():
    patient = Patient(sex="male", age_years=50, ethnicity="White", height_cm=178.0, weight_kg=80.0)
    heart = sample_heart(np.random.default_rng(4), patient, "none")
    contraction = Contraction.of(heart, NoScar(), 0.6)
    curve = contraction_curve(PHASES, 900.0)
    assert curve[0] == 0.0 and curve.max() == pytest.approx(1.0, abs=0.02) and curve[-1] < 0.1
    systole = int(np.argmax(curve))
    pixel = 0.5
    axis = (np.arange(240) - 119.5) * pixel
    areas = {}
    for tissue in (Tissue.LV_BLOOD, Tissue.MYOCARDIUM):
        table = np.zeros(len(Tissue), dtype=np.float32)
        table[tissue] = 1.0  # an image of that tissue alone: its sum is its area
        level = (0.3 * heart.long_axis_mm,)
        [frames] = render_cine_stack(contraction, NoScar(), level, axis, axis, pixel, table, 0.0, curve)
        areas[tissue.name] = frames.reshape(PHASES, -1).sum(axis=1)
    assert areas["LV_BLOOD"][systole] / areas["LV_BLOOD"][0] == pytest.approx(1 - 0.6 * curve[systole], abs=0.05)
    assert areas["MYOCARDIUM"][systole] / areas["MYOCARDIUM"][0] == pytest.approx(1.0, abs=0.05)  # it thickens
