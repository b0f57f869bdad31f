"""Small MR series written with pydicom, for the ingest tests.

Each series is a short-axis-like oblique stack, one file per slice, with every kind of
identifying value the de-identification must remove: in the top level, in nested
sequences, in private tags and in an overlay comment. Values are distinctive so that a
byte search of the site folder cannot hit them by chance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from cmr.geometry import StackGeometry, stack_to_nifti_array


def uid(*entropy: object) -> UID:
    return generate_uid(entropy_srcs=["cmrfl-ingest-tests", *map(str, entropy)])


def oblique_orientation(tilt_degrees: float = 20.0) -> tuple[float, ...]:
    """Two orthogonal unit vectors, tilted like a short-axis plane."""
    angle = np.radians(tilt_degrees)
    row = np.array([np.cos(angle), np.sin(angle), 0.0])
    column = np.array([-np.sin(angle) * np.cos(angle), np.cos(angle) ** 2, np.sin(angle)])
    column /= np.linalg.norm(column)
    column -= row * (row @ column)
    column /= np.linalg.norm(column)
    return tuple(float(round(v, 6)) for v in (*row, *column))


@dataclass
class Identity:
    """Identifying values of one patient and study; all must vanish from the store."""

    key: str  # e.g. "A": makes every value unique to the patient

    @property
    def values(self) -> dict[str, str]:
        k = self.key
        return {
            "PatientName": f"QUIXOTE{k}^ALONSO",
            "PatientID": f"MRN7731{k}99",
            "PatientBirthDate": f"1958041{ord(k) % 10}",
            "OtherPatientIDs": f"OTHERID{k}4455",
            "PatientAddress": f"12 Zebedee Lane {k}ville",
            "InstitutionName": f"Saint Zebedee Infirmary {k}",
            "InstitutionAddress": f"7 Lantern Row {k}town",
            "AccessionNumber": f"ACC5544{k}21",
            "StudyID": f"STY{k}9917",
            "ReferringPhysicianName": f"FAUSTUS{k}^JOHANN",
            "PerformingPhysicianName": f"VALJEAN{k}^JEAN",
            "OperatorsName": f"BOVARY{k}^EMMA",
            "StationName": f"ZEDMRI{k}01",
            "DeviceSerialNumber": f"SERIAL77{k}123",
        }

    @property
    def study_uid(self) -> str:
        return uid("study", self.key)

    def series_uid(self, number: int) -> str:
        return uid("series", self.key, number)

    @property
    def frame_of_reference_uid(self) -> str:
        return uid("for", self.key)

    def all_uids(self, series_numbers: tuple[int, ...] = (1,), n_slices: int = 8) -> list[str]:
        uids = [self.study_uid, self.frame_of_reference_uid, uid("mpps", self.key)]
        for number in series_numbers:
            uids.append(self.series_uid(number))
            uids.extend(uid("sop", self.key, number, i) for i in range(n_slices))
        return uids


@dataclass
class WrittenSeries:
    identity: Identity
    series_instance_uid: str
    geometry: StackGeometry
    stored_pixels: np.ndarray  # int16 [slice,row,col] as written
    slope: float
    intercept: float
    files: list[Path] = field(default_factory=list)

    @property
    def expected_image(self) -> np.ndarray:
        return self.stored_pixels.astype(np.float32) * self.slope + self.intercept

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.stored_pixels.shape


def slice_dataset(
    identity: Identity,
    series_number: int,
    index: int,
    geometry: StackGeometry,
    pixels: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    header: Mapping[str, object] | None = None,
) -> Dataset:
    """One MR slice with the patient's identifiers everywhere a header can hide them."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid("sop", identity.key, series_number, index)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = identity.study_uid
    ds.SeriesInstanceUID = identity.series_uid(series_number)
    ds.FrameOfReferenceUID = identity.frame_of_reference_uid
    ds.Modality = "MR"
    ds.StudyDate = "20240315"
    ds.SeriesDate = "20240315"
    ds.StudyTime = "101500"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = index + 1
    ds.SeriesDescription = "LGE PSIR SAX"
    ds.ProtocolName = f"cardiac {identity.key} protocol"
    for keyword, value in identity.values.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "F"
    ds.PatientAge = "058Y"
    ds.EthnicGroup = "White British"
    ds.Manufacturer = "Siemens Healthineers"
    ds.ManufacturerModelName = "MAGNETOM Skyra"
    ds.MagneticFieldStrength = 2.89
    ds.SoftwareVersions = "syngo MR E11"
    ds.RepetitionTime = 700.0
    ds.EchoTime = 1.2
    ds.InversionTime = 300.0
    ds.FlipAngle = 20
    ds.ScanningSequence = "GR\\IR"
    # Nested identifiers: a request (X), a performed procedure step reference (X/Z/D),
    # a UID the table does not list (hashed by the safety net).
    request = Dataset()
    request.AccessionNumber = identity.values["AccessionNumber"]
    request.RequestedProcedureID = f"RPID{identity.key}0042"
    request.ScheduledProcedureStepID = f"SPS{identity.key}0042"
    ds.RequestAttributesSequence = Sequence([request])
    step = Dataset()
    step.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    step.ReferencedSOPInstanceUID = uid("mpps", identity.key)
    ds.ReferencedPerformedProcedureStepSequence = Sequence([step])
    code = Dataset()
    code.CodeValue = "LGE"
    code.CodingSchemeDesignator = "99LOCAL"
    code.CodeMeaning = "Late gadolinium enhancement"
    ds.ProcedureCodeSequence = Sequence([code])
    ds.CreatorVersionUID = uid("for", identity.key)  # not in Table E.1-1: safety net
    # Private tags and an overlay comment carrying the name.
    block = ds.private_block(0x0029, "ACME CARDIO 1.0", create=True)
    block.add_new(0x10, "LO", identity.values["PatientName"])
    block.add_new(0x11, "LO", identity.values["PatientID"])
    ds.add_new(0x60004000, "LT", f"reported for {identity.values['PatientName']}")
    # Geometry and pixels.
    ds.ImageOrientationPatient = list(geometry.image_orientation)
    ds.ImagePositionPatient = [round(v, 4) for v in geometry.slice_position(index)]
    ds.PixelSpacing = list(geometry.pixel_spacing)
    ds.SliceThickness = round(geometry.slice_spacing, 4)
    ds.SpacingBetweenSlices = round(geometry.slice_spacing, 4)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    for keyword, given in (header or {}).items():
        if given is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, given)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # one instance, one UID, however it was given
    return ds


def default_geometry(n_slices: int, seed: int = 0) -> StackGeometry:
    orientation = oblique_orientation(15.0 + seed)
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, column)
    spacing = 8.0
    return StackGeometry(
        image_orientation=orientation,  # type: ignore[arg-type]
        first_position=(-80.5 + seed, -95.25, 30.0),
        pixel_spacing=(1.5, 1.25),
        slice_step=tuple(float(round(v, 6)) * spacing for v in normal),  # type: ignore[arg-type]
    )


def write_series(
    folder: Path,
    identity: Identity,
    *,
    series_number: int = 1,
    n_slices: int = 5,
    rows: int = 12,
    columns: int = 10,
    slope: float = 2.0,
    intercept: float = -100.0,
    seed: int = 0,
    header: Mapping[str, object] | None = None,
    file_order: str = "reversed",
) -> WrittenSeries:
    """One file per slice under ``folder``; files named against the slice order on purpose."""
    geometry = default_geometry(n_slices, seed)
    rng = np.random.default_rng(seed + 1000 * series_number + sum(map(ord, identity.key)))
    stored = rng.integers(0, 3000, size=(n_slices, rows, columns)).astype(np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    written = WrittenSeries(identity, identity.series_uid(series_number), geometry, stored, slope, intercept)
    for index in range(n_slices):
        name_index = n_slices - index if file_order == "reversed" else index + 1
        path = folder / f"IM_{name_index:04d}.dcm"
        slice_dataset(
            identity, series_number, index, geometry, stored[index], slope=slope, intercept=intercept, header=header
        ).save_as(path, enforce_file_format=True)
        written.files.append(path)
    return written


def write_mask(path: Path, series: WrittenSeries, *, shift_mm: float = 0.0, seed: int = 0) -> np.ndarray:
    """A label mask on the series' grid (optionally shifted), as the labels contract says."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 5, size=series.shape).astype(np.uint8)
    affine = series.geometry.affine_ras().copy()
    affine[0, 3] += shift_mm
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(stack_to_nifti_array(mask), affine), path)
    return mask


def identifying_strings(identities: list[Identity], series_numbers: tuple[int, ...] = (1,)) -> list[str]:
    """Every identifying value written for these patients, names split into components."""
    strings = set()
    for identity in identities:
        for value in identity.values.values():
            strings.add(value)
            if "^" in value:
                strings.update(part for part in value.split("^") if len(part) >= 5)
        strings.update(identity.all_uids(series_numbers))
        strings.add(f"RPID{identity.key}0042")
        strings.add(f"SPS{identity.key}0042")
    return sorted(strings)


def _find_any(blob: bytes, needles: dict[bytes, str], key_length: int) -> set[str]:
    """Which needles occur in ``blob``: candidates by their first bytes (numpy), then verified."""
    data = np.frombuffer(blob, dtype=np.uint8)
    n = len(data) - key_length + 1
    if n <= 0:
        return {s for needle, s in needles.items() if needle in blob}
    windows = np.zeros(n, dtype=np.uint64)
    for offset in range(key_length):  # the key_length bytes starting at every position
        windows |= data[offset : offset + n].astype(np.uint64) << np.uint64(8 * offset)
    by_key: dict[int, list[bytes]] = {}
    for needle in needles:
        by_key.setdefault(int.from_bytes(needle[:key_length], "little"), []).append(needle)
    keys = np.sort(np.fromiter(by_key, dtype=np.uint64, count=len(by_key)))
    nearest = keys[np.minimum(np.searchsorted(keys, windows), len(keys) - 1)]
    found = set()
    for position in np.flatnonzero(nearest == windows):
        for needle in by_key[int(windows[position])]:
            if blob.startswith(needle, position):
                found.add(needles[needle])
    return found


def files_containing(root: Path, strings: list[str]) -> dict[str, list[str]]:
    """{relative file: [strings found]} over every byte of every file under ``root``.

    Each string is searched as UTF-8, UTF-16 and UTF-32 (how numpy stores str arrays).
    Zip containers (.npz) are also searched member by member after decompression, since
    a compressed byte stream would hide a string from a plain search.
    """
    import zipfile

    needles = {s.encode(e): s for s in strings for e in ("utf-8", "utf-16-le", "utf-32-le")}
    key_length = min(8, *(len(n) for n in needles)) if needles else 1
    hits: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = str(path.relative_to(root))
        blobs = [path.read_bytes(), relative.encode()]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                blobs.extend(archive.read(name) for name in archive.namelist())
                blobs.extend(name.encode() for name in archive.namelist())
        found = set().union(*(_find_any(blob, needles, key_length) for blob in blobs))
        if found:
            hits[relative] = sorted(found)
    return hits
