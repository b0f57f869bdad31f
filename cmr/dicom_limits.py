"""Limits a DICOM file's header must keep before any pixel is decoded or inflated.

A small file can claim, and hold, gigabytes: a deflated file of half a megabyte that
says 16384 x 16384 pixels, a JPEG or RLE payload of a few kilobytes that decodes to a
huge matrix. Rows, columns, frames and the decoded size are checked from the header
(:func:`matrix_problem`); a deflated file, whose whole data set pydicom inflates just to
read its header, is inflated here only as far as its header first, and then only as far
as that header accounts for (:func:`deflated_problem`). Both return the reason a person
reads in the ingest report, or None.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

# CMR images are 128 to 512 pixels a side (1024 when interpolated): 2048 leaves room and
# refuses the 16384-pixel bomb. A multi-frame object rarely holds more than a few hundred
# frames (an enhanced cine: 25 phases x 15 slices); 4096 leaves room for fingerprinting.
MAX_ROWS = MAX_COLUMNS = 2048
MAX_FRAMES = 4096
# A series is decoded whole, as float32: 1 GiB is 256 Mi pixels, say 4096 frames of
# 256 x 256, ten times the largest CMR series, and what a site machine can spare.
MAX_SERIES_BYTES = 1 << 30
# A deflated file's header is inflated at most this far before it is checked (an
# enhanced MR header with thousands of per-frame groups is a few MiB).
MAX_DEFLATED_HEADER_BYTES = 16 << 20
# What may follow the pixel data of a deflated file (padding, a trailing element).
_DEFLATED_TRAILER_BYTES = 1 << 20
_PIXEL_DATA_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # FloatPixelData, DoubleFloatPixelData, PixelData
_CHUNK = 1 << 16


def decoded_bytes(rows: int, columns: int, frames: int) -> int:
    """What ``frames`` images of ``rows`` x ``columns`` take once decoded, as float32."""
    return rows * columns * frames * np.dtype(np.float32).itemsize


def matrix_problem(dataset: Dataset) -> str | None:
    """Why a header's matrix, frame count or decoded size is beyond the limits; None when within them."""
    try:
        rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return (
            f"Rows, Columns or NumberOfFrames is not a number ({dataset.get('Rows')!r}, "
            f"{dataset.get('Columns')!r}, {dataset.get('NumberOfFrames')!r})"
        )
    if rows > MAX_ROWS or columns > MAX_COLUMNS:
        return (
            f"Rows x Columns {rows} x {columns} is beyond the limit of {MAX_ROWS} x {MAX_COLUMNS}: "
            "not decoded (a decompression bomb, or no cardiac MR image)"
        )
    if not 1 <= frames <= MAX_FRAMES:
        return f"NumberOfFrames {frames} is outside the limit of 1 to {MAX_FRAMES}: not decoded"
    if decoded_bytes(rows, columns, frames) > MAX_SERIES_BYTES:
        return (
            f"{rows} x {columns} x {frames} frames would decode to more than the limit of "
            f"{MAX_SERIES_BYTES >> 20} MiB: not decoded"
        )
    return None


def _inflate(handle: BinaryIO, inflater: Any, limit: int, keep: bool) -> tuple[bytes, int]:
    """Inflate from ``handle`` until ``limit`` bytes have come out or the stream ends: (the bytes if kept, count)."""
    kept, count, pending = bytearray(), 0, inflater.unconsumed_tail
    while count < limit and not inflater.eof:
        if not pending:
            pending = handle.read(_CHUNK)
            if not pending:
                break
        out = inflater.decompress(pending, min(limit - count, 16 * _CHUNK))
        pending = inflater.unconsumed_tail
        count += len(out)
        if keep:
            kept += out
    return bytes(kept), count


def _deflated_data_set_start(path: Path) -> int | None:
    """Where the deflated data set begins, for a Deflated Explicit VR Little Endian file; else None."""
    with path.open("rb") as handle:
        head = handle.read(_CHUNK)
    if str(DeflatedExplicitVRLittleEndian).encode() not in head:
        return None  # not named in the file meta: not deflated
    start = 132 if head[128:132] == b"DICM" else 0
    buffer = io.BytesIO(head[start:])
    try:
        meta = read_dataset(buffer, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
    except Exception:
        return None  # pydicom will say what is wrong with the file meta
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    return start + buffer.tell()


def deflated_problem(path: Path) -> str | None:
    """Why a deflated file cannot be read safely (its header beyond the limits, or its data past it); else None.

    The header is inflated first (at most MAX_DEFLATED_HEADER_BYTES) and checked; then the
    rest is inflated, and thrown away, only as far as the header's pixel data accounts for.
    None also for a file that is not deflated.
    """
    start = _deflated_data_set_start(path)
    if start is None:
        return None
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    at_pixels: list[int] = []

    def at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) in _PIXEL_DATA_TAGS:
            at_pixels.append(length)
            return True
        return False

    with path.open("rb") as handle:
        handle.seek(start)
        header, size, dataset = b"", _CHUNK, None
        while True:  # inflate a little more until the header parses up to the pixel data
            header += _inflate(handle, inflater, size - len(header), keep=True)[0]
            buffer = io.BytesIO(header)
            try:
                dataset = read_dataset(buffer, False, True, stop_when=at_pixel_data)
            except Exception:
                dataset = None  # cut inside an element: inflate more
            if at_pixels or inflater.eof or size >= MAX_DEFLATED_HEADER_BYTES:
                break
            size *= 4
        if dataset is None or not (at_pixels or inflater.eof):
            return f"deflated header does not end within {MAX_DEFLATED_HEADER_BYTES >> 20} MiB when inflated: not read"
        if not at_pixels:
            return None  # no pixel data, and all of it inflated within the limit
        if (problem := matrix_problem(dataset)) is not None:
            return problem
        bits = int(dataset.get("BitsAllocated") or 16)
        samples = int(dataset.get("SamplesPerPixel") or 1)
        pixels = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("NumberOfFrames") or 1) * samples
        pixel_bytes = (pixels + 7) // 8 if bits == 1 else pixels * ((bits + 7) // 8)
        allowed = buffer.tell() + 12 + pixel_bytes + _DEFLATED_TRAILER_BYTES - len(header)
        rest = _inflate(handle, inflater, allowed + 1, keep=False)[1]
    if rest > allowed:
        return (
            f"deflated data inflates to more than its header accounts for ({pixel_bytes} bytes of pixels): "
            "a decompression bomb, or a damaged file"
        )
    return None
