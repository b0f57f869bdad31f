"""Site ingest of T1-mapping (MOLLI) series: frames, inversion times, reference map, mask.

``cmr.ingest.ingest_site`` reads stacks; a MOLLI series is something else: several
frames at one slice position, each with its own InversionTime, which the stack
reader refuses ("several phases … in one series"). This module finds those series
(``find_t1_mapping_series``: every file of the series carries InversionTime and all
lie at one position), reads each with ``cmr.mapping_series`` (which refuses, by file
and reason, a series whose times are missing, duplicated or whose geometry differs)
and stores it as a mapping case (``cmr.mapping_store``), de-identified like any case.

Per series, from the site's labels folder (both optional, both on the series' grid):

* ``<SeriesInstanceUID>.nii.gz``: the tissue mask (``cmr.labels``), or the
  manifest's ``mask_file``;
* ``<SeriesInstanceUID>_t1.nii.gz``: the reference T1 map in ms, float. The phantom
  ships its ground truth here; at a hospital the reference would be a motion-free
  fit of a registered series, or an expert-corrected map.

From the manifest: ``haematocrit`` (a fraction; needed for ECV) and ``contrast``
(``native`` or ``post``). Without a ``contrast`` cell a series counts as
post-contrast when its header names a contrast agent (ContrastBolusAgent) or its
SeriesDescription says "post", as scanners label post-contrast MOLLI.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pydicom

from cmr.deid import case_id_for, pseudonym
from cmr.dicom_series import Rejection, find_files
from cmr.geometry import StackGeometry, affines_match, nifti_array_to_stack
from cmr.manifest import ManifestRow
from cmr.mapping_series import MappingSeriesError, read_mapping_series
from cmr.mapping_store import NATIVE, POST_CONTRAST, put_t1_mapping_series
from cmr.masks import MaskMismatch, load_mask
from cmr.normalise import subgroup_attributes

if TYPE_CHECKING:
    from cmr.ingest import _Ingest

REFERENCE_T1_SUFFIX = "_t1.nii.gz"
_HEADER_TAGS = [
    "SeriesInstanceUID", "StudyInstanceUID", "PatientID", "InversionTime", "ImagePositionPatient", "SOPInstanceUID",
]
_SAME_POSITION_MM = 0.01


@dataclass(frozen=True)
class T1MappingSeriesFiles:
    """A series that looks like MOLLI source images: found, not yet read."""

    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    folder: Path  # the folder holding its files
    relative_folder: str  # as the report names it, relative to the DICOM folder
    n_files: int


def find_t1_mapping_series(dicom_dir: Path, exclude: list[Path]) -> list[T1MappingSeriesFiles]:
    """Series whose files (two or more) all carry InversionTime and lie at one slice position."""
    by_series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for path in find_files(dicom_dir, exclude):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception:  # noqa: BLE001 - the stack reader reports unreadable files
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if uid:
            by_series[uid].append((path, header))
    found = []
    for uid, files in by_series.items():
        if len(files) < 2 or any(h.get("InversionTime") in (None, "") for _, h in files):
            continue
        try:
            positions = np.array([[float(v) for v in h.ImagePositionPatient] for _, h in files])
        except (AttributeError, TypeError, ValueError):
            continue
        if np.abs(positions - positions[0]).max() > _SAME_POSITION_MM:
            continue  # a stack (LGE and the like): the stack reader's
        folder = Path(*_common_parts([p.parent for p, _ in files]))
        first = files[0][1]
        found.append(
            T1MappingSeriesFiles(
                series_instance_uid=uid,
                study_instance_uid=str(first.get("StudyInstanceUID", "") or ""),
                patient_id=str(first.get("PatientID", "") or ""),
                folder=folder,
                relative_folder=(folder.relative_to(dicom_dir).as_posix() or "."),
                n_files=len(files),
            )
        )
    return sorted(found, key=lambda s: s.relative_folder)


def _common_parts(folders: list[Path]) -> tuple[str, ...]:
    parts = folders[0].parts
    for folder in folders[1:]:
        length = 0
        for a, b in zip(parts, folder.parts):
            if a != b:
                break
            length += 1
        parts = parts[:length]
    return parts


def without_stack_rejections(rejections: list[Rejection], series: list[T1MappingSeriesFiles]) -> list[Rejection]:
    """The stack reader's rejections minus its refusal of the mapping series (read here instead)."""
    folders = {s.relative_folder for s in series}
    return [r for r in rejections if not (r.kind == "series" and r.path in folders)]


def load_reference_map(path: Path, geometry: StackGeometry, shape: tuple[int, int]) -> np.ndarray:
    """A reference T1 map [row, col] in ms from NIfTI on the series' grid; MaskMismatch says why not."""
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # noqa: BLE001
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
        raise MaskMismatch("does not hold T1 values in ms (expected finite values between 0 and 10000)")
    return values


def _contrast(header: pydicom.Dataset, row: ManifestRow | None, where: str) -> str:
    given = (row.case_labels.get("contrast", "") if row else "").strip().lower()
    if given:
        if given in ("native", "pre", "precontrast", "pre-contrast"):
            return NATIVE
        if given in ("post", "postcontrast", "post-contrast"):
            return POST_CONTRAST
        raise ValueError(f"{where}: manifest contrast {given!r} is neither 'native' nor 'post'")
    description = f"{header.get('SeriesDescription', '')} {header.get('ProtocolName', '')}".lower()
    if str(header.get("ContrastBolusAgent", "") or "").strip() or "post" in description:
        return POST_CONTRAST
    return NATIVE


def _haematocrit(row: ManifestRow | None, manifest_name: str) -> float | None:
    cell = row.case_labels.get("haematocrit", "") if row else ""
    if not cell:
        return None
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise ValueError(f"{manifest_name} line {row.line}: haematocrit {cell!r} is not a fraction between 0 and 1")
    return value


def ingest_t1_mapping_series(
    run: _Ingest, found: T1MappingSeriesFiles, row: ManifestRow | None, manifest_name: str
) -> None:
    """Read, de-identify and store one MOLLI series with its labels; rejections go to the report."""
    from cmr.ingest import _display_path, _write_if_changed, deidentified_header_json

    try:
        series = read_mapping_series(found.folder, "t1")
    except MappingSeriesError as refused:
        run.reject("series", found.relative_folder, f"T1-mapping series ({found.n_files} files) not ingested: {refused}")
        return
    label = f"T1-mapping series in {found.relative_folder}"
    try:
        haematocrit = _haematocrit(row, manifest_name)
        header = pydicom.dcmread(series.files[0], stop_before_pixels=True)
        contrast = _contrast(header, row, f"{manifest_name} line {row.line}" if row else label)
    except ValueError as problem:
        run.reject("series", found.relative_folder, f"{label}: not ingested ({problem})")
        return
    shape = series.frames.shape[1:]
    mask = reference = None
    if run.labels_dir is not None:
        mask_path = run.labels_dir / row.mask_file if row is not None and row.mask_file else None
        if mask_path is None:
            candidate = run.labels_dir / f"{series.series_instance_uid}.nii.gz"
            mask_path = candidate if candidate.is_file() else None
        reference_path = run.labels_dir / f"{series.series_instance_uid}{REFERENCE_T1_SUFFIX}"
        for path, loader, what in (
            (mask_path, lambda p: load_mask(p, series.geometry, (1, *shape))[0], "mask"),
            (reference_path if reference_path.is_file() else None, lambda p: load_reference_map(p, series.geometry, shape), "reference T1 map"),
        ):
            if path is None:
                continue
            if not path.is_file():
                run.reject("mask", _display_path(path, run.labels_dir), f"file not found; {label} ingested without its {what}")
                continue
            run.used_label_files.add(path.resolve())
            try:
                loaded = loader(path)
            except MaskMismatch as mismatch:
                run.reject("mask", _display_path(path, run.labels_dir), f"{mismatch} ({label}); ingested without its {what}")
                continue
            if what == "mask":
                mask = loaded
            else:
                reference = loaded
    attributes = subgroup_attributes(header, row.overrides if row else None)
    case_id = case_id_for(run.salt, found.patient_id, found.study_instance_uid, series.series_instance_uid)
    spacing = (*series.geometry.pixel_spacing, float(np.linalg.norm(series.geometry.slice_step)))
    stored = put_t1_mapping_series(
        run.store, case_id, series.frames, series.times_ms, spacing, attributes,  # type: ignore[arg-type]
        contrast=contrast,
        study=pseudonym(run.salt, "study", found.patient_id, found.study_instance_uid),
        haematocrit=haematocrit,
        reference_t1_ms=reference,
        tissue_mask=mask,
        affine_ras=series.affine_ras(),
    )
    header_written = _write_if_changed(run.headers_dir / f"{case_id}.json", deidentified_header_json(header, run.salt))
    if stored or header_written:
        run.report.cases_written += 1
    else:
        run.report.cases_unchanged += 1
    if mask is None:
        run.report.cases_without_mask += 1
