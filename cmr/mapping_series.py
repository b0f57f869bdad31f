"""Read the source images of a T1 (MOLLI) or T2 (T2-prep) map.

Every file must be one frame of one series at one slice position. Frames are
sorted by their time: ``InversionTime`` for T1; for T2 the prep duration from
``ImageComments`` (``T2prep 25 ms``) or else ``EchoTime``. Anything that would make
a map wrong is refused with ``MappingSeriesError`` naming the file and the problem:
a file that is not DICOM, a missing, non-numeric or duplicated time, frames of
different series, size, orientation, position or spacing, or too few frames.

Two steps, so that the site ingest can check every series from the headers it has
already read and decode one series at a time: :func:`check_mapping_frames` (headers
only) and :meth:`MappingFrames.decode`. :func:`read_mapping_series` does both for a
folder a person points at (``cmrfl map``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from cmr.dicom_files import find_files
from cmr.geometry import StackGeometry

MIN_FRAMES = {"t1": 4, "t2": 2}  # a three-parameter fit needs 4; a mono-exponential 2
_T2PREP_COMMENT = re.compile(r"T2\s*-?\s*prep(?:aration)?(?:\s*duration)?\s*[=:]?\s*(-?\d+(?:\.\d+)?)\s*(?:ms)?", re.I)
_T2PREP_NAME = re.compile(r"T2\s*-?\s*prep", re.I)
_GEOMETRY_TOLERANCE = 1e-3


class MappingSeriesError(Exception):
    """The files cannot be read as one mapping series; the message says which file and why."""


@dataclass(frozen=True)
class MappingSeries:
    frames: np.ndarray  # float32 (frames, rows, cols), rescaled values, sorted by time
    times_ms: np.ndarray  # inversion times (t1) or T2-prep durations (t2), ascending
    kind: str  # "t1" or "t2"
    geometry: StackGeometry  # of the one slice (slice_step: normal × slice thickness)
    files: tuple[Path, ...]  # in the order of ``frames``
    series_instance_uid: str
    heart_rate_bpm: float | None

    def affine_ras(self) -> np.ndarray:
        """NIfTI affine of a ``[column, row, 1]`` map of this slice."""
        return self.geometry.affine_ras()


@dataclass(frozen=True)
class MappingFrames:
    """A mapping series checked from its headers; pixel data not yet decoded."""

    times_ms: np.ndarray  # ascending
    kind: str  # "t1" or "t2"
    geometry: StackGeometry
    files: tuple[Path, ...]  # in time order
    rescale: tuple[tuple[float, float], ...]  # (slope, intercept) of each file, in time order
    series_instance_uid: str
    heart_rate_bpm: float | None

    def decode(self, pixels_of: Callable[[Path], np.ndarray]) -> MappingSeries:
        """The frames, rescaled, from ``pixels_of(path)`` (a file's stored pixel array)."""
        frames = [
            pixels_of(path).astype(np.float32) * slope + intercept
            for path, (slope, intercept) in zip(self.files, self.rescale)
        ]
        return MappingSeries(
            frames=np.stack(frames),
            times_ms=self.times_ms,
            kind=self.kind,
            geometry=self.geometry,
            files=self.files,
            series_instance_uid=self.series_instance_uid,
            heart_rate_bpm=self.heart_rate_bpm,
        )


def is_t2prep_header(dataset: pydicom.Dataset) -> bool:
    """Whether a frame says it is T2-prepared: a ``T2prep <ms>`` comment, or T2-prep in its names."""
    if _T2PREP_COMMENT.search(str(dataset.get("ImageComments", "") or "")):
        return True
    names = " ".join(str(dataset.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName", "SequenceName"))
    return bool(_T2PREP_NAME.search(names))


def finite_number(value: object) -> float | None:
    """A header value as a finite float; None when it is missing, not a number, or not finite."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _frame_time(dataset: pydicom.Dataset, kind: str, where: str) -> float:
    if kind == "t1":
        if "InversionTime" not in dataset or dataset.InversionTime in (None, ""):
            raise MappingSeriesError(f"{where}: no InversionTime (0018,0082); a MOLLI frame needs its inversion time")
        value = finite_number(dataset.InversionTime)
        if value is None or value <= 0:
            raise MappingSeriesError(f"{where}: InversionTime {dataset.InversionTime!r} is not a positive number")
        return value
    comment = str(dataset.get("ImageComments", "") or "")
    match = _T2PREP_COMMENT.search(comment)
    if match:
        value = finite_number(match.group(1))
        source = f"ImageComments {comment!r}"
    elif "EchoTime" in dataset and dataset.EchoTime not in (None, ""):
        value = finite_number(dataset.EchoTime)
        source = f"EchoTime {dataset.EchoTime!r}"
    else:
        raise MappingSeriesError(
            f"{where}: no T2-prep duration (neither 'T2prep <ms> ms' in ImageComments nor EchoTime)"
        )
    if value is None or value < 0:
        raise MappingSeriesError(f"{where}: T2-prep duration from {source} is not a number ≥ 0")
    return value


def _geometry_key(dataset: pydicom.Dataset, where: str) -> tuple:
    try:
        orientation = tuple(float(v) for v in dataset.ImageOrientationPatient)
        position = tuple(float(v) for v in dataset.ImagePositionPatient)
        spacing = tuple(float(v) for v in dataset.PixelSpacing)
        size = (int(dataset.Rows), int(dataset.Columns))
    except (AttributeError, TypeError, ValueError) as error:
        raise MappingSeriesError(f"{where}: geometry tags missing or unreadable ({error})") from None
    if len(orientation) != 6 or len(position) != 3 or len(spacing) != 2:
        raise MappingSeriesError(f"{where}: ImageOrientationPatient/ImagePositionPatient/PixelSpacing malformed")
    return size, orientation, position, spacing


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and all(
        np.allclose(x, y, atol=_GEOMETRY_TOLERANCE * max(1.0, float(np.max(np.abs(x))))) for x, y in zip(a[1:], b[1:])
    )


def check_mapping_frames(
    headers: Sequence[tuple[Path, pydicom.Dataset]],
    kind: str,
    *,
    where: str,
    name_of: Callable[[Path], str] = str,
) -> MappingFrames:
    """Check the ``kind`` (``t1`` or ``t2``) frames of one series from their headers.

    ``where`` names the series in messages, ``name_of`` a file (its path by default).
    """
    if kind not in MIN_FRAMES:
        raise ValueError(f"kind: expected 't1' or 't2', got {kind!r}")
    if not headers:
        raise MappingSeriesError(f"{where}: holds no files")
    records = []
    for path, dataset in headers:
        name = name_of(path)
        if "PixelData" not in dataset:
            raise MappingSeriesError(f"{name}: holds no image (no PixelData)")
        if int(dataset.get("NumberOfFrames", 1) or 1) != 1:
            raise MappingSeriesError(f"{name}: is a multi-frame object; expected one image per file")
        records.append((path, dataset, _frame_time(dataset, kind, name), _geometry_key(dataset, name)))

    series_uids = {str(d.get("SeriesInstanceUID", "")) for _, d, _, _ in records}
    if len(series_uids) > 1:
        raise MappingSeriesError(
            f"{where}: mixes {len(series_uids)} series (SeriesInstanceUID); give one series per folder"
        )
    reference_path, _, _, reference = records[0]
    for path, _, _, key in records[1:]:
        if not _same(key, reference):
            raise MappingSeriesError(
                f"{name_of(path)}: geometry differs from {reference_path.name} (size {key[0]} vs {reference[0]},"
                f" position {key[2]} vs {reference[2]}); all frames must share one slice"
            )
    seen: dict[float, Path] = {}
    for path, _, time, _ in records:
        if time in seen:
            label = "InversionTime" if kind == "t1" else "T2-prep duration"
            raise MappingSeriesError(f"{name_of(path)}: {label} {time:g} ms duplicates that of {name_of(seen[time])}")
        seen[time] = path
    if len(records) < MIN_FRAMES[kind]:
        raise MappingSeriesError(
            f"{where}: {len(records)} frame(s); a {kind.upper()} fit needs at least {MIN_FRAMES[kind]}"
        )

    records.sort(key=lambda record: record[2])
    (_rows, _columns), orientation, position, spacing = reference
    first = records[0][1]
    thickness = finite_number(first.get("SliceThickness")) or 1.0
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    geometry = StackGeometry(
        image_orientation=orientation,
        first_position=position,
        pixel_spacing=spacing,
        slice_step=tuple(float(v) for v in thickness * normal / np.linalg.norm(normal)),  # type: ignore[arg-type]
    )
    return MappingFrames(
        times_ms=np.asarray([record[2] for record in records], dtype=np.float64),
        kind=kind,
        geometry=geometry,
        files=tuple(record[0] for record in records),
        rescale=tuple(
            (finite_number(d.get("RescaleSlope", 1.0)) or 1.0, finite_number(d.get("RescaleIntercept", 0.0)) or 0.0)
            for _, d, _, _ in records
        ),
        series_instance_uid=series_uids.pop(),
        heart_rate_bpm=finite_number(first.get("HeartRate")),
    )


def read_mapping_series(series_dir: Path, kind: str) -> MappingSeries:
    """Frames, times and geometry of the ``kind`` (``t1`` or ``t2``) series in ``series_dir``."""
    if kind not in MIN_FRAMES:
        raise ValueError(f"kind: expected 't1' or 't2', got {kind!r}")
    series_dir = Path(series_dir)
    if not series_dir.is_dir():
        raise MappingSeriesError(f"{series_dir}: not a folder")
    datasets: dict[Path, pydicom.Dataset] = {}
    for path in find_files(series_dir):
        try:
            datasets[path] = pydicom.dcmread(path)
        except InvalidDicomError:
            raise MappingSeriesError(f"{path}: not a DICOM file") from None
        except Exception as error:
            raise MappingSeriesError(f"{path}: cannot be read ({type(error).__name__}: {error})") from None
    frames = check_mapping_frames(list(datasets.items()), kind, where=str(series_dir))

    def pixels_of(path: Path) -> np.ndarray:
        try:
            return datasets[path].pixel_array
        except Exception as error:
            raise MappingSeriesError(
                f"{path}: pixel data cannot be decoded ({type(error).__name__}: {error})"
            ) from None

    return frames.decode(pixels_of)
