"""The exam's series as DICOM files: a series header built once, written fast for every image.

An exam writes some 300 files per patient (a cine stack alone is slices × phases).
pydicom's ``save_as`` encodes every element of every file again (~1 ms a file), so
``SeriesWriter`` encodes the series' shared header once and per image only the
elements that change (UIDs, position, timing, pixels): the bytes are exactly those
``save_as(enforce_file_format=True)`` writes (tests/test_phantom_exam.py checks it).
The shared header starts from ``dicom_writer.base_dataset``: patient, study, scanner
and frame of reference are those of the patient's LGE series.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element

from cmr.phantom.dicom_writer import decimal_string
from cmr.phantom.exam_protocols import SeriesStrings

_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}
_PIXEL_DATA = 0x7FE00010
_MEDIA_INSTANCE = 0x00020003


def _encode(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element; ``value`` already padded to even length."""
    head = struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr.encode("ascii"))
    if vr in _LONG_VRS:
        return head + struct.pack("<2xI", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _text(vr: str, value: str | Sequence[str] | int | float) -> bytes:
    if isinstance(value, str):
        text = value
    else:
        text = "\\".join(map(str, value)) if isinstance(value, Sequence) else str(value)
    raw = text.encode("iso8859")
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return raw


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword!r} is not a DICOM keyword")
    return int(tag)


def _pydicom_bytes(element) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, element, "iso8859")
    return fp.getvalue()


class SeriesWriter:
    """Writes the images of one series from a shared ``header`` (a Dataset with file_meta).

    The shared elements are encoded once, in runs between the per-image ones, so that an
    image costs a few small encodings and one write. ``encoded`` (optional, shared by the
    series of one exam) remembers element encodings: a study's series repeat most of
    their header.
    """

    def __init__(self, header: Dataset, per_image: Sequence[str], encoded: dict | None = None):
        slots = {_tag(keyword): keyword for keyword in ("SOPInstanceUID", *per_image)}
        encoded = {} if encoded is None else encoded
        shared = {}
        for element in header:
            tag = int(element.tag)
            if tag in slots or tag == _PIXEL_DATA:
                continue
            key = (tag, element.VR, str(element.value))
            if key not in encoded:
                encoded[key] = _pydicom_bytes(element)
            shared[tag] = encoded[key]
        # The body in tag order: runs of shared bytes, and the keyword of each per-image element.
        self._layout: list[bytes | tuple[str, int, str]] = []
        run: list[bytes] = []
        for tag in sorted([*shared, *slots]):
            if tag in shared:
                run.append(shared[tag])
            else:
                self._layout += [b"".join(run), (slots[tag], tag, str(dictionary_VR(tag)))]
                run = []
        self._tail = b"".join(run)
        meta = header.file_meta
        self._meta_head = _encode(0x00020001, "OB", b"\0\1") + _encode(
            0x00020002, "UI", _text("UI", str(meta.MediaStorageSOPClassUID))
        )
        self._meta_tail = b"".join(
            _pydicom_bytes(e) for e in meta if int(e.tag) > _MEDIA_INSTANCE and e.tag != 0x00020000
        )

    def write(self, path: Path, sop_instance_uid: str, pixels: np.ndarray, **per_image: object) -> None:
        """One image; ``per_image`` gives every element named at construction (strings, numbers, lists)."""
        uid = _text("UI", sop_instance_uid)
        meta = self._meta_head + _encode(_MEDIA_INSTANCE, "UI", uid) + self._meta_tail
        values = {**per_image, "SOPInstanceUID": sop_instance_uid}
        parts = [b"\0" * 128, b"DICM", _encode(0x00020000, "UL", struct.pack("<I", len(meta))), meta]
        for item in self._layout:
            if isinstance(item, bytes):
                parts.append(item)
            else:
                keyword, tag, vr = item
                parts.append(_encode(tag, vr, _text(vr, values[keyword])))  # type: ignore[arg-type]
        pixel_bytes = np.ascontiguousarray(pixels, dtype="<u2").data.cast("B")
        parts += [self._tail, struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", pixel_bytes.nbytes)]
        with open(path, "wb") as file:
            file.write(b"".join(parts))
            file.write(pixel_bytes)


@dataclass(frozen=True)
class SeriesHeader:
    """Series-level values of a new series (the rest comes from the shared base)."""

    strings: SeriesStrings
    series_uid: str
    series_number: int
    series_time: str  # HHMMSS
    rows: int
    columns: int
    pixel_spacing_mm: float
    slice_thickness_mm: float
    repetition_time_ms: float
    echo_time_ms: float | None  # None: per image (T2-prep writes the prep duration there)
    flip_angle_deg: float
    heart_rate_bpm: float | None = None


def series_dataset(base: Dataset, header: SeriesHeader) -> Dataset:
    """``base`` (dicom_writer.base_dataset) completed with one series' own values."""
    ds = copy.deepcopy(base)  # Dataset.copy() is shallow: it would share (and change) base's elements
    strings = header.strings
    ds.ImageType = list(strings.image_type)
    ds.SeriesTime = header.series_time
    ds.SeriesDescription = strings.description
    ds.ProtocolName = strings.description
    ds.ScanningSequence = list(strings.scanning_sequence)
    ds.SequenceVariant = list(strings.sequence_variant)
    if strings.scan_options:
        ds.ScanOptions = list(strings.scan_options)
    ds.SequenceName = strings.sequence_name
    ds.SliceThickness = decimal_string(header.slice_thickness_mm, 3)
    ds.RepetitionTime = decimal_string(header.repetition_time_ms, 3)
    if header.echo_time_ms is not None:
        ds.EchoTime = decimal_string(header.echo_time_ms, 3)
    ds.NumberOfAverages = "1"
    ds.FlipAngle = decimal_string(header.flip_angle_deg, 1)
    if header.heart_rate_bpm is not None:
        ds.HeartRate = str(round(header.heart_rate_bpm))
    ds.SeriesInstanceUID = header.series_uid
    ds.SeriesNumber = header.series_number
    ds.Rows = header.rows
    ds.Columns = header.columns
    ds.PixelSpacing = [decimal_string(header.pixel_spacing_mm, 4)] * 2
    return ds


def set_window(ds: Dataset, scanner_values: np.ndarray) -> None:
    """Window centre/width over the 99.5th percentile (of a subsample: the window is a hint)."""
    flat = np.asarray(scanner_values).ravel()
    upper = float(np.percentile(flat[:: max(1, flat.size // 20000)], 99.5))
    lower = min(float(flat.min()), 0.0)
    ds.WindowCenter = decimal_string((upper + lower) / 2.0, 1)
    ds.WindowWidth = decimal_string(max(upper - lower, 1.0), 1)


def set_rescale(ds: Dataset, slope: float, intercept: float) -> None:
    ds.RescaleIntercept = decimal_string(intercept, 6)
    ds.RescaleSlope = decimal_string(slope, 6)
    ds.RescaleType = "US"


def time_of_day(start: str, seconds: float) -> str:
    """HHMMSS ``seconds`` after ``start`` (HHMMSS), wrapping at midnight."""
    t = int(start[:2]) * 3600 + int(start[2:4]) * 60 + int(start[4:6]) + round(seconds)
    t %= 86400
    return f"{t // 3600:02d}{t % 3600 // 60:02d}{t % 60:02d}"


def position_strings(position: Sequence[float]) -> list[str]:
    return [decimal_string(v, 4) for v in position]


def orientation_strings(orientation: Sequence[float]) -> list[str]:
    return [decimal_string(v, 6) for v in orientation]
