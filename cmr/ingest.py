"""Site ingest: a hospital's DICOM folder (+ masks, manifest) → the local case store.

``ingest_site`` is the one driver for every kind of series. It reads every file's
header once and groups the images into series (``cmr.dicom_files``); recognises what
kind each series is (``cmr.series_recognition``; the manifest may say otherwise per
series); lists every series of a kind no task reads in the report as not used, with the
kind it was taken for (a localizer, a long-axis cine, a brain scan: never stored); hands
each other series to the reader of its kind (``cmr.reader_registry``: the LGE stack,
MOLLI and T2-prep readers, and whichever a later kind registers), which checks it from
its headers; matches manifest rows to the series that passed (``cmr.manifest``); then,
one series at a time, has its reader decode it and load its label files
(``cmr.series_readers.SeriesContent``), normalises the subgroup attributes
(``cmr.normalise``), de-identifies (``cmr.deid``) and writes one case of
``cmr.store.CaseStore``. It never stops for a bad file, series, mask or manifest row:
each is listed in ``SITE_DIR/ingest-report.json`` (``cmr.ingest_report``) with a
reason a person can act on.

Decisions:

* **What the store holds.** Arrays, masks, normalised attributes, case labels and the
  affine, keyed by ``case_id`` = salted SHA-256 of (PatientID, StudyInstanceUID,
  SeriesInstanceUID); plus ``store/headers/<case_id>.json``: the first image's header
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
* **Nothing lost or doubled silently.** A run never takes from a stored case what this
  run did not find (its mask, a case label, a named array such as a reference map: say,
  ingest run again without ``--labels``): it keeps them and reports "kept the stored …;
  use --replace", and only ``replace=True`` stores the case as read. The store records
  its salt's fingerprint, and a run whose salt is missing or another is refused
  (``cmr.deid.SaltMismatch``): a new salt would give every series a second case id.
* **Owner only.** Store folders are 0700 and files 0600, the report too; an older
  store is tightened on the next run (``CaseStore.restrict_permissions``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import replace as replaced
from pathlib import Path

from pydicom.dataset import Dataset

from cmr.deid import (
    SALT_FILE,
    SaltMismatch,
    case_id_for,
    deidentify,
    load_or_create_salt,
    pseudonym,
    salt_fingerprint,
)
from cmr.dicom_files import SeriesDecodeError, SeriesFiles, read_dicom_folder
from cmr.ingest_labels import LabelFiles
from cmr.ingest_report import REPORT_FILE, IngestReport, Rejection, UnusedSeries
from cmr.manifest import Manifest, ManifestRow, kind_overrides, match_rows, read_manifest
from cmr.normalise import subgroup_attributes
from cmr.reader_registry import readable_kinds, reader_of_kind
from cmr.series_kinds import SeriesKind
from cmr.series_readers import CheckedSeries, SeriesContent, SeriesContext, SeriesRefused
from cmr.series_recognition import Recognition, recognise_series
from cmr.store import FILE_MODE, CaseStore, open_owner_only, write_owner_only

__all__ = [
    "HEADERS_FOLDER",
    "REPORT_FILE",
    "IngestReport",
    "SaltMismatch",
    "check_series",
    "deidentified_header_json",
    "ingest_site",
    "site_salt",
]

log = logging.getLogger(__name__)

HEADERS_FOLDER = "headers"  # under SITE_DIR/store
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def _write_if_changed(path: Path, content: bytes) -> bool:
    if path.is_file() and path.read_bytes() == content:
        return False
    write_owner_only(path, content)
    return True


def site_salt(site_dir: Path, store: CaseStore) -> bytes:
    """The site's salt, made on first use; SaltMismatch when the store was written with another, or it is lost."""
    path = site_dir / SALT_FILE
    recorded = store.salt_fingerprint()
    afresh = f"or, to start afresh, move {store.root} away (every series is then stored again, under new case ids)"
    if not path.exists() and (recorded is not None or store.entries()):
        raise SaltMismatch(
            f"{path} is missing, but {store.root} was written with a salt: a new one would store every series a "
            f"second time, under a second case id. Nothing was ingested: restore it from the site's backup, {afresh}"
        )
    salt = load_or_create_salt(site_dir)
    if recorded is None:
        store.record_salt_fingerprint(salt_fingerprint(salt))
    elif recorded != salt_fingerprint(salt):
        raise SaltMismatch(
            f"{path} is not the salt this store was written with ({store.root} records another's fingerprint): its "
            f"case ids would all be new. Nothing was ingested: restore the site's own salt from its backup, {afresh}"
        )
    return salt


def deidentified_header_json(header: Dataset, salt: bytes) -> bytes:
    """The header after the basic profile, without binary values, as stable JSON bytes."""
    clean = deidentify(header, salt)

    def drop_binary(container: Dataset, element) -> None:
        if element.VR in _BINARY_VRS:
            del container[element.tag]

    clean.walk(drop_binary)
    document = clean.to_json_dict(suppress_invalid_tags=True)
    return (json.dumps(document, sort_keys=True, indent=1) + "\n").encode("ascii")


def unused_reason(recognition: Recognition, labels: dict[str, str]) -> str:
    """Why a recognised series is not used, in the report's words."""
    if recognition.kind == SeriesKind.LGE_PSIR and recognition.partner in labels:
        return (
            f"{recognition.because}: the phase-sensitive partner of {labels[recognition.partner]} "
            "(one acquisition; tasks read its magnitude)"
        )
    return f"{recognition.because}: not used by any task"


def check_series(series: SeriesFiles, kind: SeriesKind, rejections: list[Rejection]) -> CheckedSeries | None:
    """The series as the reader of ``kind`` checked it, or None; what could not be used goes to ``rejections``."""
    try:
        verdict = reader_of_kind(kind).check(series)
    except Exception as error:
        log.exception("unexpected failure checking %s", series.label)
        reason = f"{series.label}: not ingested ({type(error).__name__}: {error})"
        rejections.append(Rejection("series", series.folder, reason))
        return None
    rejections.extend(verdict.rejections)
    return verdict.series


class _CaseWriter:
    """One run's store, salt, label files and report: turns each read series into a case."""

    def __init__(self, store: CaseStore, salt: bytes, labels: LabelFiles, report: IngestReport, replace: bool) -> None:
        self.store = store
        self.headers_dir = self.store.root / HEADERS_FOLDER
        self.salt = salt
        self.labels = labels
        self.report = report
        self.replace = replace

    def reject(self, kind: str, path: str, reason: str) -> None:
        self.report.rejections.append(Rejection(kind, path, reason))

    def keep_stored(self, case_id: str, content: SeriesContent, files: SeriesFiles) -> SeriesContent | None:
        """``content`` plus what the stored case has and it lacks (mask, case labels, named arrays), reported.

        None when they cannot go together (the series now has another shape): the stored case stays as it is.
        """
        entry = self.store.entry(case_id)
        if entry is None:
            return content
        mask = entry.has_mask and content.mask is None
        labels = sorted(set(entry.case_labels) - set(content.case_labels))
        arrays = sorted(self.store.array_names(case_id) - {"image", "mask"} - set(content.extra_arrays))
        if not (mask or labels or arrays):
            return content
        lost = [
            *(["mask"] if mask else []),
            *([f"case labels ({', '.join(labels)})"] if labels else []),
            *([f"arrays ({', '.join(arrays)})"] if arrays else []),
        ]
        what = " and ".join(lost)
        if (entry.n_slices, entry.n_rows, entry.n_columns) != content.image.shape:
            reason = (
                f"{files.label}: kept the stored case, whose {what} this run did not find, as the series now has "
                "another shape; use --replace to store it as read now"
            )
            self.reject("case", files.folder, reason)
            return None
        reason = (
            f"{files.label}: kept the stored {what}, which this run did not find (no labels folder, manifest row "
            "or label file for it); use --replace to store the case as read now"
        )
        self.reject("case", files.folder, reason)
        stored = self.store.load(entry)
        return replaced(
            content,
            mask=stored.mask if mask else content.mask,
            without_mask=content.without_mask and not mask,
            case_labels={**{k: entry.case_labels[k] for k in labels}, **content.case_labels},
            extra_arrays={**{k: stored.arrays[k] for k in arrays}, **content.extra_arrays},
        )

    def ingest(self, series: CheckedSeries, row: ManifestRow | None, manifest_name: str) -> None:
        files = series.files
        context = SeriesContext(
            row=row,
            manifest_name=manifest_name,
            labels=self.labels,
            study=pseudonym(self.salt, "study", files.patient_id, files.study_instance_uid),
        )
        try:
            content = series.read(context)
        except SeriesDecodeError as error:
            self.reject("file", error.relative, error.reason)
            self.reject(
                "series", files.folder, f"{files.label}: not ingested, because {error.relative} cannot be decoded"
            )
            return
        except SeriesRefused as refused:
            self.reject("series", files.folder, f"{files.label}: not ingested ({refused})")
            return
        attributes = subgroup_attributes(content.header, row.overrides if row else None)
        case_id = case_id_for(self.salt, files.patient_id, files.study_instance_uid, files.series_instance_uid)
        if not self.replace:
            kept = self.keep_stored(case_id, content, files)
            if kept is None:
                self.report.cases_unchanged += 1
                return
            content = kept
        stored = self.store.put(
            case_id,
            content.image,
            content.mask,
            content.spacing_mm,
            attributes,
            case_labels=content.case_labels,
            affine_ras=content.affine_ras,
            extra_arrays=content.extra_arrays,
        )
        header_json = deidentified_header_json(content.header, self.salt)
        header_written = _write_if_changed(self.headers_dir / f"{case_id}.json", header_json)
        if stored or header_written:
            self.report.cases_written += 1
        else:
            self.report.cases_unchanged += 1
        if content.without_mask:
            self.report.cases_without_mask += 1


def ingest_site(
    dicom_dir: Path,
    site_dir: Path,
    manifest: Path | None = None,
    labels_dir: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    kinds: Collection[str] | None = None,
    replace: bool = False,
    follow_links: bool = False,
) -> IngestReport:
    """Ingest a hospital's DICOM folder into ``SITE_DIR/store``; see the module docstring.

    ``kinds``: the series kinds to store, those the site's tasks read (``cmrfl site
    ingest`` passes them); None stores every kind a registered reader reads.
    ``on_progress(done, total)`` counts files read, then images decoded.
    ``replace``: store each case as this run reads it, even where that drops a mask,
    case label or named array the stored case has (otherwise kept, and reported).
    ``follow_links``: read links to files and folders outside the DICOM folder
    (otherwise reported, not read).
    Raises only for what makes the whole run impossible: a missing DICOM folder,
    manifest or labels folder, or an unusable, lost or changed salt (SaltMismatch).
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
    store = CaseStore(site_dir)
    salt = site_salt(site_dir, store)
    if loosened := store.restrict_permissions():
        log.warning("%d files and folders under %s were open to others; now owner only", len(loosened), store.root)
    report = IngestReport()

    parsed_manifest = read_manifest(Path(manifest)) if manifest is not None else Manifest("", [], [])
    exclude = [p for p in (site_dir, labels_dir, manifest) if p is not None]
    files_total = 0

    def files_read(done: int, total: int) -> None:
        nonlocal files_total
        files_total = total
        if on_progress is not None:
            on_progress(done, 2 * total)  # a guess until the series are known

    folder = read_dicom_folder(dicom_dir, exclude, on_file_read=files_read, follow_links=follow_links)
    report.files_seen, report.series_found = folder.files_seen, folder.series_found
    report.rejections.extend(folder.rejections)
    stored_kinds = readable_kinds() if kinds is None else readable_kinds() & {SeriesKind(k) for k in kinds}
    recognised = recognise_series(folder.series, kind_overrides(parsed_manifest))
    labels_by_uid = {files.series_instance_uid: files.label for files in folder.series}
    checked = []
    not_used_uids = set()  # their manifest rows and label files are no problem: the series is listed
    for files in folder.series:
        recognition = recognised[files.series_instance_uid]
        if recognition.kind not in stored_kinds:
            not_used_uids.add(files.series_instance_uid)
            reason = unused_reason(recognition, labels_by_uid)
            report.not_used.append(UnusedSeries(files.folder, files.label, recognition.kind.value, reason))
            continue
        verdict = check_series(files, recognition.kind, report.rejections)
        if verdict is not None:
            checked.append(verdict)
    checked.sort(key=lambda s: (s.files.folder, s.files.files[0].relative))
    rows = match_rows(parsed_manifest, [s.files for s in checked], not_used_uids) if manifest is not None else {}

    labels = LabelFiles(labels_dir, parsed_manifest.name, report.rejections.append)
    writer = _CaseWriter(store, salt, labels, report, replace)
    done, total = files_total, files_total + sum(s.n_images for s in checked)
    for series in checked:
        try:
            writer.ingest(series, rows.get(series.files.series_instance_uid), parsed_manifest.name)
        except Exception as error:
            log.exception("unexpected failure ingesting %s", series.files.label)
            reason = f"{series.files.label}: not ingested ({type(error).__name__}: {error})"
            writer.reject("series", series.files.folder, reason)
        done += series.n_images
        if on_progress is not None:
            on_progress(done, total)
    labels.report_unused(not_used_uids)
    report.rejections.extend(parsed_manifest.problems)

    report_path = site_dir / REPORT_FILE
    if not report_path.exists():
        os.close(open_owner_only(report_path))  # it names the hospital's folders: the site's staff only
    os.chmod(report.write(site_dir), FILE_MODE)
    log.info(
        "ingested %s: %d written, %d unchanged, %d rejections",
        site_dir,
        report.cases_written,
        report.cases_unchanged,
        len(report.rejections),
    )
    return report
