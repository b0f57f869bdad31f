"""Read a folder of DICOM files (any nesting) into checked MR stacks.

One pass reads every file's header (pixel data is deferred, not loaded), keeps the MR
images whose geometry can be read and whose pixel data a decoder can handle, and groups
them by SeriesInstanceUID. Each group is then checked as a stack: one orientation, one
pixel spacing, one matrix, no two images at one position, evenly spaced along the slice
normal, on one line. Pixel data is decoded later, one series at a time
(:meth:`DicomSeries.load_image`), so a site's archive never has to fit in memory.

Every file or series that cannot be used becomes a :class:`Rejection` naming it by its
path relative to the DICOM folder, with a reason a person can act on; nothing here
raises for a bad file. Single-frame images, one file per slice, are the usual case; a
single 2D image is a usable one-slice stack; multi-frame (enhanced or legacy converted)
MR is accepted when each frame's geometry is in its functional groups.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from cmr.geometry import StackGeometry

log = logging.getLogger(__name__)

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFER_SIZE = 2048  # bytes: bigger values (pixel data) are read only when decoded

ORIENTATION_TOLERANCE = 1e-3  # direction cosines
SPACING_TOLERANCE_MM = 1e-3  # pixel spacing
SAME_POSITION_MM = 0.01  # two images closer than this along the normal share a position
SLICE_GAP_TOLERANCE_MM = 0.05  # or 1 % of the spacing, whichever is larger
IN_LINE_TOLERANCE_MM = 0.1  # how far a slice origin may lie off the stack's line


@dataclass(frozen=True)
class Rejection:
    """Something the ingest could not use, and why.

    ``kind`` is ``file``, ``series``, ``mask``, ``labels`` or ``manifest``; ``path``
    is relative to the DICOM folder for files and series, and names the label file or
    manifest (relative to the folder that holds it) otherwise.
    """

    kind: str
    path: str
    reason: str


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
class DicomSeries:
    """A checked stack: slices ordered along the slice normal, with its geometry."""

    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    label: str  # how reports name it: series number and folder, never header identifiers
    folder: str  # common folder of its files, relative to the DICOM folder
    slices: tuple[SliceImage, ...]
    geometry: StackGeometry
    first_file: ImageFile  # the file holding slice 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.slices), self.slices[0].rows, self.slices[0].columns)

    @property
    def files(self) -> list[str]:
        return sorted({s.relative for s in self.slices})

    def load_image(self) -> np.ndarray:
        """Decode every slice; float32 ``[slice, row, column]`` with RescaleSlope/Intercept applied.

        Raises :class:`SeriesDecodeError` naming the first file that cannot be decoded.
        """
        image = np.empty(self.shape, dtype=np.float32)
        by_file: dict[Path, list[tuple[int, SliceImage]]] = defaultdict(list)
        for index, slice_image in enumerate(self.slices):
            by_file[slice_image.path].append((index, slice_image))
        for path, members in by_file.items():
            pixels = _decode(path, members[0][1].relative)
            for index, slice_image in members:
                frame = pixels if slice_image.frame is None or pixels.ndim == 2 else pixels[slice_image.frame]
                if frame.shape != (slice_image.rows, slice_image.columns):
                    raise SeriesDecodeError(
                        slice_image.where,
                        f"decoded image is {frame.shape}, header says {slice_image.rows}x{slice_image.columns}",
                    )
                image[index] = frame.astype(np.float32) * slice_image.rescale_slope + slice_image.rescale_intercept
        return image

    def header_of_first_slice(self) -> Dataset:
        """The first slice's header, read again without pixel data (raw: de-identify it).

        For a multi-frame file only the first slice's per-frame functional group is kept.
        """
        first = self.slices[0]
        dataset = pydicom.dcmread(first.path, stop_before_pixels=True, force=self.first_file.force)
        per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
        if per_frame is not None and first.frame is not None and len(per_frame) > first.frame:
            dataset.PerFrameFunctionalGroupsSequence = pydicom.Sequence([per_frame[first.frame]])
        return dataset


@dataclass
class SeriesScan:
    files_seen: int
    series_found: int  # distinct SeriesInstanceUIDs among the files that passed the file checks
    series: list[DicomSeries]
    rejections: list[Rejection]


# ---------------------------------------------------------------- walking and reading


def find_files(dicom_dir: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """Every regular file under ``dicom_dir`` (any nesting), sorted, minus ``exclude``."""
    excluded = [Path(p).resolve() for p in exclude]
    found = []
    for folder, subfolders, names in os.walk(dicom_dir):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            resolved = path.resolve()
            if any(resolved == e or e in resolved.parents for e in excluded):
                continue
            if path.is_file():
                found.append(path)
    return found


def _read_header(path: Path) -> tuple[Dataset, bool]:
    """Header with pixel data deferred; True when it had to be read without a preamble."""
    if path.stat().st_size == 0:
        raise UnusableFile("empty file (0 bytes)")
    try:
        dataset, force = pydicom.dcmread(path, defer_size=_DEFER_SIZE), False
    except InvalidDicomError:
        dataset, force = _read_without_preamble(path), True
    except PermissionError as error:
        raise UnusableFile(f"cannot be read: {error.strerror}") from None
    except Exception as error:  # noqa: BLE001 - any parse failure makes the file unusable
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
    except Exception:  # noqa: BLE001
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
    except Exception:  # noqa: BLE001 - pydicom raises ValueError for unknown UIDs
        return f"transfer syntax {name} is not one pydicom knows; export the series uncompressed"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        return f"transfer syntax {name} cannot be decoded: install one of: {missing}"
    return None


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[union-attr]
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
    if (
        abs(np.linalg.norm(row) - 1) > 0.01
        or abs(np.linalg.norm(column) - 1) > 0.01
        or abs(float(row @ column)) > 0.01
    ):
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
        raise UnusableFile(
            f"no patient geometry ({', '.join(missing)} missing): the image cannot be placed in space"
        )
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
    item = dataset.get_item("PixelData")
    if hasattr(item, "value_tell") and item.length != 0xFFFFFFFF:  # deferred: not read yet
        length, beyond_end = item.length, item.value_tell + item.length - path.stat().st_size
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
            "BurnedInAnnotation is YES: the pixels may show identifying text, which cannot be "
            "removed automatically"
        )
    try:
        n_frames = int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise UnusableFile(f"NumberOfFrames {dataset.get('NumberOfFrames')!r} is not a number") from None
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


def _decode(path: Path, relative: str) -> np.ndarray:
    dataset = None
    try:
        dataset = _read_header(path)[0]
        return dataset.pixel_array
    except Exception as error:  # noqa: BLE001 - every decoder failure is a reason, not a crash
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        what = f" ({UID(syntax).name})" if syntax else ""
        raise SeriesDecodeError(relative, f"pixel data cannot be decoded{what}: {error}") from None


# ---------------------------------------------------------------- series checks


def _cluster(values: list[tuple[float, ...]], tolerance: float) -> list[int]:
    """Group nearly equal vectors; returns each value's group index."""
    representatives: list[np.ndarray] = []
    groups = []
    for value in values:
        vector = np.asarray(value)
        for index, representative in enumerate(representatives):
            if np.allclose(vector, representative, atol=tolerance):
                groups.append(index)
                break
        else:
            representatives.append(vector)
            groups.append(len(representatives) - 1)
    return groups


def _folder_of(relatives: Iterable[str]) -> str:
    parents = [str(Path(r).parent) for r in relatives]
    try:
        common = os.path.commonpath(parents)
    except ValueError:
        common = ""
    return common if common not in ("", ".") else "."


def _describe(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class _SeriesRejected(Exception):
    pass


def _keep_majority(
    images: list[SliceImage],
    key: Callable[[SliceImage], tuple[float, ...]],
    tolerance: float,
    what: str,
    label: str,
    rejections: list[Rejection],
) -> list[SliceImage]:
    groups = _cluster([key(image) for image in images], tolerance)
    counts = Counter(groups)
    if len(counts) == 1:
        return images
    majority, size = counts.most_common(1)[0]
    if size * 2 <= len(images):
        raise _SeriesRejected(
            f"its images have {len(counts)} different {what}s and none is shared by most of them "
            "(a localiser, or several stacks in one series?)"
        )
    reference = key(images[groups.index(majority)])
    kept = []
    for image, group in zip(images, groups, strict=True):
        if group == majority:
            kept.append(image)
        else:
            shown = ", ".join(f"{v:g}" for v in key(image))
            expected = ", ".join(f"{v:g}" for v in reference)
            rejections.append(
                Rejection(
                    "file",
                    image.relative,
                    f"{'' if image.frame is None else f'frame {image.frame + 1}: '}{what} ({shown}) "
                    f"differs from the rest of {label} ({expected}); image left out",
                )
            )
    return kept


def build_series(files: list[ImageFile]) -> tuple[DicomSeries | None, list[Rejection]]:
    """Check one SeriesInstanceUID's files as a stack and order its slices."""
    files = sorted(files, key=lambda f: f.relative)
    folder = _folder_of(f.relative for f in files)
    number = files[0].series_number
    label = f"series {number} in {folder}" if number else f"the series in {folder}"
    rejections: list[Rejection] = []

    def series_rejection(reason: str) -> tuple[None, list[Rejection]]:
        n = len({f.relative for f in files})
        rejections.append(Rejection("series", folder, f"{label} ({_describe(n, 'file')}): {reason}"))
        return None, rejections

    identities = {(f.patient_id, f.study_instance_uid) for f in files}
    if len(identities) > 1:
        return series_rejection(
            f"its files belong to {len(identities)} different patients or studies "
            "(the same SeriesInstanceUID was reused)"
        )
    if len({f.frame_of_reference_uid for f in files}) > 1:
        return series_rejection("its images have different frames of reference, so their positions cannot be compared")

    unique_files: dict[str, ImageFile] = {}
    for image_file in files:
        sop_instance_uid = str(image_file.header.get("SOPInstanceUID") or image_file.relative)
        if sop_instance_uid in unique_files:
            original = unique_files[sop_instance_uid].relative
            rejections.append(
                Rejection("file", image_file.relative, f"a copy of {original} (same SOPInstanceUID); copy left out")
            )
        else:
            unique_files[sop_instance_uid] = image_file
    images = [image for image_file in unique_files.values() for image in image_file.images]

    try:
        images = _keep_majority(images, lambda i: i.orientation, ORIENTATION_TOLERANCE, "slice orientation", label, rejections)
        images = _keep_majority(images, lambda i: i.pixel_spacing, SPACING_TOLERANCE_MM, "pixel spacing", label, rejections)
        images = _keep_majority(images, lambda i: (float(i.rows), float(i.columns)), 0.5, "matrix size", label, rejections)
    except _SeriesRejected as rejected:
        return series_rejection(str(rejected))

    orientation = images[0].orientation
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    normal /= np.linalg.norm(normal)
    images.sort(key=lambda i: float(np.asarray(i.position) @ normal))
    heights = np.array([float(np.asarray(i.position) @ normal) for i in images])
    positions = np.array([i.position for i in images])
    gaps = np.diff(heights)
    if len(gaps) and gaps.min() < SAME_POSITION_MM:
        n_positions = 1 + int((gaps >= SAME_POSITION_MM).sum())
        return series_rejection(
            f"{len(images)} images share {n_positions} slice positions: several phases, echoes or "
            "repeats in one series (only single-phase stacks are ingested)"
        )
    if len(images) == 1:
        step = normal * (images[0].slice_gap_hint_mm or 1.0)
    else:
        median_gap = float(np.median(gaps))
        tolerance = max(SLICE_GAP_TOLERANCE_MM, 0.01 * median_gap)
        if np.abs(gaps - median_gap).max() > tolerance:
            return series_rejection(
                f"slice spacing is irregular ({gaps.min():.2f} to {gaps.max():.2f} mm): a slice is "
                "missing or the series mixes stacks"
            )
        step = (positions[-1] - positions[0]) / (len(images) - 1)
        off_line = np.linalg.norm(positions - (positions[0] + np.outer(np.arange(len(images)), step)), axis=1)
        if off_line.max() > IN_LINE_TOLERANCE_MM:
            return series_rejection(
                f"slice origins do not lie on one line (up to {off_line.max():.2f} mm off): the "
                "series mixes stacks"
            )
    geometry = StackGeometry(
        image_orientation=tuple(float(v) for v in orientation),  # type: ignore[arg-type]
        first_position=tuple(float(v) for v in images[0].position),  # type: ignore[arg-type]
        pixel_spacing=tuple(float(v) for v in images[0].pixel_spacing),  # type: ignore[arg-type]
        slice_step=tuple(float(v) for v in step),  # type: ignore[arg-type]
    )
    first_file = next(f for f in files if f.path == images[0].path)
    series = DicomSeries(
        series_instance_uid=first_file.series_instance_uid,
        study_instance_uid=first_file.study_instance_uid,
        patient_id=first_file.patient_id,
        label=label,
        folder=folder,
        slices=tuple(images),
        geometry=geometry,
        first_file=first_file,
    )
    return series, rejections


def scan_dicom_folder(
    dicom_dir: Path,
    exclude: Iterable[Path] = (),
    on_file_read: Callable[[int, int], None] | None = None,
) -> SeriesScan:
    """Find, read and group every file under ``dicom_dir``; check each series as a stack.

    ``on_file_read(done, total)`` is called after each header is read.
    """
    dicom_dir = Path(dicom_dir)
    paths = find_files(dicom_dir, exclude)
    rejections: list[Rejection] = []
    by_series: dict[str, list[ImageFile]] = defaultdict(list)
    for done, path in enumerate(paths, start=1):
        relative = path.relative_to(dicom_dir).as_posix()
        try:
            image_file = read_image_file(path, relative)
        except UnusableFile as unusable:
            rejections.append(Rejection("file", relative, str(unusable)))
        except Exception as error:  # noqa: BLE001 - one bad file never stops the rest
            log.exception("unexpected failure reading %s", path)
            rejections.append(Rejection("file", relative, f"cannot be read ({type(error).__name__}: {error})"))
        else:
            by_series[image_file.series_instance_uid].append(image_file)
        if on_file_read is not None:
            on_file_read(done, len(paths))
    series = []
    for files in by_series.values():
        built, series_rejections = build_series(files)
        rejections.extend(series_rejections)
        if built is not None:
            series.append(built)
    series.sort(key=lambda s: (s.folder, s.first_file.relative))
    return SeriesScan(files_seen=len(paths), series_found=len(by_series), series=series, rejections=rejections)
