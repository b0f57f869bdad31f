"""The mapping series readers: MOLLI (T1) and T2-prep source images, with their labels.

A mapping series is several frames at one slice position, each with its own time:
``InversionTime`` for MOLLI, the preparation duration for T2-prep
(``cmr.mapping_series``). Ingest recognises the kind (``cmr.series_recognition``:
MOLLI is up to 12 inversion times at one position, a longer run being a TI scout;
T2-prep says so in ImageComments ``T2prep <ms> ms`` or its names) and hands the series
to the reader of that kind.

A series whose times are missing, duplicated or whose geometry differs is
refused by file and reason. Each series is stored as a mapping case
(``cmr.mapping_store``), de-identified by the driver like any case.

Per series, from the site's labels folder (all optional, all on the series' grid):

* ``<SeriesInstanceUID>.nii.gz``: the tissue mask (``cmr.labels``), or the
  manifest's ``mask_file``;
* ``<SeriesInstanceUID>_t1.nii.gz`` (MOLLI) or ``_t2.nii.gz`` (T2-prep): the
  reference map in ms, float. The phantom ships its ground truth here; at a hospital
  the reference would be a motion-free fit of a registered series, or an
  expert-corrected map.

From the manifest, for MOLLI: ``haematocrit`` (a fraction; needed for ECV) and
``contrast`` (``native`` or ``post``). Without a ``contrast`` cell a series counts as
post-contrast when its header names a contrast agent (ContrastBolusAgent) or its
SeriesDescription says "post", as scanners label post-contrast MOLLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom

from cmr.dicom_files import SeriesFiles, decode_pixels
from cmr.geometry import StackGeometry, affines_match, nifti_array_to_stack
from cmr.ingest_report import Rejection
from cmr.manifest import ManifestRow
from cmr.mapping_series import MappingFrames, MappingSeriesError, check_mapping_frames
from cmr.mapping_store import NATIVE, POST_CONTRAST, MappingContent, t1_mapping_content, t2prep_content
from cmr.masks import MaskMismatch, load_mask
from cmr.series_kinds import SeriesKind
from cmr.series_readers import SeriesCheck, SeriesContent, SeriesContext, SeriesRefused

REFERENCE_T1_SUFFIX = "_t1.nii.gz"
REFERENCE_T2_SUFFIX = "_t2.nii.gz"
SAME_POSITION_MM = 0.01


def load_reference_map(path: Path, geometry: StackGeometry, shape: tuple[int, int], quantity: str = "T1") -> np.ndarray:
    """A reference map [row, col] in ms from NIfTI on the series' grid; MaskMismatch says why not."""
    image: Any  # a NIfTI image (nibabel types its loader's result as any file image)
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:
        raise MaskMismatch(f"cannot be read as NIfTI ({type(error).__name__}: {error})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    expected = (shape[1], shape[0], 1)
    if data.shape != expected:
        raise MaskMismatch(f"shape {data.shape} [column,row,slice] does not match the series' {expected}")
    if not affines_match(image.affine, geometry.affine_ras()):
        raise MaskMismatch("geometry does not match the series (a different affine)")
    values = nifti_array_to_stack(data)[0]
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.min() < 0 or finite.max() > 10_000:
        raise MaskMismatch(f"does not hold {quantity} values in ms (expected finite values between 0 and 10000)")
    return values


def _contrast(header: pydicom.Dataset, row: ManifestRow | None, where: str) -> str:
    given = (row.case_labels.get("contrast", "") if row else "").strip().lower()
    if given:
        if given in ("native", "pre", "precontrast", "pre-contrast"):
            return NATIVE
        if given in ("post", "postcontrast", "post-contrast"):
            return POST_CONTRAST
        raise SeriesRefused(f"{where}: manifest contrast {given!r} is neither 'native' nor 'post'")
    description = f"{header.get('SeriesDescription', '')} {header.get('ProtocolName', '')}".lower()
    if str(header.get("ContrastBolusAgent", "") or "").strip() or "post" in description:
        return POST_CONTRAST
    return NATIVE


def _haematocrit(row: ManifestRow | None, where: str | None) -> float | None:
    cell = row.case_labels.get("haematocrit", "") if row else ""
    if not cell:
        return None
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise SeriesRefused(f"{where}: haematocrit {cell!r} is not a fraction between 0 and 1")
    return value


@dataclass(frozen=True)
class CheckedMapping:
    files: SeriesFiles
    frames: MappingFrames
    reader: MappingReader

    @property
    def n_images(self) -> int:
        return len(self.frames.files)

    def read(self, context: SeriesContext) -> SeriesContent:
        by_path = {f.path: f for f in self.files.files}
        earliest = by_path[self.frames.files[0]]  # its header stands for the series, as a stack's first slice
        header = pydicom.dcmread(earliest.path, stop_before_pixels=True, force=earliest.force)
        self.reader.check_manifest(header, context)  # before decoding: a refused row costs no pixels
        series = self.frames.decode(lambda path: decode_pixels(path, by_path[path].relative))
        shape = series.frames.shape[1:]
        geometry, label, labels = series.geometry, self.files.label, context.labels
        mask = reference = None
        mask_path = labels.mask_path(series.series_instance_uid, context.row)
        if mask_path is not None:
            mask = labels.load(
                mask_path, lambda p: load_mask(p, geometry, (1, *shape))[0], series_label=label, without="its mask"
            )
        reference_path = labels.companion_path(series.series_instance_uid, self.reader.reference_suffix)
        if reference_path is not None:
            quantity = self.reader.quantity
            reference = labels.load(
                reference_path,
                lambda p: load_reference_map(p, geometry, shape, quantity),
                series_label=label,
                without=f"its reference {quantity} map",
            )
        content = self.reader.content(label, context, header, series.frames, series.times_ms, mask, reference)
        return SeriesContent(
            image=content.frames,
            spacing_mm=(*geometry.pixel_spacing, float(np.linalg.norm(geometry.slice_step))),
            affine_ras=series.affine_ras(),
            header=header,
            without_mask=mask is None,
            case_labels=content.case_labels,
            extra_arrays=content.extra_arrays,
        )


class MappingReader:
    """Shared by the MOLLI and T2-prep readers: check and read frames at one position."""

    kind: SeriesKind
    time_kind: str  # "t1" or "t2" (cmr.mapping_series)
    quantity: str  # "T1" or "T2"
    reference_suffix: str
    description: str  # how rejections name the kind

    def check(self, series: SeriesFiles) -> SeriesCheck:
        relative = {f.path: f.relative for f in series.files}
        try:
            frames = check_mapping_frames(
                [(f.path, f.header) for f in series.files],
                self.time_kind,
                where=series.label,
                name_of=lambda path: relative[path],
            )
        except MappingSeriesError as refused:
            reason = f"{self.description} ({series.n_files} files) not ingested: {refused}"
            return SeriesCheck(None, (Rejection("series", series.folder, reason),))
        return SeriesCheck(CheckedMapping(series, frames, self))

    def check_manifest(self, header: pydicom.Dataset, context: SeriesContext) -> None:
        """Refuse the series (SeriesRefused) for a manifest cell it cannot be stored with.

        Called before decoding, so that a refused series costs no pixels and uses no label file.
        """

    def content(
        self,
        label: str,
        context: SeriesContext,
        header: pydicom.Dataset,
        frames: np.ndarray,
        times_ms: np.ndarray,
        tissue_mask: np.ndarray | None,
        reference_ms: np.ndarray | None,
    ) -> MappingContent:
        """The kind's case labels and named arrays (``cmr.mapping_store``)."""
        raise NotImplementedError


class MolliReader(MappingReader):
    kind = SeriesKind.MOLLI
    time_kind, quantity, reference_suffix = "t1", "T1", REFERENCE_T1_SUFFIX
    description = "T1-mapping series"

    def check_manifest(self, header: pydicom.Dataset, context: SeriesContext) -> None:
        self._haematocrit_and_contrast(header, context)

    def _haematocrit_and_contrast(self, header: pydicom.Dataset, context: SeriesContext) -> tuple[float | None, str]:
        where = context.manifest_line()
        return _haematocrit(context.row, where), _contrast(header, context.row, where or "the series")

    def content(
        self,
        label: str,
        context: SeriesContext,
        header: pydicom.Dataset,
        frames: np.ndarray,
        times_ms: np.ndarray,
        tissue_mask: np.ndarray | None,
        reference_ms: np.ndarray | None,
    ) -> MappingContent:
        haematocrit, contrast = self._haematocrit_and_contrast(header, context)
        return t1_mapping_content(
            label,
            frames,
            times_ms,
            contrast=contrast,
            study=context.study,
            haematocrit=haematocrit,
            reference_t1_ms=reference_ms,
            tissue_mask=tissue_mask,
        )


class T2PrepReader(MappingReader):
    kind = SeriesKind.T2_PREP
    time_kind, quantity, reference_suffix = "t2", "T2", REFERENCE_T2_SUFFIX
    description = "T2-prep series"

    def content(
        self,
        label: str,
        context: SeriesContext,
        header: pydicom.Dataset,
        frames: np.ndarray,
        times_ms: np.ndarray,
        tissue_mask: np.ndarray | None,
        reference_ms: np.ndarray | None,
    ) -> MappingContent:
        return t2prep_content(
            label, frames, times_ms, study=context.study, reference_t2_ms=reference_ms, tissue_mask=tissue_mask
        )
