"""Read a folder of DICOM files (any nesting) and group the MR images into series.

One pass reads every file's header (pixel data is deferred, not loaded), keeps the MR
images whose geometry can be read and whose pixel data a decoder can handle, and groups
them by SeriesInstanceUID (:func:`read_dicom_folder`). What a group *is* (an LGE stack,
a MOLLI series …) is for the series readers to say (``cmr.series_readers``); pixel data
is decoded later, one series at a time (:func:`decode_pixels`), so a site's archive
never has to fit in memory.

Every file that cannot be used becomes a :class:`~cmr.ingest_report.Rejection` naming
it by its path relative to the DICOM folder, with a reason a person can act on; nothing
here raises for a bad file. Single-frame images, one file per slice, are the usual case;
multi-frame (enhanced or legacy converted) MR is accepted when each frame's geometry is
in its functional groups.

Hostile or careless input:

* **Bombs.** Rows, columns, frames and the decoded size of each file, and of each
  series, are checked from the headers against the limits of ``cmr.dicom_limits``
  before anything is decoded, and a deflated file is inflated only as far as its header
  accounts for.
* **Links.** A link to a file or folder outside the DICOM folder is reported, not
  followed, unless the caller asks (``follow_links``): a folder handed over for ingest
  should not reach into the rest of the machine.
* **Duplicates.** Two files with one SOPInstanceUID: identical pixels, one is kept and
  the other reported as a copy; different pixels, both are left out, since which one
  is genuine cannot be told.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from cmr.dicom_limits import MAX_SERIES_BYTES, decoded_bytes, deflated_problem, matrix_problem
from cmr.ingest_report import Rejection

log = logging.getLogger(__name__)

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFER_SIZE = 2048  # bytes: bigger values (pixel data) are read only when decoded


class UnusableFile(Exception):
    """A file that cannot take part in any series; the message is the reason."""


@dataclass(frozen=True)
class SliceImage:
    """One 2D image: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    relative: str
    frame: int | None  # index in a multi-frame file; None for a single-frame file
    sop_instance_uid: str
    position: tuple[float, float, float]  # ImagePositionPatient (LPS mm)
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]  # between rows, between columns (mm)
    rows: int
    columns: int
    rescale_slope: float
    rescale_intercept: float
    slice_gap_hint_mm: float | None  # SpacingBetweenSlices, else SliceThickness

    @property
    def where(self) -> str:
        return self.relative if self.frame is None else f"{self.relative} (frame {self.frame + 1})"


@dataclass(frozen=True)
class ImageFile:
    """A readable MR image file and what its header says."""

    path: Path
    relative: str
    header: Dataset  # raw header, identifying values included; pixel data deferred
    force: bool  # read without the DICM preamble
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    frame_of_reference_uid: str
    series_number: str
    images: tuple[SliceImage, ...]


class SeriesDecodeError(Exception):
    def __init__(self, relative: str, reason: str) -> None:
        super().__init__(f"{relative}: {reason}")
        self.relative = relative
        self.reason = reason


@dataclass(frozen=True)
class SeriesFiles:
    """The readable image files of one SeriesInstanceUID, before any reader has looked at them."""

    series_instance_uid: str
    files: tuple[ImageFile, ...]  # sorted by relative path
    folder: str  # common folder of its files, relative to the DICOM folder ("." for the top)

    @property
    def patient_id(self) -> str:
        return self.files[0].patient_id

    @property
    def study_instance_uid(self) -> str:
        return self.files[0].study_instance_uid

    @property
    def label(self) -> str:
        """How reports name the series: its number and folder, never a header identifier."""
        number = self.files[0].series_number
        return f"series {number} in {self.folder}" if number else f"the series in {self.folder}"

    @property
    def n_files(self) -> int:
        return len({f.relative for f in self.files})

    @property
    def n_images(self) -> int:
        return sum(len(f.images) for f in self.files)


@dataclass
class FolderScan:
    files_seen: int  # links not followed included
    series: list[SeriesFiles]  # in the order their first file was read
    rejections: list[Rejection]  # unusable files, links not followed, series beyond the size limit

    @property
    def series_found(self) -> int:
        return len(self.series) + sum(r.kind == "series" for r in self.rejections)


# ---------------------------------------------------------------- walking and reading


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def walk_dicom_folder(
    dicom_dir: Path, exclude: Iterable[Path] = (), follow_links: bool = False
) -> tuple[list[Path], list[Rejection]]:
    """Every regular file under ``dicom_dir`` (any nesting), sorted, minus ``exclude``; and the links not followed.

    Links to files or folders inside ``dicom_dir`` are read where they lead (a folder
    reached twice is walked once). Links out of it are reported and skipped, unless
    ``follow_links``; a link to nothing is reported either way.
    """
    root = Path(dicom_dir).resolve()
    excluded = [Path(p).resolve() for p in exclude]
    found: list[Path] = []
    refused: list[Rejection] = []
    walked: set[Path] = set()

    def refuse(path: Path, what: str) -> None:
        reason = f"a link to {what} outside the DICOM folder: not followed (ingest with --follow-links to read it)"
        refused.append(Rejection("file", path.relative_to(dicom_dir).as_posix(), reason))

    for folder, subfolders, names in os.walk(dicom_dir, followlinks=follow_links):
        real = Path(folder).resolve()
        if real in walked:  # a link loop, or a folder reached through a link and directly
            subfolders.clear()
            continue
        walked.add(real)
        entered = []
        for name in sorted(subfolders):
            path = Path(folder) / name
            if path.is_symlink() and not follow_links:
                if not _inside(path.resolve(), root):
                    refuse(path, "a folder")
                continue  # one inside is walked where it is
            entered.append(name)
        subfolders[:] = entered
        for name in sorted(names):
            path = Path(folder) / name
            resolved = path.resolve()
            if any(_inside(resolved, e) for e in excluded):
                continue
            if path.is_symlink() and not path.exists():
                reason = "a link to nothing (its target does not exist)"
                refused.append(Rejection("file", path.relative_to(dicom_dir).as_posix(), reason))
            elif path.is_symlink() and not follow_links and not _inside(resolved, root):
                refuse(path, "a file")
            elif path.is_file():
                found.append(path)
    return found, refused


def find_files(dicom_dir: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """Every regular file under a folder a person points at (``cmrfl map``), links followed."""
    return walk_dicom_folder(dicom_dir, exclude, follow_links=True)[0]


def _read_header(path: Path) -> tuple[Dataset, bool]:
    """Header with pixel data deferred; True when it had to be read without a preamble."""
    if path.stat().st_size == 0:
        raise UnusableFile("empty file (0 bytes)")
    if (bomb := deflated_problem(path)) is not None:
        raise UnusableFile(bomb)
    dataset: Dataset
    try:
        dataset, force = pydicom.dcmread(path, defer_size=_DEFER_SIZE), False
    except InvalidDicomError:
        dataset, force = _read_without_preamble(path), True
    except PermissionError as error:
        raise UnusableFile(f"cannot be read: {error.strerror}") from None
    except Exception as error:
        raise UnusableFile(f"DICOM header cannot be read ({type(error).__name__}: {error})") from None
    if "TransferSyntaxUID" not in (getattr(dataset, "file_meta", None) or {}):
        # ACR-NEMA style files and some exports lack it; the encoding the header was
        # read with is the one the pixel data uses.
        implicit, little = dataset.original_encoding
        if getattr(dataset, "file_meta", None) is None:
            dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return dataset, force


def _read_without_preamble(path: Path) -> Dataset:
    not_dicom = UnusableFile("not a DICOM file (no DICM preamble and no readable header)")
    try:
        dataset = pydicom.dcmread(path, defer_size=_DEFER_SIZE, force=True)
    except Exception:
        raise not_dicom from None
    # Forced reading of a random file yields an element or two of garbage; a real
    # preamble-less (ACR-NEMA style) DICOM file names its class, modality or series.
    if not any(k in dataset for k in ("SOPClassUID", "Modality", "SeriesInstanceUID")):
        raise not_dicom
    return dataset


def _transfer_syntax_problem(transfer_syntax: UID) -> str | None:
    name = f"{transfer_syntax.name} ({transfer_syntax})" if transfer_syntax.is_transfer_syntax else str(transfer_syntax)
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        return (
            f"transfer syntax {name} cannot be decoded: no decoder exists for it; "
            "export the series uncompressed or with JPEG, JPEG-LS, JPEG 2000 or RLE compression"
        )
    except Exception:
        return f"transfer syntax {name} is not one pydicom knows; export the series uncompressed"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        return f"transfer syntax {name} cannot be decoded: install one of: {missing}"
    return None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(np.isfinite(numbers)) else None


def _optional_float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _check_orientation(orientation: tuple[float, ...], where: str) -> None:
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(column) - 1) > 0.01 or abs(float(row @ column)) > 0.01:
        raise UnusableFile(f"ImageOrientationPatient{where} is not two orthogonal unit vectors")


def _functional_group(dataset: Dataset, frame: int, sequence: str) -> Dataset | None:
    """A frame's item of a functional group macro: its per-frame item, else the shared one."""
    for groups_keyword, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = dataset.get(groups_keyword)
        if groups is not None and len(groups) > index and sequence in groups[index]:
            items = groups[index][sequence].value
            if len(items):
                return items[0]
    return None


def _single_frame_images(dataset: Dataset, path: Path, relative: str) -> tuple[SliceImage, ...]:
    missing = [k for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing") if k not in dataset]
    if missing:
        raise UnusableFile(f"no patient geometry ({', '.join(missing)} missing): the image cannot be placed in space")
    orientation = _floats(dataset.ImageOrientationPatient, 6)
    position = _floats(dataset.ImagePositionPatient, 3)
    spacing = _floats(dataset.PixelSpacing, 2)
    if orientation is None or position is None or spacing is None or min(spacing) <= 0:
        raise UnusableFile("ImageOrientationPatient, ImagePositionPatient or PixelSpacing is malformed")
    _check_orientation(orientation, "")
    return (
        SliceImage(
            path=path,
            relative=relative,
            frame=None,
            sop_instance_uid=str(dataset.get("SOPInstanceUID", relative)),
            position=position,  # type: ignore[arg-type]
            orientation=orientation,  # type: ignore[arg-type]
            pixel_spacing=spacing,  # type: ignore[arg-type]
            rows=int(dataset.Rows),
            columns=int(dataset.Columns),
            rescale_slope=_optional_float(dataset.get("RescaleSlope")) or 1.0,
            rescale_intercept=float(dataset.get("RescaleIntercept") or 0.0),
            slice_gap_hint_mm=_optional_float(dataset.get("SpacingBetweenSlices"))
            or _optional_float(dataset.get("SliceThickness")),
        ),
    )


def _multi_frame_images(dataset: Dataset, path: Path, relative: str, n_frames: int) -> tuple[SliceImage, ...]:
    if "PerFrameFunctionalGroupsSequence" not in dataset and "SharedFunctionalGroupsSequence" not in dataset:
        raise UnusableFile(
            f"multi-frame image ({n_frames} frames) without functional groups: the frames' "
            "positions are unknown (only enhanced or legacy converted enhanced MR can be read)"
        )
    images = []
    sop_instance_uid = str(dataset.get("SOPInstanceUID", relative))
    for frame in range(n_frames):
        plane_position = _functional_group(dataset, frame, "PlanePositionSequence")
        plane_orientation = _functional_group(dataset, frame, "PlaneOrientationSequence")
        measures = _functional_group(dataset, frame, "PixelMeasuresSequence")
        transformation = _functional_group(dataset, frame, "PixelValueTransformationSequence")
        missing = [
            name
            for name, item, keyword in (
                ("PlanePositionSequence", plane_position, "ImagePositionPatient"),
                ("PlaneOrientationSequence", plane_orientation, "ImageOrientationPatient"),
                ("PixelMeasuresSequence", measures, "PixelSpacing"),
            )
            if item is None or keyword not in item
        ]
        if missing:
            raise UnusableFile(
                f"multi-frame image: frame {frame + 1} has no geometry in its functional groups "
                f"({', '.join(missing)} missing)"
            )
        orientation = _floats(plane_orientation.ImageOrientationPatient, 6)  # type: ignore[union-attr]
        position = _floats(plane_position.ImagePositionPatient, 3)  # type: ignore[union-attr]
        spacing = _floats(measures.PixelSpacing, 2)  # type: ignore[union-attr]
        if orientation is None or position is None or spacing is None or min(spacing) <= 0:
            raise UnusableFile(f"multi-frame image: frame {frame + 1} has malformed geometry")
        _check_orientation(orientation, f" of frame {frame + 1}")
        slope = intercept = None
        if transformation is not None:
            slope = _optional_float(transformation.get("RescaleSlope"))
            intercept = transformation.get("RescaleIntercept")
        images.append(
            SliceImage(
                path=path,
                relative=relative,
                frame=frame,
                sop_instance_uid=f"{sop_instance_uid}#{frame}",
                position=position,  # type: ignore[arg-type]
                orientation=orientation,  # type: ignore[arg-type]
                pixel_spacing=spacing,  # type: ignore[arg-type]
                rows=int(dataset.Rows),
                columns=int(dataset.Columns),
                rescale_slope=slope or _optional_float(dataset.get("RescaleSlope")) or 1.0,
                rescale_intercept=float(
                    intercept if intercept not in (None, "") else dataset.get("RescaleIntercept") or 0.0
                ),
                slice_gap_hint_mm=_optional_float(measures.get("SpacingBetweenSlices"))  # type: ignore[union-attr]
                or _optional_float(measures.get("SliceThickness")),  # type: ignore[union-attr]
            )
        )
    return tuple(images)


def _pixel_data_truncated(dataset: Dataset, path: Path, n_frames: int) -> str | None:
    """Why native (uncompressed) pixel data is too short, or None when it is complete."""
    if UID(dataset.file_meta.TransferSyntaxUID).is_compressed:
        return None  # encapsulated data has no fixed size; the decoder checks it
    item: Any = dataset.get_item("PixelData")  # a RawDataElement while deferred
    if hasattr(item, "value_tell") and item.length != 0xFFFFFFFF:  # deferred: not read yet
        length, beyond_end = item.length, item.value_tell + item.length - path.stat().st_size
        if dataset.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian:
            beyond_end = 0  # a position in the inflated data; deflated_problem checked its end
    else:
        length, beyond_end = len(dataset.PixelData or b""), 0
    if beyond_end > 0:
        return f"file is truncated: pixel data ends {beyond_end} bytes past the end of the file (incomplete copy?)"
    bits = int(dataset.get("BitsAllocated") or 16)
    pixels = int(dataset.Rows) * int(dataset.Columns) * n_frames * int(dataset.get("SamplesPerPixel") or 1)
    expected = (pixels + 7) // 8 if bits == 1 else pixels * ((bits + 7) // 8)
    if length < expected:
        return (
            f"pixel data truncated: {length} bytes where Rows x Columns x frames x BitsAllocated need "
            f"{expected} (incomplete copy?)"
        )
    return None


def read_image_file(path: Path, relative: str) -> ImageFile:
    """Read and check one file's header; raises :class:`UnusableFile` with the reason."""
    dataset, force = _read_header(path)
    sop_class = dataset.get("SOPClassUID")
    if sop_class == MediaStorageDirectoryStorage:
        raise UnusableFile("DICOMDIR: an index of other files, holds no image")
    modality = str(dataset.get("Modality") or "").strip()
    if modality != "MR":
        what = f"modality {modality}" if modality else "no modality"
        raise UnusableFile(f"{what}: only MR series are ingested")
    if not any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS):
        kind = f" ({UID(sop_class).name})" if sop_class else ""
        raise UnusableFile(f"pixel data missing: not an image{kind}")
    if not dataset.get("SeriesInstanceUID"):
        raise UnusableFile("SeriesInstanceUID missing: the image cannot be assigned to a series")
    if not dataset.get("Rows") or not dataset.get("Columns"):
        raise UnusableFile("Rows or Columns missing or zero")
    samples = int(dataset.get("SamplesPerPixel") or 1)
    if samples != 1:
        raise UnusableFile(
            f"colour image (SamplesPerPixel {samples}, PhotometricInterpretation "
            f"{dataset.get('PhotometricInterpretation')}): only greyscale MR is ingested"
        )
    if str(dataset.get("BurnedInAnnotation") or "").upper() == "YES":
        raise UnusableFile(
            "BurnedInAnnotation is YES: the pixels may show identifying text, which cannot be removed automatically"
        )
    if (beyond := matrix_problem(dataset)) is not None:
        raise UnusableFile(beyond)
    n_frames = int(dataset.get("NumberOfFrames") or 1)  # a number: matrix_problem checked it
    problem = _transfer_syntax_problem(UID(dataset.file_meta.TransferSyntaxUID))
    if problem is None and "PixelData" in dataset:
        problem = _pixel_data_truncated(dataset, path, n_frames)
    if problem is not None:
        raise UnusableFile(problem)
    is_enhanced = "PerFrameFunctionalGroupsSequence" in dataset or "SharedFunctionalGroupsSequence" in dataset
    if n_frames > 1 or is_enhanced:
        images = _multi_frame_images(dataset, path, relative, n_frames)
    else:
        images = _single_frame_images(dataset, path, relative)
    return ImageFile(
        path=path,
        relative=relative,
        header=dataset,
        force=force,
        series_instance_uid=str(dataset.SeriesInstanceUID).strip(),
        study_instance_uid=str(dataset.get("StudyInstanceUID") or "").strip(),
        patient_id=str(dataset.get("PatientID") or "").strip(),
        frame_of_reference_uid=str(dataset.get("FrameOfReferenceUID") or "").strip(),
        series_number=str(dataset.get("SeriesNumber") or "").strip(),
        images=images,
    )


def decode_pixels(path: Path, relative: str) -> np.ndarray:
    """The file's pixel array as stored (no rescale); SeriesDecodeError names the file and why."""
    dataset = None
    try:
        dataset = _read_header(path)[0]
        return dataset.pixel_array
    except Exception as error:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        what = f" ({UID(syntax).name})" if syntax else ""
        raise SeriesDecodeError(relative, f"pixel data cannot be decoded{what}: {error}") from None


def folder_of(relatives: Iterable[str]) -> str:
    parents = [str(Path(r).parent) for r in relatives]
    try:
        common = os.path.commonpath(parents)
    except ValueError:
        common = ""
    return common if common not in ("", ".") else "."


def _pixel_fingerprint(image_file: ImageFile) -> str | None:
    """SHA-256 of a file's decoded pixels, or None when they cannot be decoded."""
    try:
        pixels = decode_pixels(image_file.path, image_file.relative)
    except SeriesDecodeError:
        return None
    return hashlib.sha256(f"{pixels.dtype.str}{pixels.shape}".encode() + pixels.tobytes()).hexdigest()


def _without_duplicates(files: list[ImageFile]) -> tuple[list[ImageFile], list[Rejection]]:
    """One file per SOPInstanceUID: a copy (same pixels) is reported; files that disagree are all left out.

    A file whose SOPInstanceUID is that of a genuine slice but whose pixels differ may be
    a forgery or a botched export; which one is genuine cannot be told, so neither is used.
    """
    by_uid: dict[str, list[ImageFile]] = defaultdict(list)
    for image_file in files:
        by_uid[str(image_file.header.get("SOPInstanceUID") or image_file.relative)].append(image_file)
    rejections: list[Rejection] = []
    refused: set[str] = set()
    for group in (g for g in by_uid.values() if len(g) > 1):
        fingerprints = [_pixel_fingerprint(f) for f in group]
        if None not in fingerprints and len(set(fingerprints)) == 1:
            first = group[0].relative
            for copy in group[1:]:
                reason = f"a copy of {first} (same SOPInstanceUID and pixels); copy left out"
                rejections.append(Rejection("file", copy.relative, reason))
                refused.add(copy.relative)
            continue
        for image_file in group:
            others = ", ".join(f.relative for f in group if f is not image_file)
            reason = (
                f"shares its SOPInstanceUID with {others} but holds different pixels (or pixels that cannot "
                "be decoded): which one is genuine cannot be told, so none is used"
            )
            rejections.append(Rejection("file", image_file.relative, reason))
            refused.add(image_file.relative)
    return [f for f in files if f.relative not in refused], rejections


def _series_too_large(series: SeriesFiles) -> Rejection | None:
    decoded = sum(decoded_bytes(image.rows, image.columns, 1) for f in series.files for image in f.images)
    if decoded <= MAX_SERIES_BYTES:
        return None
    return Rejection(
        "series",
        series.folder,
        f"{series.label}: {series.n_images} images would decode to {decoded / (1 << 30):.1f} GiB, beyond the "
        f"limit of {MAX_SERIES_BYTES >> 20} MiB a series; not ingested",
    )


def read_dicom_folder(
    dicom_dir: Path,
    exclude: Iterable[Path] = (),
    on_file_read: Callable[[int, int], None] | None = None,
    follow_links: bool = False,
) -> FolderScan:
    """Find and read every file under ``dicom_dir``; group the usable ones by SeriesInstanceUID.

    ``on_file_read(done, total)`` is called after each header is read. Links out of
    ``dicom_dir`` are reported, not read, unless ``follow_links``.
    """
    dicom_dir = Path(dicom_dir)
    paths, links = walk_dicom_folder(dicom_dir, exclude, follow_links)
    rejections = list(links)  # seen, and reported, but not read
    readable: list[ImageFile] = []
    for done, path in enumerate(paths, start=1):
        relative = path.relative_to(dicom_dir).as_posix()
        try:
            readable.append(read_image_file(path, relative))
        except UnusableFile as unusable:
            rejections.append(Rejection("file", relative, str(unusable)))
        except Exception as error:
            log.exception("unexpected failure reading %s", path)
            rejections.append(Rejection("file", relative, f"cannot be read ({type(error).__name__}: {error})"))
        if on_file_read is not None:
            on_file_read(done, len(paths))
    unique, duplicates = _without_duplicates(readable)
    rejections.extend(duplicates)
    by_series: dict[str, list[ImageFile]] = defaultdict(list)
    for image_file in unique:
        by_series[image_file.series_instance_uid].append(image_file)
    series = []
    for uid, files in by_series.items():
        ordered = tuple(sorted(files, key=lambda f: f.relative))
        checked = SeriesFiles(uid, ordered, folder_of(f.relative for f in ordered))
        if (too_large := _series_too_large(checked)) is not None:
            rejections.append(too_large)
        else:
            series.append(checked)
    return FolderScan(files_seen=len(paths) + len(links), series=series, rejections=rejections)
