"""A mapping series as DICOM: one MR Image Storage file per frame, all at one slice position.

As a scanner writes the source images of a map:

* MOLLI: ``InversionTime`` (0018,0082) of each frame, inversion to k-space
  centre (heart-rate dependent), files in acquisition order, and the same
  value in ``ImageComments`` as ``TI <ms>`` (the form Siemens MyoMaps source
  images carry). ``ScanningSequence`` ``SS\\IR``, ``SequenceVariant`` ``SK\\MP``.
* T2-prep: the preparation duration as the frame's effective echo time in
  ``EchoTime`` (0018,0081), the convention of T2-mapping source images whose
  contrast comes from a preparation rather than the readout echo, and again in
  ``ImageComments`` as ``T2prep <ms> ms``; the bSSFP readout's own TE (~1.2 ms)
  is not written. cmr.mapping_series reads ``ImageComments`` first, then
  ``EchoTime``.

Header fields (vendor strings, demographics, UIDs) follow the LGE phantom's
writer (cmr.phantom.dicom_writer); identities are invented and derived from the
case's seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, MRImageStorage

from cmr.phantom import knobs
from cmr.phantom.anatomy import TISSUE_TO_LABEL
from cmr.phantom.dicom_writer import IMPLEMENTATION_VERSION_NAME, decimal_string
from cmr.phantom.identity import derive_uid
from cmr.phantom.mapping import SLICE_THICKNESS_MM, MappingCase
from cmr.phantom.mask_writer import write_mask
from cmr.phantom.scanners import VENDOR_PROFILES

SERIES_KINDS = ("molli_native", "molli_post", "t2prep")
_LARMOR_MHZ_PER_T = 42.577478
_DESCRIPTIONS = {
    "molli_native": ("MOLLI 5(3)3 native", 101),
    "molli_post": ("MOLLI 4(1)3(1)2 post", 201),
    "t2prep": ("T2prep bSSFP", 301),
}
STORED_GAIN = 3000.0  # stored value of a fully relaxed proton density of 1 (12-bit headroom)


def _frames_and_times(case: MappingCase, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "molli_native":
        return case.molli_native, case.inversion_times_native_ms
    if kind == "molli_post":
        return case.molli_post, case.inversion_times_post_ms
    if kind == "t2prep":
        return case.t2prep, case.t2prep_ms
    raise ValueError(f"kind: expected one of {SERIES_KINDS}, got {kind!r}")


def _base_dataset(case: MappingCase, kind: str) -> Dataset:
    attributes = case.attributes
    seed = attributes.get("seed", 0)
    vendor = VENDOR_PROFILES[attributes["vendor"]]
    field_t = 1.5 if attributes["field_strength"] == "1.5T" else 3.0
    description, series_number = _DESCRIPTIONS[kind]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = "20240315"
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.Modality = "MR"
    ds.Manufacturer = vendor.manufacturers[0]
    ds.ManufacturerModelName = vendor.models[field_t][0]
    ds.SoftwareVersions = vendor.software_versions[0]
    ds.InstitutionName = "Phantom Mapping Hospital"
    ds.StudyDescription = "MRI HEART T1 T2 MAPPING"
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.PatientName = f"MAPPING^CASE{seed}"
    ds.PatientID = f"MAP{int(seed):06d}"
    ds.PatientSex = attributes["sex"]
    if "age_years" in attributes:
        ds.PatientAge = f"{int(attributes['age_years']):03d}Y"
    ds.BodyPartExamined = "HEART"
    ds.MRAcquisitionType = "2D"
    ds.ScanningSequence = ["SS", "IR"] if kind != "t2prep" else ["SS"]
    ds.SequenceVariant = ["SK", "MP"]
    ds.SequenceName = "*tfi2d1" if kind != "t2prep" else "*tfi2d1_t2p"
    ds.SliceThickness = decimal_string(SLICE_THICKNESS_MM, 3)
    ds.RepetitionTime = decimal_string(2.7, 3)
    ds.FlipAngle = decimal_string(35.0 if kind != "t2prep" else 70.0, 1)
    ds.MagneticFieldStrength = decimal_string(field_t, 1)
    ds.ImagingFrequency = decimal_string(_LARMOR_MHZ_PER_T * field_t, 5)
    ds.ImagedNucleus = "1H"
    ds.HeartRate = str(round(float(attributes["heart_rate_bpm"])))
    ds.PatientPosition = "HFS"

    ds.StudyInstanceUID = derive_uid("mapping", seed, "study")
    ds.SeriesInstanceUID = derive_uid("mapping", seed, kind, "series")
    ds.FrameOfReferenceUID = derive_uid("mapping", seed, "frame-of-reference")
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    geometry = case.geometry
    ds.ImageOrientationPatient = [decimal_string(v, 6) for v in geometry.image_orientation]
    ds.ImagePositionPatient = [decimal_string(v, 4) for v in geometry.first_position]
    normal = np.cross(np.asarray(geometry.image_orientation[:3]), np.asarray(geometry.image_orientation[3:]))
    ds.SliceLocation = decimal_string(float(np.dot(geometry.first_position, normal)), 4)
    ds.PositionReferenceIndicator = ""

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = case.shape
    ds.PixelSpacing = [decimal_string(geometry.pixel_spacing[0], 4), decimal_string(geometry.pixel_spacing[1], 4)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def frame_timing(t2prep: bool, time_ms: float) -> dict[str, str]:
    """The per-frame timing elements of a mapping source image (see the module docstring)."""
    if t2prep:
        return {"EchoTime": decimal_string(time_ms, 2), "ImageComments": f"T2prep {decimal_string(time_ms, 2)} ms"}
    return {
        "InversionTime": decimal_string(time_ms, 2),
        "EchoTime": decimal_string(1.2, 2),
        "ImageComments": f"TI {decimal_string(time_ms, 2)}",
    }


def write_mapping_mask(case: MappingCase, path: Path) -> None:
    """The slice's reference mask (cmr.labels values) as NIfTI on the series' grid."""
    write_mask(Path(path), TISSUE_TO_LABEL[case.tissue][None], case.geometry)


def write_mapping_series(case: MappingCase, out_dir: Path, kind: str) -> list[Path]:
    """Write series ``kind`` of ``case`` as ``IM_0001.dcm`` … (acquisition order) in ``out_dir``."""
    frames, times = _frames_and_times(case, kind)
    stored = np.clip(np.rint(frames * STORED_GAIN), 0, knobs.MAX_STORED_VALUE).astype(np.uint16)
    ds = _base_dataset(case, kind)
    upper = float(np.percentile(stored, 99.5))
    ds.WindowCenter, ds.WindowWidth = decimal_string(upper / 2, 1), decimal_string(max(upper, 1.0), 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = case.attributes.get("seed", 0)
    paths = []
    for k, (image, time_ms) in enumerate(zip(stored, times)):
        uid = derive_uid("mapping", seed, kind, "instance", k)
        ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
        ds.SOPInstanceUID = uid
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = k + 1
        for keyword, value in frame_timing(kind == "t2prep", time_ms).items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(image).tobytes()
        path = out_dir / f"IM_{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
