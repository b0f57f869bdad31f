"""What one ingest run could and could not use: counts and rejections, for staff.

Every unusable file, series, mask, label file or manifest row becomes a
:class:`Rejection` naming it (by its path relative to the folder the hospital gave)
and saying why in words a person can act on. The report never holds a value read
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

    ``kind`` is ``file``, ``series``, ``mask``, ``labels`` or ``manifest``; ``path``
    is relative to the DICOM folder for files and series, and names the label file or
    manifest (relative to the folder that holds it) otherwise.
    """

    kind: str
    path: str
    reason: str


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

    def write(self, site_dir: Path) -> Path:
        """``SITE_DIR/ingest-report.json``: this run's counts and rejections, with when it finished."""
        document = {"finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **self.to_json_dict()}
        path = Path(site_dir) / REPORT_FILE
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        return path
