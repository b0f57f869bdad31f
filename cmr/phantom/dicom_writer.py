"""One LGE short-axis series as DICOM files, one MR Image Storage file per slice.

Files are explicit VR little endian Part 10 files with the header a real
scanner and RIS would write: vendor strings, protocol, geometry, patient
demographics and identifying fields (all invented) for de-identification to
remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, MRImageStorage

from cmr.phantom import knobs
from cmr.phantom.acquisition import Acquisition
from cmr.phantom.demographics import Patient
from cmr.phantom.identity import HospitalIdentity
from cmr.phantom.spec import ScannerProfile, SiteSpec

IMPLEMENTATION_VERSION_NAME = "CMRFL_PHANTOM_1"
_LARMOR_MHZ_PER_T = 42.577478
LGE_START_S = 25 * 60  # LGE ~25 min into the study
LGE_SLICE_S = 14  # one breath-hold per slice


@dataclass(frozen=True)
class SeriesUids:
    study: str
    series: str
    frame_of_reference: str
    instances: tuple[str, ...]  # SOPInstanceUID per slice


def series_folder_name(identity: HospitalIdentity) -> str:
    return f"{identity.study_date}_{identity.series_number}_LGE_SAX"


def decimal_string(value: float, decimals: int = 6) -> str:
    """A decimal string (VR DS, at most 16 characters) without trailing zeros."""
    text = f"{round(float(value), decimals):.{decimals}f}".rstrip("0").rstrip(".")
    text = "0" if text in ("-0", "") else text
    if len(text) > 16:
        raise ValueError(f"DS value {value!r} does not fit 16 characters")
    return text


def encode_pixels(
    magnitude: np.ndarray, scanner: ScannerProfile, receiver_gain: float
) -> tuple[np.ndarray, float, float]:
    """Stored uint16 values (12 bits) and the (slope, intercept) that give the scanner's values."""
    scanner_values = magnitude * (scanner.raw_gain * receiver_gain)
    slope = scanner.rescale_slope if scanner.rescale_slope is not None else 1.0
    intercept = scanner.rescale_intercept if scanner.rescale_intercept is not None else 0.0
    stored = np.clip(np.rint((scanner_values - intercept) / slope), 0, knobs.MAX_STORED_VALUE)
    return stored.astype(np.uint16), slope, intercept


def base_dataset(
    site: SiteSpec,
    patient: Patient,
    identity: HospitalIdentity,
    study_uid: str,
    frame_of_reference_uid: str,
) -> Dataset:
    """What every series of the patient's study shares: patient, study, scanner, frame of reference."""
    scanner = site.scanner
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = identity.study_date
    ds.StudyTime = identity.study_time
    ds.AccessionNumber = identity.accession_number
    ds.Modality = "MR"
    ds.Manufacturer = scanner.manufacturer
    ds.InstitutionName = site.institution_name
    ds.InstitutionAddress = site.institution_address
    ds.ReferringPhysicianName = identity.referring_physician
    ds.StationName = scanner.station_name
    ds.StudyDescription = "MRI HEART WITH CONTRAST"
    ds.OperatorsName = identity.operator
    ds.ManufacturerModelName = scanner.model

    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = "M" if patient.sex == "male" else "F"
    ds.PatientAge = f"{patient.age_years:03d}Y"
    ds.PatientSize = decimal_string(patient.height_cm / 100.0, 2)
    ds.PatientWeight = decimal_string(patient.weight_kg, 1)
    if identity.ethnic_group_dicom is not None:
        ds.EthnicGroup = identity.ethnic_group_dicom

    ds.BodyPartExamined = "HEART"
    ds.MRAcquisitionType = "2D"
    ds.ImagingFrequency = decimal_string(_LARMOR_MHZ_PER_T * scanner.field_strength_t, 5)
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = decimal_string(scanner.field_strength_t, 1)
    ds.DeviceSerialNumber = scanner.device_serial_number
    ds.SoftwareVersions = scanner.software_version
    ds.PatientPosition = "HFS"

    ds.StudyInstanceUID = study_uid
    ds.StudyID = identity.study_id
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def lge_series_dataset(
    site: SiteSpec,
    patient: Patient,
    identity: HospitalIdentity,
    acquisition: Acquisition,
    uids: SeriesUids,
    window: tuple[float, float],
    rescale: tuple[float, float],
) -> Dataset:
    scanner = site.scanner
    ds = base_dataset(site, patient, identity, uids.study, uids.frame_of_reference)
    ds.ImageType = list(scanner.image_type)
    ds.SeriesTime = identity.study_time
    ds.SeriesDescription = scanner.series_description
    ds.ScanningSequence = scanner.scanning_sequence.split("\\")
    ds.SequenceVariant = scanner.sequence_variant.split("\\")
    ds.ScanOptions = ["IR", "CG"]
    ds.SequenceName = scanner.sequence_name
    ds.SliceThickness = decimal_string(acquisition.slice_thickness_mm, 3)
    ds.RepetitionTime = decimal_string(scanner.repetition_time_ms, 3)
    ds.EchoTime = decimal_string(scanner.echo_time_ms, 3)
    ds.InversionTime = decimal_string(acquisition.inversion_time_ms, 1)
    ds.NumberOfAverages = "1"
    ds.SpacingBetweenSlices = decimal_string(scanner.spacing_between_slices_mm, 3)
    ds.FlipAngle = decimal_string(scanner.flip_angle_deg, 1)
    ds.ProtocolName = scanner.series_description

    ds.SeriesInstanceUID = uids.series
    ds.SeriesNumber = identity.series_number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [decimal_string(v, 6) for v in acquisition.geometry.image_orientation]

    ds.Rows = acquisition.rows
    ds.Columns = acquisition.columns
    ds.PixelSpacing = [decimal_string(acquisition.pixel_spacing_mm, 4), decimal_string(acquisition.pixel_spacing_mm, 4)]
    ds.WindowCenter = decimal_string(window[0], 1)
    ds.WindowWidth = decimal_string(window[1], 1)
    if scanner.rescale_slope is not None:
        ds.RescaleIntercept = decimal_string(rescale[1], 6)
        ds.RescaleSlope = decimal_string(rescale[0], 6)
        ds.RescaleType = "US"
    return ds


def write_lge_series(
    series_dir: Path,
    site: SiteSpec,
    patient: Patient,
    identity: HospitalIdentity,
    acquisition: Acquisition,
    stored: np.ndarray,
    rescale: tuple[float, float],
    uids: SeriesUids,
) -> list[Path]:
    """Write ``stored`` (uint16 ``[slice, row, column]``) as ``IM_0001.dcm`` … in ``series_dir``."""
    if stored.dtype != np.uint16 or stored.shape != (acquisition.n_slices, acquisition.rows, acquisition.columns):
        raise ValueError(f"{series_dir}: pixel array {stored.dtype} {stored.shape} does not match the series")
    scanner_values = stored.astype(np.float32) * rescale[0] + rescale[1]
    upper = float(np.percentile(scanner_values, 99.5))
    window = (upper / 2.0, max(upper, 1.0))
    ds = lge_series_dataset(site, patient, identity, acquisition, uids, window, rescale)
    series_dir.mkdir(parents=True, exist_ok=True)
    hours, minutes, seconds = int(identity.study_time[:2]), int(identity.study_time[2:4]), int(identity.study_time[4:6])
    start_seconds = hours * 3600 + minutes * 60 + seconds + LGE_START_S
    paths = []
    for k in range(acquisition.n_slices):
        ds.file_meta.MediaStorageSOPInstanceUID = UID(uids.instances[k])
        ds.SOPInstanceUID = uids.instances[k]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [decimal_string(v, 4) for v in acquisition.slice_positions[k]]
        ds.SliceLocation = decimal_string(acquisition.slice_locations[k], 4)
        t = (start_seconds + LGE_SLICE_S * k) % 86400
        ds.AcquisitionTime = ds.ContentTime = f"{t // 3600:02d}{t % 3600 // 60:02d}{t % 60:02d}"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = series_dir / f"IM_{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
