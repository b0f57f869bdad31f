"""A site's labels folder during one ingest run: each series' label files, found and checked.

Per series, from the labels folder (all optional, all on the series' grid):

* ``<SeriesInstanceUID>.nii.gz`` (or ``.nii``), or the manifest row's ``mask_file``:
  the tissue mask (``cmr.labels``);
* ``<SeriesInstanceUID><suffix>``: further label files a reader asks for by suffix,
  such as a mapping series' reference map (``_t1.nii.gz``).

A label file that cannot be used is reported with the reason and the case is
ingested without it; a label file that no series used is reported at the end, so
that staff learn about a mask named after the wrong series.

Label files are read from the labels folder only: a ``mask_file`` that is absolute or
leads out of it (``..``, a link) is refused, as is a link out of it named after a
series; and a label file's header is checked against the limits of
``cmr.masks.open_label_file`` before any loader reads its data.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

from cmr.ingest_report import Rejection
from cmr.manifest import ManifestRow
from cmr.masks import MASK_SUFFIXES, MaskMismatch, default_mask_path, open_label_file

Loaded = TypeVar("Loaded")


class LabelFiles:
    """Finds and loads label files, remembers which were used, reports problems through ``reject``."""

    def __init__(self, labels_dir: Path | None, manifest_name: str, reject: Callable[[Rejection], None]) -> None:
        self.labels_dir = labels_dir
        self.manifest_name = manifest_name
        self._reject = reject
        self._used: set[Path] = set()  # label files loaded or refused: not reported again as unused

    def display_path(self, path: Path) -> str:
        """A label file's path as staff know it: relative to the folder holding the labels folder."""
        if self.labels_dir is not None:
            for given, parent in ((path, self.labels_dir.parent), (path.resolve(), self.labels_dir.resolve().parent)):
                try:
                    return given.relative_to(parent).as_posix()
                except ValueError:
                    pass
        return path.name

    def _inside(self, path: Path) -> bool:
        """Whether ``path``, links and ``..`` resolved, lies in the labels folder."""
        assert self.labels_dir is not None
        root, resolved = self.labels_dir.resolve(), path.resolve()
        return resolved == root or root in resolved.parents

    def _link_out(self, path: Path | None, without: str) -> Path | None:
        """``path``, unless it is a link out of the labels folder (reported, and None)."""
        if path is None or self._inside(path):
            return path
        self._used.add(path.resolve())
        self._reject(
            Rejection(
                "mask",
                self.display_path(path),
                f"a link to a file outside the labels folder: not read; case ingested without {without}",
            )
        )
        return None

    def mask_path(self, series_instance_uid: str, row: ManifestRow | None) -> Path | None:
        """The series' mask file: the manifest's ``mask_file``, else ``<SeriesInstanceUID>.nii.gz``.

        None when there is none; a ``mask_file`` that cannot be found is reported.
        """
        if row is not None and row.mask_file:
            if self.labels_dir is None:
                self._reject(
                    Rejection(
                        "manifest",
                        self.manifest_name,
                        f"line {row.line}: mask_file is set but no labels folder was given (--labels); "
                        "case ingested without a mask",
                    )
                )
                return None
            path = self.labels_dir / row.mask_file
            if Path(row.mask_file).is_absolute() or not self._inside(path):
                self._used.add(path.resolve())
                self._reject(
                    Rejection(
                        "manifest",
                        self.manifest_name,
                        f"line {row.line}: mask_file is outside the labels folder (an absolute path, or one "
                        "leading out through '..' or a link): not read; give it relative to the labels folder; "
                        "case ingested without a mask",
                    )
                )
                return None
            if not path.is_file():
                self._reject(
                    Rejection(
                        "mask",
                        self.display_path(path),
                        f"file not found (mask_file of {self.manifest_name} line {row.line}); "
                        "case ingested without a mask",
                    )
                )
                return None
            return path
        if self.labels_dir is None:
            return None
        return self._link_out(default_mask_path(self.labels_dir, series_instance_uid), "a mask")

    def companion_path(self, series_instance_uid: str, suffix: str) -> Path | None:
        """``<labels>/<SeriesInstanceUID><suffix>`` when it exists (and is no link out of the labels folder)."""
        if self.labels_dir is None:
            return None
        path = self.labels_dir / f"{series_instance_uid}{suffix}"
        return self._link_out(path, f"its {suffix} file") if path.is_file() else None

    def load(self, path: Path, loader: Callable[[Path], Loaded], *, series_label: str, without: str) -> Loaded | None:
        """``loader(path)``, or None with the reason reported when it raises MaskMismatch.

        ``without`` completes "case ingested without …" (e.g. "a mask").
        """
        self._used.add(path.resolve())
        try:
            open_label_file(path)  # the header within the limits before any loader reads the data
            return loader(path)
        except MaskMismatch as mismatch:
            self._reject(
                Rejection(
                    "mask", self.display_path(path), f"{mismatch} ({series_label}); case ingested without {without}"
                )
            )
            return None

    def report_unused(self, series_not_used: Collection[str] = ()) -> None:
        """Report every mask-like file under the labels folder that no series used.

        Files of a series in ``series_not_used`` (``<SeriesInstanceUID>.nii.gz``, ``…_t1.nii.gz`` …:
        a series recognised but of a kind not stored here) are passed over: the report lists the series.
        """
        if self.labels_dir is None or not self.labels_dir.is_dir():
            return
        for path in sorted(self.labels_dir.rglob("*")):
            if path.is_file() and path.name.split("_")[0].split(".nii")[0] in series_not_used:
                continue
            if path.is_file() and path.name.endswith(MASK_SUFFIXES) and path.resolve() not in self._used:
                reason = (
                    "matches no ingested series (neither a manifest mask_file nor "
                    "<SeriesInstanceUID>.nii.gz of a usable series)"
                    if self._inside(path)
                    else "a link to a file outside the labels folder: not read"
                )
                self._reject(Rejection("labels", self.display_path(path), reason))
