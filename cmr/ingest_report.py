"""What one ingest run could and could not use: counts, rejections and unused series, for staff.

Every unusable file, series, mask, label file or manifest row becomes a
:class:`Rejection` naming it (by its path relative to the folder the hospital gave)
and saying why in words a person can act on. A readable series of a kind no task
reads (a localizer, a long-axis cine, a brain scan) is no error: it is listed under
``not_used`` with the kind it was taken for (:class:`UnusedSeries`). The report never holds a value read
from a header or a manifest cell; see ``cmr.ingest`` for why paths are kept as given.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text

REPORT_FILE = "ingest-report.json"  # under SITE_DIR; rewritten on every run


@dataclass(frozen=True)
class Rejection:
    """Something the ingest could not use, and why.

    ``kind`` is ``file``, ``series``, ``mask``, ``labels``, ``manifest`` or ``case`` (a stored
    case kept as it was, rather than lose its mask or labels without ``--replace``); ``path``
    is relative to the DICOM folder for files and series, and names the label file or
    manifest (relative to the folder that holds it) otherwise.
    """

    kind: str
    path: str
    reason: str


@dataclass(frozen=True)
class UnusedSeries:
    """A readable series that no task uses, with the kind it was taken for (not an error)."""

    path: str  # the series' folder, relative to the DICOM folder
    series: str  # how the report names it: "series 7 in <folder>"
    kind: str  # a cmr.series_kinds.SeriesKind value
    reason: str  # why it is that kind, and why it is not used


@dataclass
class IngestReport:
    files_seen: int = 0
    series_found: int = 0  # distinct series among the readable MR image files
    cases_written: int = 0  # new or changed cases
    cases_unchanged: int = 0  # already in the store, identical
    cases_without_mask: int = 0  # ingested (written or unchanged) without a mask
    rejections: list[Rejection] = field(default_factory=list)
    not_used: list[UnusedSeries] = field(default_factory=list)  # series of kinds no task reads

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
            "series_not_used": len(self.not_used),
            "series_not_used_by_kind": self.not_used_by_kind(),
            "rejections": [{"kind": r.kind, "path": r.path, "reason": r.reason} for r in self.rejections],
            "not_used": [
                {"path": u.path, "series": u.series, "series_kind": u.kind, "reason": u.reason} for u in self.not_used
            ],
        }

    def not_used_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for unused in self.not_used:
            counts[unused.kind] = counts.get(unused.kind, 0) + 1
        return dict(sorted(counts.items()))

    def describe(self, max_rejections: int = 10) -> Text:
        """Counts and the first rejections, for a terminal (no markup is interpreted)."""
        text = Text()
        text.append(
            f"{self.files_seen} files, {self.series_found} series: "
            f"{self.cases_written} cases written, {self.cases_unchanged} unchanged, "
            f"{self.cases_without_mask} without a mask.\n"
        )
        if self.not_used:
            kinds = ", ".join(f"{kind} {n}" for kind, n in self.not_used_by_kind().items())
            text.append(f"{len(self.not_used)} series not used by any task ({kinds}); listed in {REPORT_FILE}.\n")
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

    def write(self, site_dir: Path) -> Path:
        """``SITE_DIR/ingest-report.json``: this run's counts and rejections, with when it finished."""
        document = {"finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **self.to_json_dict()}
        path = Path(site_dir) / REPORT_FILE
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        return path
