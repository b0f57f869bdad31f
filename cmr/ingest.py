"""Site ingest: a hospital's DICOM folder (+ masks, manifest) → the local case store.

``ingest_site`` reads every file (``cmr.dicom_series``), matches manifest rows and masks
to the usable series (``cmr.manifest``, ``cmr.masks``), normalises subgroup attributes
(``cmr.normalise``), de-identifies (``cmr.deid``) and writes each series as one case of
``cmr.store.CaseStore``. It never stops for a bad file, series, mask or manifest row:
each is listed in ``SITE_DIR/ingest-report.json`` with a reason a person can act on.

Decisions:

* **What the store holds.** Arrays, masks, normalised attributes, ``scar_type`` and the
  affine, keyed by ``case_id`` = salted SHA-256 of (PatientID, StudyInstanceUID,
  SeriesInstanceUID); plus ``store/headers/<case_id>.json``: the first slice's header
  after the PS3.15 basic profile, in the DICOM JSON model (``Dataset.from_json`` reads
  it back), without binary values. Nothing in ``store/`` holds an identifier.
* **What the report holds.** Counts, and every unusable file, series, mask and manifest
  row, by path *relative to the folder the hospital gave*, so staff can find it. Those
  paths are the hospital's own folder names, which may embed identifiers (a PatientID
  folder, a SeriesInstanceUID-named mask): we keep them as they are, because a report
  that staff cannot act on is useless, and the report is site-local (it is not part of
  the store, and nothing in it crosses the network). The report never adds a value read
  from a header or a manifest cell: series are named by SeriesNumber and folder,
  manifest rows by line number.
* **Masks.** A mask that does not fit its series (shape, affine, labels) is rejected
  with the reason and the case is ingested *without* a mask (the image is still useful
  for evaluation-free tasks and the report tells staff what to fix); it counts in
  ``cases_without_mask``.
* **Idempotency.** A case whose arrays, attributes and labels are unchanged is not
  rewritten (``CaseStore.put`` returns False), nor is its header JSON; the salt is
  created once. Only the report is rewritten on every run, since it describes the run.
  Cases whose files have since disappeared from the DICOM folder stay in the store.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from rich.text import Text

from cmr.deid import case_id_for, deidentify, load_or_create_salt
from cmr.dicom_series import DicomSeries, Rejection, SeriesDecodeError, scan_dicom_folder
from cmr.manifest import Manifest, ManifestRow, match_rows, read_manifest
from cmr.ingest_mapping import find_t1_mapping_series, ingest_t1_mapping_series, without_stack_rejections
from cmr.masks import MASK_SUFFIXES, MaskMismatch, default_mask_path, load_mask
from cmr.normalise import subgroup_attributes
from cmr.store import CaseStore

log = logging.getLogger(__name__)

REPORT_FILE = "ingest-report.json"
HEADERS_FOLDER = "headers"  # under SITE_DIR/store
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


@dataclass
class IngestReport:
    files_seen: int = 0
    series_found: int = 0  # distinct series among the readable MR image files
    cases_written: int = 0  # new or changed cases
    cases_unchanged: int = 0  # already in the store, identical
    cases_without_mask: int = 0  # ingested (written or unchanged) without a mask
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def files_rejected(self) -> int:
        return sum(r.kind == "file" for r in self.rejections)

    @property
    def series_rejected(self) -> int:
        return sum(r.kind == "series" for r in self.rejections)

    def to_json_dict(self) -> dict[str, object]:
        return {
            "files_seen": self.files_seen,
            "series_found": self.series_found,
            "cases_written": self.cases_written,
            "cases_unchanged": self.cases_unchanged,
            "cases_without_mask": self.cases_without_mask,
            "files_rejected": self.files_rejected,
            "series_rejected": self.series_rejected,
            "rejections": [{"kind": r.kind, "path": r.path, "reason": r.reason} for r in self.rejections],
        }

    def describe(self, max_rejections: int = 10) -> Text:
        """Counts and the first rejections, for a terminal (no markup is interpreted)."""
        text = Text()
        text.append(
            f"{self.files_seen} files, {self.series_found} series: "
            f"{self.cases_written} cases written, {self.cases_unchanged} unchanged, "
            f"{self.cases_without_mask} without a mask.\n"
        )
        if not self.rejections:
            text.append("Nothing was rejected.")
            return text
        text.append(f"{len(self.rejections)} things could not be used", style="bold yellow")
        text.append(f" ({self.files_rejected} files, {self.series_rejected} series):\n")
        for rejection in self.rejections[:max_rejections]:
            text.append(f"  {rejection.kind:8} ", style="dim")
            text.append(rejection.path, style="bold")
            text.append(f": {rejection.reason}\n")
        if len(self.rejections) > max_rejections:
            text.append(f"  … and {len(self.rejections) - max_rejections} more, listed in {REPORT_FILE}\n")
        return text


def _write_if_changed(path: Path, content: bytes) -> bool:
    if path.is_file() and path.read_bytes() == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)
    return True


def deidentified_header_json(header: Dataset, salt: bytes) -> bytes:
    """The header after the basic profile, without binary values, as stable JSON bytes."""
    clean = deidentify(header, salt)

    def drop_binary(container: Dataset, element) -> None:  # noqa: ANN001 - pydicom callback
        if element.VR in _BINARY_VRS:
            del container[element.tag]

    clean.walk(drop_binary)
    document = clean.to_json_dict(suppress_invalid_tags=True)
    return (json.dumps(document, sort_keys=True, indent=1) + "\n").encode("ascii")


def _display_path(path: Path, base: Path | None) -> str:
    """A label file's path as staff know it: relative to the folder holding the labels folder."""
    if base is not None:
        try:
            return path.resolve().relative_to(base.resolve().parent).as_posix()
        except ValueError:
            pass
    return path.name


class _Ingest:
    """One run's state: the store, the salt, the report and where masks come from."""

    def __init__(self, site_dir: Path, labels_dir: Path | None, salt: bytes, report: IngestReport) -> None:
        self.store = CaseStore(site_dir)
        self.headers_dir = self.store.root / HEADERS_FOLDER
        self.labels_dir = labels_dir
        self.salt = salt
        self.report = report
        self.used_label_files: set[Path] = set()

    def reject(self, kind: str, path: str, reason: str) -> None:
        self.report.rejections.append(Rejection(kind, path, reason))

    def mask_for(self, series: DicomSeries, row: ManifestRow | None, manifest_name: str):  # noqa: ANN201
        """The series' mask as [slice,row,col] uint8, or None (with the reason reported)."""
        if row is not None and row.mask_file:
            if self.labels_dir is None:
                self.reject(
                    "manifest", manifest_name,
                    f"line {row.line}: mask_file is set but no labels folder was given (--labels); "
                    "case ingested without a mask",
                )
                return None
            path = self.labels_dir / row.mask_file
            if not path.is_file():
                self.reject(
                    "mask", _display_path(path, self.labels_dir),
                    f"file not found (mask_file of {manifest_name} line {row.line}); case ingested without a mask",
                )
                return None
        elif self.labels_dir is not None:
            path = default_mask_path(self.labels_dir, series.series_instance_uid)
            if path is None:
                return None
        else:
            return None
        self.used_label_files.add(path.resolve())
        try:
            return load_mask(path, series.geometry, series.shape)
        except MaskMismatch as mismatch:
            self.reject(
                "mask", _display_path(path, self.labels_dir),
                f"{mismatch} ({series.label}); case ingested without a mask",
            )
            return None

    def ingest(self, series: DicomSeries, row: ManifestRow | None, manifest_name: str) -> None:
        try:
            image = series.load_image()
        except SeriesDecodeError as error:
            self.reject("file", error.relative, error.reason)
            self.reject(
                "series", series.folder,
                f"{series.label}: not ingested, because {error.relative} cannot be decoded",
            )
            return
        mask = self.mask_for(series, row, manifest_name)
        header = series.first_file.header
        attributes = subgroup_attributes(header, row.overrides if row else None)
        case_id = case_id_for(self.salt, series.patient_id, series.study_instance_uid, series.series_instance_uid)
        spacing = (*series.geometry.pixel_spacing, series.geometry.slice_spacing)
        stored = self.store.put(
            case_id,
            image,
            mask,
            spacing,  # type: ignore[arg-type]
            attributes,
            case_labels=dict(row.case_labels) if row else {},
            affine_ras=series.geometry.affine_ras(),
        )
        header_json = deidentified_header_json(series.header_of_first_slice(), self.salt)
        header_written = _write_if_changed(self.headers_dir / f"{case_id}.json", header_json)
        if stored or header_written:
            self.report.cases_written += 1
        else:
            self.report.cases_unchanged += 1
        if mask is None:
            self.report.cases_without_mask += 1

    def report_unused_label_files(self) -> None:
        if self.labels_dir is None or not self.labels_dir.is_dir():
            return
        for path in sorted(self.labels_dir.rglob("*")):
            if path.is_file() and path.name.endswith(MASK_SUFFIXES) and path.resolve() not in self.used_label_files:
                self.reject(
                    "labels", _display_path(path, self.labels_dir),
                    "matches no ingested series (neither a manifest mask_file nor "
                    "<SeriesInstanceUID>.nii.gz of a usable series)",
                )


def ingest_site(
    dicom_dir: Path,
    site_dir: Path,
    manifest: Path | None = None,
    labels_dir: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Ingest a hospital's DICOM folder into ``SITE_DIR/store``; see the module docstring.

    ``on_progress(done, total)`` counts files read, then slices decoded.
    Raises only for what makes the whole run impossible: a missing DICOM folder,
    manifest or labels folder, or an unusable salt.
    """
    dicom_dir, site_dir = Path(dicom_dir), Path(site_dir)
    if not dicom_dir.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {dicom_dir}")
    if manifest is not None and not Path(manifest).is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    if labels_dir is not None and not Path(labels_dir).is_dir():
        raise FileNotFoundError(f"labels folder not found: {labels_dir}")
    labels_dir = Path(labels_dir) if labels_dir is not None else None
    site_dir.mkdir(parents=True, exist_ok=True)
    salt = load_or_create_salt(site_dir)
    report = IngestReport()

    parsed_manifest = read_manifest(Path(manifest)) if manifest is not None else Manifest("", [], [])
    exclude = [p for p in (site_dir, labels_dir, manifest) if p is not None]
    files_total = 0

    def files_read(done: int, total: int) -> None:
        nonlocal files_total
        files_total = total
        if on_progress is not None:
            on_progress(done, 2 * total)

    scan = scan_dicom_folder(dicom_dir, exclude=exclude, on_file_read=files_read)
    report.files_seen, report.series_found = scan.files_seen, scan.series_found
    # T1-mapping (MOLLI) series are frames at one position, which the stack reader refuses:
    # they are read by cmr.ingest_mapping instead, and the stack reader's refusal is dropped.
    mapping_series = find_t1_mapping_series(dicom_dir, exclude)
    report.rejections.extend(without_stack_rejections(scan.rejections, mapping_series))
    rows = match_rows(parsed_manifest, [*scan.series, *mapping_series]) if manifest is not None else {}

    run = _Ingest(site_dir, labels_dir, salt, report)
    done, total = files_total, files_total + sum(len(s.slices) for s in scan.series)
    for series in scan.series:
        try:
            run.ingest(series, rows.get(series.series_instance_uid), parsed_manifest.name)
        except Exception as error:  # noqa: BLE001 - one bad series never stops the rest
            log.exception("unexpected failure ingesting %s", series.label)
            run.reject("series", series.folder, f"{series.label}: not ingested ({type(error).__name__}: {error})")
        done += len(series.slices)
        if on_progress is not None:
            on_progress(done, total)
    for found in mapping_series:
        try:
            ingest_t1_mapping_series(run, found, rows.get(found.series_instance_uid), parsed_manifest.name)
        except Exception as error:  # noqa: BLE001 - one bad series never stops the rest
            log.exception("unexpected failure ingesting the T1-mapping series in %s", found.relative_folder)
            run.reject("series", found.relative_folder, f"T1-mapping series not ingested ({type(error).__name__}: {error})")
    run.report_unused_label_files()
    report.rejections.extend(parsed_manifest.problems)

    document = {"finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **report.to_json_dict()}
    (site_dir / REPORT_FILE).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    log.info(
        "ingested %s: %d written, %d unchanged, %d rejections",
        site_dir, report.cases_written, report.cases_unchanged, len(report.rejections),
    )
    return report
