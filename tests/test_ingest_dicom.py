"""Reading DICOM folders into checked MR stacks, on real files nobody here wrote.

The real files are pydicom's bundled test files (only those shipped inside the package;
nothing is downloaded): MR in every transfer syntax pydicom ships, truncated MR, CT,
RT, secondary capture, files without a preamble, and files that are not DICOM at all.
pydicom bundles no multi-frame MR, so enhanced MR is built from MR_small's pixels.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import MPEG2MPML, EnhancedMRImageStorage, ExplicitVRLittleEndian

from cmr.dicom_files import read_dicom_folder
from cmr.dicom_series import scan_dicom_folder
from cmr.ingest import ingest_site
from cmr.store import CaseStore
from ingest_fixtures import Identity, slice_dataset, write_series


def bundled(name: str) -> Path:
    """A test file shipped inside pydicom (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with this pydicom"
    return Path(path)


def reference_mr_small() -> np.ndarray:
    return pydicom.dcmread(bundled("MR_small.dcm")).pixel_array.astype(np.float32)


def ingest_as_lge(dicom: Path, site: Path) -> None:
    """Ingest with a manifest that says every readable series is an LGE stack.

    MR_small is a 64×64 head slice, which ingest rightly refuses as LGE; these tests are
    about reading and decoding files, so the manifest overrides the kind per series, as
    a hospital can.
    """
    uids = {series.series_instance_uid for series in read_dicom_folder(dicom, []).series}
    manifest = dicom.parent / "manifest.csv"
    manifest.write_text("series_instance_uid,series_kind\n" + "".join(f"{uid},lge-stack\n" for uid in sorted(uids)))
    ingest_site(dicom, site, manifest=manifest)


def ingest_files(tmp_path: Path, *names: str, as_lge: bool = True) -> tuple[dict, CaseStore]:
    dicom = tmp_path / "dicom"
    for name in names:
        target = dicom / "exports" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bundled(name), target)
    if as_lge:
        ingest_as_lge(dicom, tmp_path / "site")
    else:
        ingest_site(dicom, tmp_path / "site")
    return json.loads((tmp_path / "site" / "ingest-report.json").read_text()), CaseStore(tmp_path / "site")


LOSSLESS_MR_SMALL = (
    "MR_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_padded.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless: pylibjpeg-openjpeg
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless: pylibjpeg-libjpeg
)


@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding")
@pytest.mark.parametrize("name", LOSSLESS_MR_SMALL)
def test_a_single_mr_image_in_any_bundled_encoding_is_a_one_slice_case(tmp_path: Path, name: str):
    report, store = ingest_files(tmp_path, name)
    assert report["rejections"] == []
    assert (report["cases_written"], report["cases_without_mask"]) == (1, 1)
    [case] = list(store)
    assert case.image.shape == (1, 64, 64)
    np.testing.assert_array_equal(case.image[0], reference_mr_small())
    assert (case.entry.row_spacing_mm, case.entry.column_spacing_mm) == (0.3125, 0.3125)
    assert case.entry.slice_spacing_mm == pytest.approx(0.8)  # SliceThickness of a lone slice
    assert case.entry.attributes.vendor == "Canon"  # TOSHIBA_MEC
    assert case.entry.attributes.sex == "female"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MR_truncated.dcm", "pixel data truncated: 8130 bytes"),
        ("CT_small.dcm", "modality CT: only MR series are ingested"),
        ("rtdose.dcm", "modality RTDOSE: only MR series are ingested"),
        ("SC_rgb_rle_2frame.dcm", "modality OT: only MR series are ingested"),
        ("ExplVR_LitEndNoMeta.dcm", "modality RTPLAN"),  # no preamble, still read
        ("rtstruct.dcm", "modality RTSTRUCT"),
        ("meta_missing_tsyntax.dcm", "no modality: only MR series are ingested"),
        ("README.txt", "not a DICOM file (no DICM preamble and no readable header)"),
        ("zipMR.gz", "not a DICOM file"),
        ("no_meta.dcm", "not a DICOM file"),
    ],
)
def test_unusable_bundled_files_are_rejected_with_their_reason(tmp_path: Path, name: str, reason: str):
    report, store = ingest_files(tmp_path, name, as_lge=False)
    assert report["cases_written"] == 0 and len(store) == 0
    [rejection] = report["rejections"]
    assert rejection["kind"] == "file"
    assert rejection["path"] == f"exports/{name}"
    assert reason in rejection["reason"]


def test_an_empty_file_is_named_as_empty(tmp_path: Path):
    (tmp_path / "dicom" / "a").mkdir(parents=True)
    (tmp_path / "dicom" / "a" / "IM_0001.dcm").touch()
    scan = scan_dicom_folder(tmp_path / "dicom")
    assert [(r.path, r.reason) for r in scan.rejections] == [("a/IM_0001.dcm", "empty file (0 bytes)")]


def test_a_transfer_syntax_without_a_decoder_is_rejected_with_what_to_do(tmp_path: Path):
    dataset = pydicom.dcmread(bundled("MR_small.dcm"))
    dataset.file_meta.TransferSyntaxUID = MPEG2MPML  # video: nothing decodes it
    dataset.PixelData = encapsulate([dataset.PixelData])
    dataset["PixelData"].VR, dataset["PixelData"].is_undefined_length = "OB", True
    (tmp_path / "dicom").mkdir()
    dataset.save_as(tmp_path / "dicom" / "video.dcm")
    [rejection] = scan_dicom_folder(tmp_path / "dicom").rejections
    assert rejection.reason.startswith("transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)")
    assert "cannot be decoded: no decoder exists for it; export the series uncompressed" in rejection.reason


def test_one_bad_file_among_many_leaves_the_rest_ingested(tmp_path: Path):
    names = ("MR_small_jp2klossless.dcm", "CT_small.dcm", "README.txt", "MR_truncated.dcm", "rtdose.dcm")
    report, _store = ingest_files(tmp_path, *names)
    assert report["files_seen"] == 5
    assert report["cases_written"] == 1
    rejected = {r["path"] for r in report["rejections"]}
    assert rejected == {f"exports/{n}" for n in names[1:]}


# ------------------------------------------------------------------- multi-frame MR


def enhanced_mr(path: Path, *, with_positions: bool = True, n_frames: int = 3) -> np.ndarray:
    """Enhanced MR built on MR_small: frames stored top slice first, geometry per frame."""
    source = pydicom.dcmread(bundled("MR_small.dcm"))
    frames = np.stack([source.pixel_array + 100 * k for k in range(n_frames)]).astype(np.int16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = source.SOPInstanceUID + ".9"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "Manufacturer", "PatientSex"):
        setattr(ds, keyword, source[keyword].value)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = source.SeriesInstanceUID + ".9"
    ds.Modality = "MR"
    ds.NumberOfFrames = n_frames
    ds.Rows, ds.Columns = source.Rows, source.Columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    measures, orientation, transformation = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.75], 4.0
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    transformation.RescaleSlope, transformation.RescaleIntercept, transformation.RescaleType = 2, -10, "US"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transformation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(n_frames):
        item = Dataset()
        if with_positions:
            position = Dataset()
            position.ImagePositionPatient = [-10.0, -20.0, 30.0 - 4.0 * k]  # descending: stored top first
            item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = frames.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return frames


def test_enhanced_multi_frame_mr_is_one_stack_ordered_along_the_normal(tmp_path: Path):
    frames = enhanced_mr(tmp_path / "dicom" / "enhanced.dcm")
    ingest_as_lge(tmp_path / "dicom", tmp_path / "site")
    [case] = list(CaseStore(tmp_path / "site"))
    assert case.image.shape == (3, 64, 64)
    expected = frames[::-1].astype(np.float32) * 2 - 10  # lowest position first, rescaled
    np.testing.assert_array_equal(case.image, expected)
    assert (case.entry.row_spacing_mm, case.entry.column_spacing_mm, case.entry.slice_spacing_mm) == (0.5, 0.75, 4.0)
    affine = np.asarray(case.entry.affine_ras)
    np.testing.assert_allclose(affine[:3, 3], [10.0, 20.0, 22.0])  # LPS (-10,-20,22) in RAS


def test_multi_frame_mr_without_frame_positions_is_rejected(tmp_path: Path):
    enhanced_mr(tmp_path / "dicom" / "enhanced.dcm", with_positions=False)
    [rejection] = scan_dicom_folder(tmp_path / "dicom").rejections
    assert rejection.path == "enhanced.dcm"
    assert "frame 1 has no geometry in its functional groups (PlanePositionSequence missing)" in rejection.reason


def test_legacy_multi_frame_without_functional_groups_is_rejected(tmp_path: Path):
    dataset = pydicom.dcmread(bundled("MR_small.dcm"))
    dataset.NumberOfFrames = 2
    dataset.PixelData = dataset.PixelData * 2
    (tmp_path / "dicom").mkdir()
    dataset.save_as(tmp_path / "dicom" / "two_frames.dcm")
    [rejection] = scan_dicom_folder(tmp_path / "dicom").rejections
    assert "multi-frame image (2 frames) without functional groups" in rejection.reason


# ------------------------------------------------------------------- series checks


def test_slices_are_ordered_by_position_not_by_file_name(tmp_path: Path):
    written = write_series(tmp_path / "dicom" / "s", Identity("A"), n_slices=4, file_order="reversed")
    [series] = scan_dicom_folder(tmp_path / "dicom").series
    np.testing.assert_array_equal(series.load_image(), written.expected_image)
    np.testing.assert_allclose(series.geometry.affine_ras(), written.geometry.affine_ras(), atol=1e-3)


def test_an_image_with_another_orientation_is_left_out_and_the_stack_kept(tmp_path: Path):
    identity = Identity("B")
    written = write_series(tmp_path / "dicom" / "s", identity, n_slices=4)
    localiser = slice_dataset(
        identity,
        1,
        9,
        written.geometry,
        written.stored_pixels[0],
        header={"ImageOrientationPatient": [0, 1, 0, 0, 0, -1]},
    )
    localiser.save_as(tmp_path / "dicom" / "s" / "IM_0099.dcm", enforce_file_format=True)
    scan = scan_dicom_folder(tmp_path / "dicom")
    [series] = scan.series
    assert len(series.slices) == 4
    [rejection] = scan.rejections
    assert rejection.path == "s/IM_0099.dcm"
    assert "slice orientation (0, 1, 0, 0, 0, -1) differs from the rest of series 1 in s" in rejection.reason


def test_several_images_at_one_position_reject_the_series(tmp_path: Path):
    identity = Identity("C")
    written = write_series(tmp_path / "dicom" / "cine", identity, n_slices=3)
    for phase in range(3):  # a second cardiac phase at the same positions
        slice_dataset(
            identity,
            1,
            10 + phase,
            written.geometry,
            written.stored_pixels[phase],
            header={"ImagePositionPatient": list(written.geometry.slice_position(phase))},
        ).save_as(tmp_path / "dicom" / "cine" / f"PH2_{phase}.dcm", enforce_file_format=True)
    scan = scan_dicom_folder(tmp_path / "dicom")
    assert scan.series == []
    [rejection] = scan.rejections
    assert (rejection.kind, rejection.path) == ("series", "cine")
    assert "6 images share 3 slice positions" in rejection.reason


def test_a_missing_slice_rejects_the_series(tmp_path: Path):
    written = write_series(tmp_path / "dicom" / "s", Identity("D"), n_slices=5)
    written.files[2].unlink()
    scan = scan_dicom_folder(tmp_path / "dicom")
    assert scan.series == []
    assert "slice spacing is irregular (8.00 to 16.00 mm): a slice is missing" in scan.rejections[0].reason


def test_a_copied_file_is_used_once(tmp_path: Path):
    written = write_series(tmp_path / "dicom" / "s", Identity("E"), n_slices=3)
    shutil.copy(written.files[0], tmp_path / "dicom" / "copy.dcm")
    scan = scan_dicom_folder(tmp_path / "dicom")
    assert len(scan.series[0].slices) == 3
    [rejection] = scan.rejections
    assert (rejection.path, rejection.reason) == (
        "s/IM_0003.dcm",
        "a copy of copy.dcm (same SOPInstanceUID and pixels); copy left out",
    )


def test_images_without_patient_geometry_are_rejected(tmp_path: Path):
    write_series(tmp_path / "dicom", Identity("F"), n_slices=1, header={"ImagePositionPatient": None})
    [rejection] = scan_dicom_folder(tmp_path / "dicom").rejections
    assert rejection.reason == (
        "no patient geometry (ImagePositionPatient missing): the image cannot be placed in space"
    )


def test_burned_in_annotation_is_rejected(tmp_path: Path):
    write_series(tmp_path / "dicom", Identity("G"), n_slices=1, header={"BurnedInAnnotation": "YES"})
    [rejection] = scan_dicom_folder(tmp_path / "dicom").rejections
    assert rejection.reason.startswith("BurnedInAnnotation is YES")


def test_a_series_uid_shared_by_two_patients_is_rejected(tmp_path: Path):
    first = Identity("H")
    written = write_series(tmp_path / "dicom" / "h", first, n_slices=2)
    impostor = slice_dataset(
        Identity("I"),
        1,
        5,
        written.geometry,
        written.stored_pixels[0],
        header={"SeriesInstanceUID": first.series_uid(1)},
    )
    impostor.save_as(tmp_path / "dicom" / "h" / "other.dcm", enforce_file_format=True)
    scan = scan_dicom_folder(tmp_path / "dicom")
    assert scan.series == []
    assert "belong to 2 different patients or studies" in scan.rejections[0].reason
