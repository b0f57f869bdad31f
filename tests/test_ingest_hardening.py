"""Ingest against hostile or careless input (issue 21, items 4 and 5): one test per finding.

Bombs are refused from their headers before anything is inflated; nothing stored is lost
or doubled without being asked; de-identification keeps only what is needed; label files
stay inside the labels folder and the DICOM folder's links stay inside it unless asked;
the store is its owner's alone; a patient never sits on both sides of the split.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import shutil
import stat
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from cmr.attributes import SubgroupAttributes
from cmr.dicom_files import read_dicom_folder
from cmr.ingest import IngestReport, ingest_site
from cmr.store import CaseStore
from ingest_fixtures import Identity, default_geometry, slice_dataset, write_mask, write_series

MiB = 1 << 20


def peak_memory(action: Callable[[], IngestReport]) -> tuple[IngestReport, int]:
    """What ``action`` returns and the most memory Python and numpy held while it ran."""
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def write_manifest(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# ------------------------------------------------------------------- 4. bombs


def write_deflated_bomb(path: Path, rows: int, columns: int, trailing_bytes: int = 0) -> None:
    """A Deflated Explicit VR file whose header claims rows x columns 8-bit pixels, all there (zeros),
    then ``trailing_bytes`` of padding its header does not account for.

    Written as a stream, so that the test itself never holds the inflated data.
    """
    dataset = slice_dataset(Identity("Z"), 1, 0, default_geometry(1), np.zeros((2, 2), np.int16))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    del dataset.PixelData
    dataset.Rows, dataset.Columns = rows, columns
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit, dataset.PixelRepresentation = 7, 0
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    meta.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(meta, dataset.file_meta)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, dataset)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:

        def zeros(n_bytes: int) -> None:
            for start in range(0, n_bytes, MiB):
                handle.write(deflate.compress(bytes(min(MiB, n_bytes - start))))

        handle.write(meta.getvalue())
        handle.write(deflate.compress(body.getvalue()))
        handle.write(deflate.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, rows * columns)))
        zeros(rows * columns)
        if trailing_bytes:  # DataSetTrailingPadding
            handle.write(deflate.compress(struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, trailing_bytes)))
            zeros(trailing_bytes)
        handle.write(deflate.flush())


def test_a_deflated_pixel_bomb_is_refused_from_its_header_without_inflating_it(tmp_path: Path):
    bomb = tmp_path / "dicom" / "bomb.dcm"
    write_deflated_bomb(bomb, 16384, 16384)  # 256 MiB of pixels in about 0.3 MB
    assert bomb.stat().st_size < MiB

    report, peak = peak_memory(lambda: ingest_site(tmp_path / "dicom", tmp_path / "site"))

    [rejection] = report.rejections
    assert (rejection.kind, rejection.path) == ("file", "bomb.dcm")
    assert "16384" in rejection.reason and "limit" in rejection.reason
    assert peak < 32 * MiB
    assert len(CaseStore(tmp_path / "site")) == 0


def test_a_deflated_file_inflating_past_what_its_header_accounts_for_is_refused(tmp_path: Path):
    bomb = tmp_path / "dicom" / "padded.dcm"
    write_deflated_bomb(bomb, 256, 256, trailing_bytes=256 * MiB)  # a plausible image, then 256 MiB of padding

    report, peak = peak_memory(lambda: ingest_site(tmp_path / "dicom", tmp_path / "site"))

    [rejection] = report.rejections
    assert (rejection.kind, rejection.path) == ("file", "padded.dcm")
    assert rejection.reason.startswith("deflated data inflates to more than its header accounts for")
    assert peak < 32 * MiB


def write_nifti_bomb(path: Path, shape: tuple[int, int, int], affine: np.ndarray) -> None:
    """A .nii.gz whose header claims ``shape`` uint8 voxels, all there (zeros), written as a stream."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header["vox_offset"] = 352
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=6) as handle:
        handle.write(header.binaryblock + b"\0" * 4)
        zeros = bytes(MiB)
        for _ in range(int(np.prod(shape)) // MiB):
            handle.write(zeros)


def test_a_nifti_mask_claiming_a_huge_shape_is_refused_before_its_data_is_read(tmp_path: Path):
    series = write_series(tmp_path / "dicom" / "s", Identity("N"), n_slices=3)
    mask = tmp_path / "labels" / f"{series.series_instance_uid}.nii.gz"
    write_nifti_bomb(mask, (1024, 1024, 256), series.geometry.affine_ras())  # 256 MiB in about 0.3 MB
    assert mask.stat().st_size < MiB

    report, peak = peak_memory(
        lambda: ingest_site(tmp_path / "dicom", tmp_path / "site", labels_dir=tmp_path / "labels")
    )

    [rejection] = report.rejections
    assert (rejection.kind, rejection.path) == ("mask", f"labels/{mask.name}")
    assert "(1024, 1024, 256)" in rejection.reason
    assert peak < 32 * MiB
    [case] = list(CaseStore(tmp_path / "site"))
    assert case.mask is None


# ------------------------------------------------------------------- 5. nothing lost or doubled silently


def test_reingesting_without_labels_keeps_the_stored_mask_and_labels_unless_replaced(tmp_path: Path):
    series = write_series(tmp_path / "dicom" / "s", Identity("K"), n_slices=3)
    mask = write_mask(tmp_path / "labels" / f"{series.series_instance_uid}.nii.gz", series)
    manifest = write_manifest(
        tmp_path / "manifest.csv", "series_instance_uid,scar_type", [f"{series.series_instance_uid},ischaemic"]
    )
    site = tmp_path / "site"
    ingest_site(tmp_path / "dicom", site, manifest=manifest, labels_dir=tmp_path / "labels")

    again = ingest_site(tmp_path / "dicom", site)  # the labels folder and manifest forgotten

    [case] = list(CaseStore(site))
    np.testing.assert_array_equal(case.mask, mask)
    assert case.entry.case_labels == {"scar_type": "ischaemic"}
    assert (again.cases_written, again.cases_unchanged, again.cases_without_mask) == (0, 1, 0)
    [kept] = again.rejections
    assert kept.path == "s"
    assert "kept the stored mask and case labels (scar_type)" in kept.reason and "--replace" in kept.reason

    ingest_site(tmp_path / "dicom", site, replace=True)
    [case] = list(CaseStore(site))
    assert case.mask is None and case.entry.case_labels == {}


def test_ingest_refuses_a_lost_or_changed_salt_instead_of_storing_every_series_again(tmp_path: Path):
    write_series(tmp_path / "dicom" / "s", Identity("S"), n_slices=2)
    site = tmp_path / "site"
    ingest_site(tmp_path / "dicom", site)

    shutil.rmtree(site / "secret")
    with pytest.raises(ValueError, match=r"secret/salt is missing.*restore it") as lost:
        ingest_site(tmp_path / "dicom", site)
    assert str(site) in str(lost.value)
    assert not (site / "secret" / "salt").exists()  # no new salt made behind the site's back

    (site / "secret").mkdir(mode=0o700)
    (site / "secret" / "salt").write_text(secrets.token_hex(32) + "\n")
    with pytest.raises(ValueError, match=r"secret/salt is not the salt this store was written with"):
        ingest_site(tmp_path / "dicom", site)
    assert len(CaseStore(site)) == 1


def test_a_forged_slice_sharing_a_sop_instance_uid_rejects_both_copies(tmp_path: Path):
    series = write_series(tmp_path / "dicom" / "s", Identity("F"), n_slices=5)
    genuine = series.files[2]  # a middle slice: s/IM_0003.dcm
    forged = pydicom.dcmread(genuine)
    forged.PixelData = np.full((12, 10), 1234, "<i2").tobytes()
    forged.save_as(tmp_path / "dicom" / "s" / "IM_0000_forged.dcm")  # read first, as it sorts first

    scan = read_dicom_folder(tmp_path / "dicom")

    reasons = {r.path: r.reason for r in scan.rejections}
    assert set(reasons) == {"s/IM_0000_forged.dcm", "s/IM_0003.dcm"}
    assert "shares its SOPInstanceUID with s/IM_0003.dcm but holds different pixels" in reasons["s/IM_0000_forged.dcm"]
    assert "shares its SOPInstanceUID with s/IM_0000_forged.dcm but holds different pixels" in reasons["s/IM_0003.dcm"]
    assert all(f.relative not in reasons for s in scan.series for f in s.files)


def test_an_identical_copy_of_a_slice_is_used_once_and_reported(tmp_path: Path):
    series = write_series(tmp_path / "dicom" / "s", Identity("C"), n_slices=3)
    shutil.copy(series.files[0], tmp_path / "dicom" / "s" / "copy.dcm")

    scan = read_dicom_folder(tmp_path / "dicom")

    [rejection] = scan.rejections
    assert (rejection.path, rejection.reason) == (
        "s/copy.dcm",
        "a copy of s/IM_0003.dcm (same SOPInstanceUID and pixels); copy left out",
    )
    assert scan.series[0].n_images == 3


# ------------------------------------------------------------------- 5. de-identification by allowlist


def test_stored_headers_keep_only_the_allowlisted_attributes(tmp_path: Path):
    planted: dict[str, object] = {
        "PatientBirthDateInAlternativeCalendar": "1337/02/29",
        "CommentsOnTheScheduledProcedureStep": "LOUDWATER anxious about the scanner",
    }
    series = write_series(tmp_path / "dicom" / "s", Identity("A"), n_slices=2, header=planted)
    for path in series.files:  # a public tag no dictionary knows
        dataset = pydicom.dcmread(path)
        dataset.add_new(0x00331001, "LO", "UNLISTEDPUBLIC77")
        dataset.save_as(path)
    site = tmp_path / "site"
    ingest_site(tmp_path / "dicom", site)

    [header_file] = (site / "store" / "headers").iterdir()
    text = header_file.read_text()
    for value in ("1337/02/29", "LOUDWATER", "UNLISTEDPUBLIC77", "00100033", "00400400", "00331001"):
        assert value not in text
    from cmr.deid import KEPT_ATTRIBUTES

    kept = {f"{pydicom.datadict.tag_for_keyword(keyword):08X}" for keyword in KEPT_ATTRIBUTES}
    stored = set()

    def tags(document: dict) -> None:
        for tag, element in document.items():
            stored.add(tag)
            for item in element.get("Value", []) if element["vr"] == "SQ" else []:
                tags(item)

    tags(json.loads(text))
    assert stored <= kept
    assert "00100020" in stored  # the patient pseudonym: the split and DP-SGD group a patient's cases


# ------------------------------------------------------------------- 5. paths stay where they belong


def test_a_mask_file_outside_the_labels_folder_is_refused(tmp_path: Path):
    labels = tmp_path / "labels"
    labels.mkdir()
    rows = []
    outside_names = ("../outside-0.nii.gz", str(tmp_path / "outside-1.nii.gz"), "link-2.nii.gz")
    for index, mask_file in enumerate(outside_names):
        series = write_series(tmp_path / "dicom" / f"s{index}", Identity("XYZ"[index]), n_slices=2, seed=index)
        write_mask(tmp_path / f"outside-{index}.nii.gz", series)
        rows.append(f"{series.series_instance_uid},{mask_file}")
    (labels / "link-2.nii.gz").symlink_to(tmp_path / "outside-2.nii.gz")
    manifest = write_manifest(tmp_path / "manifest.csv", "series_instance_uid,mask_file", rows)

    report = ingest_site(tmp_path / "dicom", tmp_path / "site", manifest=manifest, labels_dir=labels)

    refused = [r for r in report.rejections if "outside the labels folder" in r.reason]
    assert {(r.kind, r.path) for r in refused} == {("manifest", "manifest.csv")}
    assert sorted(r.reason.split(":")[0] for r in refused) == ["line 2", "line 3", "line 4"]
    assert all(not case.entry.has_mask for case in CaseStore(tmp_path / "site"))


def test_links_out_of_the_dicom_folder_are_not_followed_unless_asked(tmp_path: Path):
    dicom = tmp_path / "dicom"
    write_series(dicom / "inside", Identity("I"), n_slices=2)
    file_target = write_series(tmp_path / "elsewhere" / "a", Identity("E"), n_slices=2, seed=1)
    write_series(tmp_path / "elsewhere" / "b", Identity("G"), n_slices=2, seed=2)
    (dicom / "linked").mkdir()
    for path in file_target.files:
        (dicom / "linked" / path.name).symlink_to(path)
    (dicom / "linked-folder").symlink_to(tmp_path / "elsewhere" / "b", target_is_directory=True)

    report = ingest_site(dicom, tmp_path / "site")

    assert len(CaseStore(tmp_path / "site")) == 1
    not_followed = {r.path: r.reason for r in report.rejections}
    assert set(not_followed) == {"linked/IM_0001.dcm", "linked/IM_0002.dcm", "linked-folder"}
    assert all("outside the DICOM folder" in r and "--follow-links" in r for r in not_followed.values())

    followed = ingest_site(dicom, tmp_path / "site-followed", follow_links=True)
    assert followed.rejections == [] and len(CaseStore(tmp_path / "site-followed")) == 3


def test_the_command_line_takes_follow_links_and_replace(tmp_path: Path):
    from typer.testing import CliRunner

    from cmrfl.cli import app

    target = write_series(tmp_path / "elsewhere", Identity("L"), n_slices=2)
    (tmp_path / "dicom").mkdir()
    for path in target.files:
        (tmp_path / "dicom" / path.name).symlink_to(path)
    site = tmp_path / "site"
    command = ["site", "ingest", str(tmp_path / "dicom"), "--site-dir", str(site), "--follow-links", "--replace"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert len(CaseStore(site)) == 1


def test_a_manifest_that_is_not_utf8_is_reported_by_file_and_line(tmp_path: Path):
    first = write_series(tmp_path / "dicom" / "a", Identity("U"), n_slices=2)
    second = write_series(tmp_path / "dicom" / "b", Identity("V"), n_slices=2, seed=1)
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(
        "series_instance_uid,ethnicity,scar_type\n"
        f"{first.series_instance_uid},White,ischaemic\n"
        f"{second.series_instance_uid},Métis,none\n".encode("latin-1")
    )

    report = ingest_site(tmp_path / "dicom", tmp_path / "site", manifest=manifest)

    [problem] = [r for r in report.rejections if r.kind == "manifest"]
    assert problem.path == "manifest.csv"
    assert problem.reason.startswith("line 3: not UTF-8")
    labels = sorted(json.dumps(e.case_labels) for e in CaseStore(tmp_path / "site").entries())
    assert labels == ['{"scar_type": "ischaemic"}', "{}"]


# ------------------------------------------------------------------- 5. the store is the owner's


def test_the_store_is_readable_by_its_owner_only(tmp_path: Path):
    series = write_series(tmp_path / "dicom" / "s", Identity("P"), n_slices=2)
    write_mask(tmp_path / "labels" / f"{series.series_instance_uid}.nii.gz", series)
    site = tmp_path / "site"
    ingest_site(tmp_path / "dicom", site, labels_dir=tmp_path / "labels")
    (site / "store" / "index.sqlite").chmod(0o644)  # an older store, or a careless copy
    ingest_site(tmp_path / "dicom", site, labels_dir=tmp_path / "labels")

    paths = [site / "store", *(site / "store").rglob("*"), site / "ingest-report.json"]
    modes = {str(p.relative_to(site)): stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert {"store/index.sqlite", "store/headers", "store/cases"} <= set(modes)
    assert {p: m for p, m in modes.items() if m != (0o700 if (site / p).is_dir() else 0o600)} == {}


# ------------------------------------------------------------------- 5. the split is by patient


def _header(store: CaseStore, case_id: str, patient: str) -> None:
    """What ingest keeps of a case's header that the split reads: the patient pseudonym."""
    headers = store.root / "headers"
    headers.mkdir(exist_ok=True)
    (headers / f"{case_id}.json").write_text(json.dumps({"00100020": {"vr": "LO", "Value": [patient]}}))


def _case_id(index: int) -> str:
    return hashlib.sha256(f"case {index}".encode()).hexdigest()


def test_the_lge_split_keeps_each_patient_on_one_side(tmp_path: Path):
    from tasks.lge.task import LgeScarSegmentation

    store = CaseStore(tmp_path / "site")
    rng = np.random.default_rng(0)
    patient_of = {}
    for index in range(36):  # 12 patients, 3 series each
        case_id, patient = _case_id(index), f"patient-{index % 12}"
        mask = np.zeros((2, 24, 24), np.uint8)
        mask[:, 8:16, 8:16] = 2
        store.put(case_id, rng.random((2, 24, 24)), mask, (1.6, 1.6, 8.0), SubgroupAttributes(), affine_ras=np.eye(4))
        _header(store, case_id, patient)
        patient_of[case_id] = patient

    training, validation = LgeScarSegmentation().split(store)

    sides = {patient_of[c.entry.case_id] for c in training}, {patient_of[c.entry.case_id] for c in validation}
    assert sides[0] & sides[1] == set()
    assert len(training) + len(validation) == 36 and sides[1]


def test_the_mapping_split_keeps_each_patient_on_one_side(tmp_path: Path):
    from cmr.mapping_store import t1_mapping_content
    from tasks.mapping.task import MotionRobustT1Mapping

    store = CaseStore(tmp_path / "site")
    rng = np.random.default_rng(0)
    patient_of = {}
    for index in range(24):  # 8 patients, 3 examinations each, one MOLLI series each
        case_id, patient = _case_id(index), f"patient-{index % 8}"
        content = t1_mapping_content(
            case_id,
            rng.random((4, 16, 16)).astype(np.float32),
            np.array([100.0, 200.0, 400.0, 800.0]),
            contrast="native",
            study=f"study-{index}",
            haematocrit=None,
            reference_t1_ms=np.full((16, 16), 1000.0, np.float32),
            tissue_mask=None,
        )
        store.put(
            case_id,
            content.frames,
            None,
            (1.6, 1.6, 8.0),
            SubgroupAttributes(),
            case_labels=content.case_labels,
            extra_arrays=content.extra_arrays,
        )
        _header(store, case_id, patient)
        patient_of[case_id] = patient

    training, validation = MotionRobustT1Mapping().split(store)

    sides = {patient_of[s.case.entry.case_id] for s in training}, {patient_of[s.case.entry.case_id] for s in validation}
    assert sides[0] & sides[1] == set()
    assert len(training) + len(validation) == 24 and sides[1]
