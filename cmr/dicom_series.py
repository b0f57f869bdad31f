"""Check a series of DICOM images as one MR stack: the LGE short-axis reader's geometry.

A stack has one orientation, one pixel spacing, one matrix, no two images at one
position, and slices evenly spaced along the slice normal, on one line. Images that
differ from most of the series (a localiser in the folder) are left out and reported;
a series that cannot be one stack is rejected with the reason. Files are read and
grouped by ``cmr.dicom_files``; pixel data is decoded one series at a time
(:meth:`DicomSeries.load_image`).

Every file or series that cannot be used becomes a :class:`Rejection` naming it by its
path relative to the DICOM folder; nothing here raises for a bad file. A single 2D image
is a usable one-slice stack.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from cmr.dicom_files import ImageFile, SeriesDecodeError, SeriesFiles, SliceImage, decode_pixels, read_dicom_folder
from cmr.geometry import StackGeometry
from cmr.ingest_report import Rejection

ORIENTATION_TOLERANCE = 1e-3  # direction cosines
SPACING_TOLERANCE_MM = 1e-3  # pixel spacing
SAME_POSITION_MM = 0.01  # two images closer than this along the normal share a position
SLICE_GAP_TOLERANCE_MM = 0.05  # or 1 % of the spacing, whichever is larger
IN_LINE_TOLERANCE_MM = 0.1  # how far a slice origin may lie off the stack's line


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
            pixels = decode_pixels(path, members[0][1].relative)
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


def build_series(series_files: SeriesFiles) -> tuple[DicomSeries | None, list[Rejection]]:
    """Check one SeriesInstanceUID's files as a stack and order its slices."""
    files, folder, label = series_files.files, series_files.folder, series_files.label
    rejections: list[Rejection] = []

    def series_rejection(reason: str) -> tuple[None, list[Rejection]]:
        rejections.append(Rejection("series", folder, f"{label} ({_describe(series_files.n_files, 'file')}): {reason}"))
        return None, rejections

    identities = {(f.patient_id, f.study_instance_uid) for f in files}
    if len(identities) > 1:
        return series_rejection(
            f"its files belong to {len(identities)} different patients or studies "
            "(the same SeriesInstanceUID was reused)"
        )
    if len({f.frame_of_reference_uid for f in files}) > 1:
        return series_rejection("its images have different frames of reference, so their positions cannot be compared")

    # one file per SOPInstanceUID: read_dicom_folder left copies and disputed files out
    images = [image for image_file in files for image in image_file.images]

    try:
        images = _keep_majority(
            images, lambda i: i.orientation, ORIENTATION_TOLERANCE, "slice orientation", label, rejections
        )
        images = _keep_majority(
            images, lambda i: i.pixel_spacing, SPACING_TOLERANCE_MM, "pixel spacing", label, rejections
        )
        images = _keep_majority(
            images, lambda i: (float(i.rows), float(i.columns)), 0.5, "matrix size", label, rejections
        )
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
                f"slice origins do not lie on one line (up to {off_line.max():.2f} mm off): the series mixes stacks"
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

    ``on_file_read(done, total)`` is called after each header is read. The site ingest
    does not use this: it hands each series to the reader of its kind (``cmr.ingest``).
    """
    folder = read_dicom_folder(dicom_dir, exclude, on_file_read)
    rejections = list(folder.rejections)
    series = []
    for files in folder.series:
        built, series_rejections = build_series(files)
        rejections.extend(series_rejections)
        if built is not None:
            series.append(built)
    series.sort(key=lambda s: (s.folder, s.first_file.relative))
    return SeriesScan(
        files_seen=folder.files_seen, series_found=folder.series_found, series=series, rejections=rejections
    )
