"""One DICOM series from a folder a person points at (``cmrfl predict``)."""

from __future__ import annotations

from pathlib import Path

from cmr.dicom_series import DicomSeries, scan_dicom_folder


class SeriesError(ValueError):
    """The DICOM folder does not hold exactly one usable series; the message says why."""


def read_one_series(series_dir: Path) -> DicomSeries:
    series_dir = Path(series_dir)
    if not series_dir.is_dir():
        raise SeriesError(f"{series_dir}: DICOM series folder not found")
    scan = scan_dicom_folder(series_dir)
    if len(scan.series) == 1:
        return scan.series[0]
    if not scan.series:
        reasons = "; ".join(f"{r.path}: {r.reason}" for r in scan.rejections[:5]) or "no files"
        raise SeriesError(f"{series_dir}: no usable DICOM series ({scan.files_seen} files; {reasons})")
    labels = ", ".join(s.label for s in scan.series)
    raise SeriesError(f"{series_dir}: {len(scan.series)} series found ({labels}); point at the folder of one")
