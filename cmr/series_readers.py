"""The contract between the ingest driver (``cmr.ingest``) and the series readers.

The driver reads every file's header once, groups the images by SeriesInstanceUID
(``cmr.dicom_files.SeriesFiles``) and recognises each group's kind
(``cmr.series_recognition``). A series of a kind some task reads goes to the reader
registered for that kind (``cmr.reader_registry``), which then

1. :meth:`SeriesReader.check`\\ s it from the headers alone, returning the checked series
   or refusing it, each time with the files and reasons to report;
2. after the manifest rows are matched to the checked series, reads it
   (:meth:`CheckedSeries.read`): decodes its pixels one series at a time, loads its
   label files and says what the store should hold (:class:`SeriesContent`).

The driver does the rest for every kind alike: the case id, the subgroup attributes,
de-identification of the header, the store and the report. A reader never writes
to the store and never sees the salt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from pydicom.dataset import Dataset

from cmr.dicom_files import SeriesFiles
from cmr.ingest_labels import LabelFiles
from cmr.ingest_report import Rejection
from cmr.manifest import ManifestRow
from cmr.series_kinds import SeriesKind


class SeriesRefused(Exception):
    """A checked series cannot be ingested after all; the message is the reason."""


@dataclass(frozen=True)
class SeriesContent:
    """What one series puts in the case store (``cmr.store.CaseStore.put``)."""

    image: np.ndarray  # float32 [slice or frame, row, col]
    spacing_mm: tuple[float, float, float]  # between rows, between columns, between slices
    affine_ras: np.ndarray  # NIfTI affine of the image's [column, row, slice] grid
    header: Dataset  # raw header of the series' first image; the driver de-identifies it
    without_mask: bool  # counts in the report's cases_without_mask
    mask: np.ndarray | None = None  # uint8, image's shape: for image-and-mask tasks only
    case_labels: dict[str, str] = field(default_factory=dict)
    extra_arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesContext:
    """What a reader may use besides the series' own files."""

    row: ManifestRow | None  # the manifest row matched to the series
    manifest_name: str  # how messages name the manifest
    labels: LabelFiles  # the site's label files
    study: str  # salted pseudonym of the series' study: pairs series of one examination

    def manifest_line(self) -> str | None:
        """ "manifest.csv line 7", for messages about the row's cells; None without a row."""
        return f"{self.manifest_name} line {self.row.line}" if self.row is not None else None


class CheckedSeries(Protocol):
    """A series its reader has checked from the headers; pixel data not yet decoded."""

    @property
    def files(self) -> SeriesFiles: ...

    @property
    def n_images(self) -> int:
        """How many 2D images ``read`` decodes (for progress)."""
        ...

    def read(self, context: SeriesContext) -> SeriesContent:
        """Decode and label the series.

        Raises SeriesRefused (the reason) or ``cmr.dicom_files.SeriesDecodeError`` (the file).
        """
        ...


@dataclass(frozen=True)
class SeriesCheck:
    """A reader's verdict on one series: the checked series or None, and what to report."""

    series: CheckedSeries | None
    rejections: tuple[Rejection, ...] = ()  # files left out; when refused, the series' reason


class SeriesReader(Protocol):
    """Reads one kind of series; registered with ``cmr.reader_registry.register_reader``."""

    @property
    def kind(self) -> SeriesKind: ...

    def check(self, series: SeriesFiles) -> SeriesCheck:
        """Check a series of this kind from its headers; refuse it with reasons naming its files."""
        ...
