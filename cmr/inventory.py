"""A site's DICOM exams by series kind, before anything is ingested or trained.

``take_inventory`` reads every file's header (no pixels), groups the images into series
and the series into exams (one StudyInstanceUID), and recognises each series' kind
exactly as ingest will (``cmr.series_recognition``, with the manifest's overrides), so
that staff see which exams can feed which task before they ingest. Exams are named by
the folder that holds their series, never by a header value.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cmr.dicom_files import read_dicom_folder
from cmr.ingest_report import Rejection
from cmr.manifest import kind_overrides, read_manifest
from cmr.series_kinds import SeriesKind
from cmr.series_recognition import recognise_series


@dataclass(frozen=True)
class InventorySeries:
    folder: str  # relative to the DICOM folder
    label: str  # "series 7 in <folder>"
    kind: SeriesKind
    because: str
    n_images: int

    def to_json_dict(self) -> dict[str, object]:
        return {
            "folder": self.folder,
            "series": self.label,
            "series_kind": self.kind.value,
            "because": self.because,
            "images": self.n_images,
        }


@dataclass(frozen=True)
class Exam:
    folder: str  # the common folder of the exam's series
    series: tuple[InventorySeries, ...]

    def kinds(self) -> Counter[str]:
        return Counter(s.kind.value for s in self.series)

    def tasks(self, readers: Mapping[str, Sequence[str]]) -> list[str]:
        """The tasks some series of this exam can feed."""
        return sorted({task for s in self.series for task in readers.get(s.kind.value, ())})


@dataclass(frozen=True)
class Inventory:
    files_seen: int
    exams: tuple[Exam, ...]
    rejections: tuple[Rejection, ...]  # unreadable files and manifest problems

    def series_by_kind(self) -> Counter[str]:
        return Counter(s.kind.value for exam in self.exams for s in exam.series)

    def exams_by_kind(self) -> Counter[str]:
        return Counter(kind for exam in self.exams for kind in exam.kinds())

    def to_json_dict(self, readers: Mapping[str, Sequence[str]]) -> dict[str, object]:
        return {
            "files_seen": self.files_seen,
            "series_by_kind": dict(sorted(self.series_by_kind().items())),
            "tasks_by_kind": {kind: list(readers.get(kind, ())) for kind in sorted(self.series_by_kind())},
            "exams": [
                {
                    "folder": exam.folder,
                    "tasks": exam.tasks(readers),
                    "series": [s.to_json_dict() for s in exam.series],
                }
                for exam in self.exams
            ],
            "rejections": [{"kind": r.kind, "path": r.path, "reason": r.reason} for r in self.rejections],
        }


def _common_folder(folders: Sequence[str]) -> str:
    common = os.path.commonpath([Path(folder).as_posix() for folder in folders]) if folders else "."
    return common or "."


def take_inventory(
    dicom_dir: Path, manifest: Path | None = None, on_file_read: Callable[[int, int], None] | None = None
) -> Inventory:
    """Every exam under ``dicom_dir`` with the kind of each of its series; nothing is written."""
    dicom_dir = Path(dicom_dir)
    if not dicom_dir.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {dicom_dir}")
    parsed = read_manifest(Path(manifest)) if manifest is not None else None
    folder = read_dicom_folder(dicom_dir, [p for p in (manifest,) if p is not None], on_file_read=on_file_read)
    recognised = recognise_series(folder.series, kind_overrides(parsed) if parsed is not None else None)
    by_study: dict[str, list[InventorySeries]] = defaultdict(list)
    for files in folder.series:
        recognition = recognised[files.series_instance_uid]
        by_study[files.study_instance_uid].append(
            InventorySeries(files.folder, files.label, recognition.kind, recognition.because, files.n_images)
        )
    exams = [
        Exam(_common_folder([s.folder for s in series]), tuple(sorted(series, key=lambda s: s.folder)))
        for series in by_study.values()
    ]
    rejections = [*folder.rejections, *(parsed.problems if parsed is not None else [])]
    return Inventory(folder.files_seen, tuple(sorted(exams, key=lambda e: e.folder)), tuple(rejections))
