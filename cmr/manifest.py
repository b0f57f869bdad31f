"""The site manifest: case-level labels and attributes that DICOM lacks, and mask files.

Format (CSV, header row, UTF-8 with or without BOM (or UTF-16 with its BOM), comma or
semicolon separated)::

    patient_id,series_instance_uid,mask_file,ethnicity,scar_type,height_cm,weight_kg

Any cell may be blank. Optional override columns: ``sex``, ``age`` (years, a DICOM Age
String such as 058Y, or an age band), ``vendor``, ``field_strength``. ``mask_file`` is
relative to the labels folder. A row names its series by ``series_instance_uid``, or by
``patient_id`` alone when that patient has exactly one usable series.

What is kept: the override columns (normalised into SubgroupAttributes) and the case
labels in CASE_LABEL_COLUMNS (``scar_type``; for T1-mapping series ``haematocrit`` and
``contrast``), and ``series_kind``: a per-series override of the kind ingest recognises
(a ``cmr.series_kinds.SeriesKind`` value such as ``lge-stack`` or ``localizer``; it needs
the row's ``series_instance_uid``). Identifiers are used only to match rows to series and are never stored;
height and weight are part of the format but are not stored (nothing uses them, and
they add to re-identification risk). Other columns are
ignored, and the report says so, so that a hospital's extra column (say, a medical
record number) can never leak into the store.

A line that is not UTF-8 (a manifest saved as Latin-1 or Windows-1252) or that the CSV
reader cannot read is reported by line number and skipped; the rest is used.
"""

from __future__ import annotations

import codecs
import csv
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cmr.ingest_report import Rejection
from cmr.normalise import OVERRIDE_COLUMNS
from cmr.series_kinds import SeriesKind

IDENTIFIER_COLUMNS = ("patient_id", "series_instance_uid")
CASE_LABEL_COLUMNS = ("scar_type", "haematocrit", "contrast")  # the last two: MOLLI series (cmr.ingest_mapping)
NOT_STORED_COLUMNS = ("height_cm", "weight_kg")
SERIES_KIND_COLUMN = "series_kind"
KNOWN_COLUMNS = (
    *IDENTIFIER_COLUMNS,
    "mask_file",
    SERIES_KIND_COLUMN,
    *OVERRIDE_COLUMNS,
    *CASE_LABEL_COLUMNS,
    *NOT_STORED_COLUMNS,
)


@dataclass(frozen=True)
class ManifestRow:
    line: int  # line number in the CSV file (the header is line 1)
    patient_id: str
    series_instance_uid: str
    mask_file: str
    overrides: dict[str, str] = field(default_factory=dict)  # non-blank OVERRIDE_COLUMNS
    case_labels: dict[str, str] = field(default_factory=dict)  # non-blank CASE_LABEL_COLUMNS
    series_kind: SeriesKind | None = None  # the kind this series is, whatever ingest recognises


class NamedSeries(Protocol):
    """What matching needs of a series, whatever its kind."""

    @property
    def series_instance_uid(self) -> str: ...

    @property
    def patient_id(self) -> str: ...


@dataclass
class Manifest:
    name: str  # how reports name the file (its file name)
    rows: list[ManifestRow]
    problems: list[Rejection]

    def problem(self, line: int | None, reason: str) -> None:
        where = f"line {line}: " if line is not None else ""
        self.problems.append(Rejection("manifest", self.name, where + reason))


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _text_lines(raw: bytes, manifest: Manifest) -> list[str]:
    """The file's lines as text; a line that is not UTF-8 is reported and left blank (so skipped)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16").splitlines()
        except UnicodeDecodeError as error:
            where = raw[: error.start].decode("utf-16", errors="replace").count("\n") + 1
            manifest.problem(where, "not UTF-16, as its byte-order mark says: save the manifest as UTF-8; not read")
            return []
    lines = []
    for number, line in enumerate(raw.removeprefix(codecs.BOM_UTF8).split(b"\n"), start=1):
        try:
            lines.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            manifest.problem(
                number,
                f"not UTF-8 (byte 0x{line[error.start]:02x} at column {error.start + 1}): save the manifest as "
                "UTF-8 (in Excel: CSV UTF-8); row skipped",
            )
            lines.append("")
    return lines


def read_manifest(path: Path) -> Manifest:
    """Read and check the manifest; problems with single rows are reported, not raised."""
    path = Path(path)
    manifest = Manifest(name=path.name, rows=[], problems=[])
    lines = _text_lines(path.read_bytes(), manifest)
    reader = csv.reader(lines, _dialect("\n".join(lines[:1])))
    try:
        header = [column.strip().lower() for column in next(reader)]
    except StopIteration:
        manifest.problem(None, "the file is empty (no header row)")
        return manifest
    except csv.Error as error:
        manifest.problem(1, f"the header row cannot be read as CSV ({error})")
        return manifest
    if not set(IDENTIFIER_COLUMNS) & set(header):
        manifest.problem(
            None, "neither a patient_id nor a series_instance_uid column: no row can be matched to a series"
        )
        return manifest
    unknown = [c for c in header if c and c not in KNOWN_COLUMNS]
    if unknown:
        manifest.problem(None, f"column(s) {', '.join(unknown)} ignored: not part of the manifest format")
    try:
        for line, cells in enumerate(reader, start=2):
            _add_row(manifest, header, line, cells)
    except csv.Error as error:
        manifest.problem(reader.line_num, f"cannot be read as CSV ({error}); this and later rows skipped")
    return manifest


def _add_row(manifest: Manifest, header: list[str], line: int, cells: list[str]) -> None:
    """One data row, checked: added to the manifest's rows, or its problem reported."""
    if not any(cell.strip() for cell in cells):
        return
    if len(cells) > len(header):
        manifest.problem(line, f"{len(cells)} cells but the header has {len(header)} columns; row skipped")
        return
    values = {column: cell.strip() for column, cell in zip(header, cells, strict=False)}
    kind_cell = values.get(SERIES_KIND_COLUMN, "").lower()
    series_kind = None
    if kind_cell:
        try:
            series_kind = SeriesKind(kind_cell)
        except ValueError:
            known = ", ".join(kind.value for kind in SeriesKind)
            manifest.problem(line, f"series_kind {kind_cell!r} is not a series kind ({known}); row skipped")
            return
        if not values.get("series_instance_uid"):
            manifest.problem(line, "series_kind names one series: give its series_instance_uid; row skipped")
            return
    row = ManifestRow(
        line=line,
        patient_id=values.get("patient_id", ""),
        series_instance_uid=values.get("series_instance_uid", ""),
        mask_file=values.get("mask_file", ""),
        overrides={c: values[c] for c in OVERRIDE_COLUMNS if values.get(c)},
        case_labels={c: values[c] for c in CASE_LABEL_COLUMNS if values.get(c)},
        series_kind=series_kind,
    )
    if not row.patient_id and not row.series_instance_uid:
        manifest.problem(line, "neither patient_id nor series_instance_uid given; row skipped")
        return
    manifest.rows.append(row)


def kind_overrides(manifest: Manifest) -> dict[str, SeriesKind]:
    """The series kinds the manifest sets, by SeriesInstanceUID (the last row wins)."""
    return {row.series_instance_uid: row.series_kind for row in manifest.rows if row.series_kind is not None}


def match_rows(
    manifest: Manifest, series: Sequence[NamedSeries], not_used: Collection[str] = ()
) -> dict[str, ManifestRow]:
    """Manifest row for each usable series (by SeriesInstanceUID); problems go to the manifest.

    A row naming a series_instance_uid matches that series; a row with only a
    patient_id matches the patient's only usable series. A row naming a series in
    ``not_used`` (recognised, of a kind no task reads here) is passed over quietly: the
    report lists that series already. Reasons name line numbers, never the identifiers.
    """
    by_uid = {s.series_instance_uid: s for s in series}
    by_patient: dict[str, list[NamedSeries]] = defaultdict(list)
    for s in series:
        by_patient[s.patient_id].append(s)
    matched: dict[str, ManifestRow] = {}
    for row in sorted(manifest.rows, key=lambda r: (not r.series_instance_uid, r.line)):
        if row.series_instance_uid:
            target = by_uid.get(row.series_instance_uid)
            if target is None and row.series_instance_uid in not_used:
                continue
            if target is None:
                manifest.problem(
                    row.line, "its series_instance_uid matches no usable series (missing, or rejected above)"
                )
                continue
            if row.patient_id and row.patient_id != target.patient_id:
                manifest.problem(
                    row.line, "its patient_id differs from the PatientID of the series it names; row skipped"
                )
                continue
        else:
            candidates = by_patient.get(row.patient_id, [])
            if not candidates:
                manifest.problem(row.line, "its patient_id matches no usable series (missing, or rejected above)")
                continue
            if len(candidates) > 1:
                manifest.problem(
                    row.line,
                    f"this patient has {len(candidates)} usable series; add series_instance_uid to say which",
                )
                continue
            target = candidates[0]
        if target.series_instance_uid in matched:
            earlier = matched[target.series_instance_uid].line
            manifest.problem(row.line, f"names the same series as line {earlier}, which is used; row skipped")
            continue
        matched[target.series_instance_uid] = row
    return matched
