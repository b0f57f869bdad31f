"""Recognising each series' kind from its headers, as hospitals export whole exams.

Real vendor files nobody here wrote (nibabel's Philips MPRAGE and Siemens diffusion,
pydicom's MR) must never become LGE cases; series written with pydicom test each rule:
localizers, PSIR partners, single LGE planes against the exam's short axis, TI scouts
against MOLLI, scanner maps, and the manifest's override.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from cmr.dicom_files import read_dicom_folder
from cmr.ingest import ingest_site
from cmr.series_kinds import SeriesKind
from cmr.series_recognition import recognise_series
from cmr.store import CaseStore
from ingest_fixtures import Identity, uid, write_series

NIBABEL_DATA = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"


def kinds_of(dicom: Path) -> dict[str, SeriesKind]:
    """Each series' kind, by its folder."""
    scan = read_dicom_folder(dicom, [])
    recognised = recognise_series(scan.series)
    return {series.folder: recognised[series.series_instance_uid].kind for series in scan.series}


def test_real_vendor_files_are_never_stored_as_lge_and_the_report_names_their_kind(tmp_path: Path):
    dicom = tmp_path / "export"
    for name, folder in (("philips_mprage.dcm.gz", "mprage"), ("siemens_dwi_1000.dcm.gz", "dwi")):
        (dicom / folder).mkdir(parents=True)
        (dicom / folder / name.removesuffix(".gz")).write_bytes(gzip.decompress((NIBABEL_DATA / name).read_bytes()))
    for name in ("0.dcm", "1.dcm"):  # the same diffusion series, other b-values
        shutil.copy(NIBABEL_DATA / name, dicom / "dwi" / name)
    (dicom / "head").mkdir()
    shutil.copy(str(get_testdata_file("MR_small.dcm", download=False)), dicom / "head" / "MR_small.dcm")

    report = ingest_site(dicom, tmp_path / "site")
    assert report.cases_written == 0 and len(CaseStore(tmp_path / "site")) == 0
    assert report.rejections == []  # not errors: readable series no task uses
    taken_for = {unused.path: unused.kind for unused in report.not_used}
    assert taken_for == {"mprage": "non-cardiac", "dwi": "diffusion", "head": "unrecognised"}
    reasons = {unused.path: unused.reason for unused in report.not_used}
    assert reasons["mprage"] == "not cardiac (BodyPartExamined ORBIT): not used by any task"
    assert reasons["head"] == "single images without inversion recovery: not LGE: not used by any task"
    assert report.to_json_dict()["series_not_used_by_kind"] == {"diffusion": 1, "non-cardiac": 1, "unrecognised": 1}


def test_a_localizer_is_recognised_by_its_type_its_name_or_its_three_planes(tmp_path: Path):
    identity = Identity("L")
    ge = {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "InversionTime": None, "ScanningSequence": "GR"}
    write_series(tmp_path / "ge", identity, series_number=1, n_slices=3, header=ge)
    named = {"SeriesDescription": "Survey", "InversionTime": None, "ScanningSequence": "GR"}
    write_series(tmp_path / "philips", identity, series_number=2, n_slices=3, header=named)
    planes = tmp_path / "three-planes"
    for k, orientation in enumerate(([0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1], [1, 0, 0, 0, 1, 0])):
        header = {"InversionTime": None, "ScanningSequence": "GR", "SeriesDescription": "tripilot",
                  "ImageOrientationPatient": orientation, "SOPInstanceUID": uid("sop", identity.key, 3, k)}  # fmt: skip
        write_series(planes / str(k), identity, series_number=3, n_slices=1, seed=k, header=header)
    kinds = kinds_of(tmp_path)
    assert kinds == {"ge": SeriesKind.LOCALIZER, "philips": SeriesKind.LOCALIZER, "three-planes": SeriesKind.LOCALIZER}


def test_psir_is_the_partner_of_its_magnitude_stack_and_only_the_magnitude_is_stored(tmp_path: Path):
    identity = Identity("P")
    magnitude = {"ImageType": ["ORIGINAL", "PRIMARY", "M_IR", "M", "IR"], "SeriesDescription": "PSIR_SAX"}
    psir = {"ImageType": ["ORIGINAL", "PRIMARY", "R_IR", "R", "IR"], "SeriesDescription": "PSIR_SAX"}
    first = write_series(tmp_path / "dicom" / "mag", identity, series_number=7, header=magnitude)
    second = write_series(tmp_path / "dicom" / "psir", identity, series_number=8, header=psir)
    scan = read_dicom_folder(tmp_path / "dicom", [])
    recognised = recognise_series(scan.series)
    assert recognised[first.series_instance_uid].kind == SeriesKind.LGE_STACK
    assert recognised[second.series_instance_uid].kind == SeriesKind.LGE_PSIR
    assert recognised[second.series_instance_uid].partner == first.series_instance_uid

    report = ingest_site(tmp_path / "dicom", tmp_path / "site")
    assert report.cases_written == 1 and report.rejections == []
    [unused] = report.not_used
    assert unused.path == "psir" and unused.kind == "lge-psir"
    assert "the phase-sensitive partner of series 7 in mag (one acquisition; tasks read its magnitude)" in unused.reason


def _single_plane(folder: Path, identity: Identity, number: int, row: np.ndarray, column: np.ndarray) -> None:
    header = {"ImageOrientationPatient": [float(v) for v in (*row, *column)], "SeriesDescription": "tfl_psir"}
    write_series(folder, identity, series_number=number, n_slices=1, header=header)


def test_a_single_lge_plane_is_short_or_long_axis_by_its_angle_to_the_exams_stack(tmp_path: Path):
    identity = Identity("S")
    stack = write_series(tmp_path / "sax", identity, series_number=1)
    orientation = np.asarray(stack.geometry.image_orientation)
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    _single_plane(tmp_path / "one-sax", identity, 2, row, column)
    _single_plane(tmp_path / "four-chamber", identity, 3, row, normal)
    assert kinds_of(tmp_path) == {
        "sax": SeriesKind.LGE_STACK,
        "one-sax": SeriesKind.LGE_STACK,
        "four-chamber": SeriesKind.LGE_LONG_AXIS,
    }


def test_an_inversion_recovery_stack_in_a_patient_plane_is_not_lge(tmp_path: Path):
    header = {"ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "SeriesDescription": "t1_tirm_tra"}
    written = write_series(tmp_path / "tra", Identity("T"), header=header)
    assert written.files
    assert kinds_of(tmp_path) == {"tra": SeriesKind.UNRECOGNISED}


def _frames_at_one_position(folder: Path, identity: Identity, number: int, times: list[float], **header) -> None:
    for k, time in enumerate(times):
        one = write_series(
            folder / str(k), identity, series_number=number, n_slices=1,
            header={"InversionTime": time, "InstanceNumber": k + 1,
                    "SOPInstanceUID": uid("sop", identity.key, number, k), **header},
        )  # fmt: skip
        for path in one.files:
            path.rename(folder / f"IM_{k:03d}.dcm")
        (folder / str(k)).rmdir()


@pytest.mark.parametrize(
    ("times", "description", "kind"),
    [
        ([100.0 + 80 * k for k in range(8)], "MOLLI_5(3)3", SeriesKind.MOLLI),
        ([100.0 + 40 * k for k in range(24)], "IR_scout", SeriesKind.TI_SCOUT),  # too many for MOLLI
        ([100.0 + 80 * k for k in range(8)], "TI scout", SeriesKind.TI_SCOUT),  # named
    ],
)
def test_inversion_times_at_one_position_are_molli_or_a_ti_scout(tmp_path, times, description, kind):
    _frames_at_one_position(tmp_path / "series", Identity("M"), 5, times, SeriesDescription=description)
    assert kinds_of(tmp_path) == {"series": kind}


def test_the_scanners_maps_are_recognised_and_not_stored(tmp_path: Path):
    identity = Identity("Q")
    t1 = {"ImageType": ["DERIVED", "PRIMARY", "T1 MAP", "ND", "MOCO"], "InversionTime": None}
    write_series(tmp_path / "dicom" / "t1map", identity, series_number=11, n_slices=1, header=t1)
    t2 = {"ImageType": ["DERIVED", "PRIMARY", "T2", "T2"], "InversionTime": None, "SeriesDescription": "T2map"}
    write_series(tmp_path / "dicom" / "t2map", identity, series_number=12, n_slices=1, header=t2)
    report = ingest_site(tmp_path / "dicom", tmp_path / "site")
    assert report.cases_written == 0
    assert {u.path: u.kind for u in report.not_used} == {"t1map": "t1-map", "t2map": "t2-map"}


def test_the_manifest_overrides_a_kind_and_a_bad_override_is_reported(tmp_path: Path):
    identity = Identity("O")
    header = {"ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]}
    written = write_series(tmp_path / "dicom" / "tra", identity, series_number=1, header=header)
    other = write_series(tmp_path / "dicom" / "sax", identity, series_number=2)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "series_instance_uid,series_kind\n"
        f"{written.series_instance_uid},lge-stack\n"  # a transverse LGE stack the site vouches for
        f"{other.series_instance_uid},cine-2d\n"
        ",localizer\n"
    )
    report = ingest_site(tmp_path / "dicom", tmp_path / "site", manifest=manifest)
    assert report.cases_written == 2  # the override, and the stack recognised on its own
    problems = [r.reason for r in report.rejections if r.kind == "manifest"]
    assert problems[0].startswith("line 3: series_kind 'cine-2d' is not a series kind (lge-stack, molli-t1")
    assert problems[1] == "line 4: series_kind names one series: give its series_instance_uid; row skipped"


def test_only_the_kinds_asked_for_are_stored(tmp_path: Path):
    write_series(tmp_path / "dicom" / "sax", Identity("K"), series_number=1)
    report = ingest_site(tmp_path / "dicom", tmp_path / "site", kinds=["molli-t1"])
    assert report.cases_written == 0
    [unused] = report.not_used
    assert (unused.kind, unused.reason) == (
        "lge-stack",
        "5 inversion-recovery slices on one axis: not used by any task",
    )
