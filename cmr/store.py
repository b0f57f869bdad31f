"""The site's local case store: de-identified arrays, masks and attributes.

Layout under ``SITE_DIR/store``::

    index.sqlite        one row per case (the index; SQLite so a site can query it)
    cases/<case_id>.npz image float32 [slice,row,col], mask uint8 (optional),
                        and any further named arrays a task needs (optional;
                        e.g. a mapping series' inversion times and reference map)

``case_id`` is a salted hash of the hospital's identifiers (``cmr.deid``); nothing
in the store can be traced back without the site's salt, which never leaves the
site. The index records the salt's fingerprint (``store_meta``), so that ingest can
refuse a salt that is not the store's own. Writing the same case twice with the same
content changes nothing.

The store is its owner's alone: folders 0700, files 0600 (by their mode when created,
not by the process's umask, which other threads share); :meth:`CaseStore.restrict_permissions`
tightens a store written before, or copied carelessly.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import zipfile
from collections.abc import Collection, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmr.attributes import SubgroupAttributes
from cmr.series_kinds import series_kind_of

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    case_id            TEXT PRIMARY KEY,
    content_sha256     TEXT NOT NULL,
    n_slices           INTEGER NOT NULL,
    n_rows             INTEGER NOT NULL,
    n_columns          INTEGER NOT NULL,
    row_spacing_mm     REAL NOT NULL,
    column_spacing_mm  REAL NOT NULL,
    slice_spacing_mm   REAL NOT NULL,
    has_mask           INTEGER NOT NULL,
    sex                TEXT NOT NULL,
    age_band           TEXT NOT NULL,
    ethnicity          TEXT NOT NULL,
    vendor             TEXT NOT NULL,
    field_strength     TEXT NOT NULL,
    case_labels_json   TEXT NOT NULL,
    affine_ras_json    TEXT NOT NULL
);
"""
# Created by the first write that needs it, so that reading an older store never writes to it.
_META_SCHEMA = "CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_SALT_FINGERPRINT = "salt_fingerprint"
FOLDER_MODE, FILE_MODE = 0o700, 0o600


def owner_only_folder(path: Path) -> None:
    """Create ``path`` (and its missing parents) as folders only their owner may enter."""
    for folder in reversed([path, *path.parents]):
        if not folder.is_dir():
            folder.mkdir(mode=FOLDER_MODE)
            os.chmod(folder, FOLDER_MODE)  # mkdir's mode is narrowed by the umask, never widened


def open_owner_only(path: Path) -> int:
    """A descriptor of ``path``, created or emptied, readable by its owner only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(descriptor, FILE_MODE)  # an existing file keeps its mode through O_CREAT
    return descriptor


def write_owner_only(path: Path, content: bytes) -> None:
    """Write ``path`` whole (through a temporary file), readable by its owner only."""
    owner_only_folder(path.parent)
    temporary = path.with_name(f".{path.name}.tmp")
    with os.fdopen(open_owner_only(temporary), "wb") as handle:
        handle.write(content)
    os.replace(temporary, path)


@dataclass(frozen=True)
class CaseEntry:
    """One row of the index: what a task needs to know without loading arrays."""

    case_id: str
    n_slices: int
    n_rows: int
    n_columns: int
    row_spacing_mm: float
    column_spacing_mm: float
    slice_spacing_mm: float
    has_mask: bool
    attributes: SubgroupAttributes
    case_labels: dict[str, str] = field(default_factory=dict)  # e.g. scar_type
    affine_ras: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class StoredCase:
    entry: CaseEntry
    image: np.ndarray  # float32 [slice, row, column]
    mask: np.ndarray | None  # uint8 [slice, row, column], cmr.labels convention
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # further named arrays (put's extra_arrays)


_RESERVED_ARRAY_NAMES = ("image", "mask")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` at deflate level 1 instead of its fixed level 6.

    Float images barely compress: level 6 made files 15 % smaller than level 1 but
    took 5x the time, half of all ingest time. ``np.load`` reads either.
    """
    with (
        os.fdopen(open_owner_only(path), "wb") as handle,
        zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
    ):
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def content_sha256(
    image: np.ndarray, mask: np.ndarray | None, extra_arrays: dict[str, np.ndarray] | None = None
) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    if mask is not None:
        digest.update(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    extra_arrays = extra_arrays or {}
    for name in sorted(extra_arrays):  # none for image-and-mask cases: their hash is unchanged
        array = np.ascontiguousarray(extra_arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


_ENTRY_COLUMNS = (
    "case_id, n_slices, n_rows, n_columns, row_spacing_mm, column_spacing_mm, slice_spacing_mm, has_mask,"
    " sex, age_band, ethnicity, vendor, field_strength, case_labels_json, affine_ras_json"
)


def _entry_of_row(r: tuple) -> CaseEntry:
    return CaseEntry(
        case_id=r[0],
        n_slices=r[1],
        n_rows=r[2],
        n_columns=r[3],
        row_spacing_mm=r[4],
        column_spacing_mm=r[5],
        slice_spacing_mm=r[6],
        has_mask=bool(r[7]),
        attributes=SubgroupAttributes(*r[8:13]),
        case_labels=json.loads(r[13]),
        affine_ras=tuple(tuple(row) for row in json.loads(r[14])),
    )


class CaseStore:
    def __init__(self, site_dir: Path | str) -> None:
        self.root = Path(site_dir) / "store"
        self.cases_dir = self.root / "cases"
        self.index_path = self.root / "index.sqlite"

    def exists(self) -> bool:
        return self.index_path.is_file()

    def _connect(self) -> sqlite3.Connection:
        owner_only_folder(self.cases_dir)
        if not self.index_path.exists():
            os.close(open_owner_only(self.index_path))  # SQLite takes an empty file as a new database
        connection = sqlite3.connect(self.index_path)
        connection.execute(_SCHEMA)
        return connection

    def salt_fingerprint(self) -> str | None:
        """The fingerprint of the salt the store was written with (``cmr.deid.salt_fingerprint``), if recorded."""
        if not self.exists():
            return None
        with closing(self._connect()) as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'store_meta'").fetchone() is None:
                return None  # a store from before fingerprints were recorded
            row = db.execute("SELECT value FROM store_meta WHERE key = ?", (_SALT_FINGERPRINT,)).fetchone()
        return None if row is None else str(row[0])

    def record_salt_fingerprint(self, fingerprint: str) -> None:
        """Record the salt's fingerprint once; a store keeps the salt it was first written with."""
        with closing(self._connect()) as db, db:
            db.execute(_META_SCHEMA)
            db.execute("INSERT OR IGNORE INTO store_meta VALUES (?, ?)", (_SALT_FINGERPRINT, fingerprint))

    def restrict_permissions(self) -> list[Path]:
        """Make every folder 0700 and file 0600 under the store; the paths that were open to others."""
        loosened = []
        for path in [self.root, *self.root.rglob("*")] if self.root.is_dir() else []:
            if path.is_symlink():
                continue
            wanted = FOLDER_MODE if path.is_dir() else FILE_MODE
            if stat.S_IMODE(path.stat().st_mode) & ~wanted:
                os.chmod(path, wanted)
                loosened.append(path)
        return loosened

    def entry(self, case_id: str) -> CaseEntry | None:
        """The index row of one case, or None when it is not stored."""
        if not self.exists():
            return None
        with closing(self._connect()) as db:
            row = db.execute(f"SELECT {_ENTRY_COLUMNS} FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return None if row is None else _entry_of_row(row)

    def array_names(self, case_id: str) -> set[str]:
        """The names of a stored case's arrays ("image", "mask", further ones), read without loading them."""
        with zipfile.ZipFile(self.cases_dir / f"{case_id}.npz") as archive:
            return {name.removesuffix(".npy") for name in archive.namelist()}

    def put(
        self,
        case_id: str,
        image: np.ndarray,
        mask: np.ndarray | None,
        spacing_mm: tuple[float, float, float],
        attributes: SubgroupAttributes,
        case_labels: dict[str, str] | None = None,
        affine_ras: np.ndarray | None = None,
        extra_arrays: dict[str, np.ndarray] | None = None,
    ) -> bool:
        """Store one case; returns False when an identical case is already stored.

        ``extra_arrays``: further named arrays stored with the case and returned in
        ``StoredCase.arrays`` (any shape; the names "image" and "mask" are taken).
        """
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim != 3:
            raise ValueError(f"case {case_id}: image must be [slice,row,col], got {image.shape}")
        if mask is not None:
            mask = np.ascontiguousarray(mask, dtype=np.uint8)
            if mask.shape != image.shape:
                raise ValueError(f"case {case_id}: mask shape {mask.shape} differs from image {image.shape}")
        extra_arrays = {name: np.asarray(array) for name, array in (extra_arrays or {}).items()}
        if taken := sorted(set(extra_arrays) & set(_RESERVED_ARRAY_NAMES)):
            raise ValueError(f"case {case_id}: extra array name(s) {taken} are reserved for the image and mask")
        sha = content_sha256(image, mask, extra_arrays)
        labels_json = json.dumps(case_labels or {}, sort_keys=True)
        affine_json = json.dumps([] if affine_ras is None else np.round(np.asarray(affine_ras), 6).tolist())
        with closing(self._connect()) as db, db:
            row = db.execute(
                "SELECT content_sha256, sex, age_band, ethnicity, vendor, field_strength,"
                " case_labels_json FROM cases WHERE case_id = ?",
                (case_id,),
            ).fetchone()
            attribute_values = (
                attributes.sex,
                attributes.age_band,
                attributes.ethnicity,
                attributes.vendor,
                attributes.field_strength,
            )
            if row is not None and row == (sha, *attribute_values, labels_json):
                return False
            array_path = self.cases_dir / f"{case_id}.npz"
            temporary = array_path.with_suffix(".tmp.npz")
            arrays = {"image": image} if mask is None else {"image": image, "mask": mask}
            arrays.update(extra_arrays)
            _write_npz(temporary, arrays)
            temporary.replace(array_path)
            db.execute(
                "INSERT OR REPLACE INTO cases VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    case_id,
                    sha,
                    *image.shape,
                    *map(float, spacing_mm),
                    int(mask is not None),
                    *attribute_values,
                    labels_json,
                    affine_json,
                ),
            )
        return True

    def entries(self, kinds: Collection[str] | None = None) -> list[CaseEntry]:
        """The index, in case-id order; ``kinds``: only cases of these series kinds (a task's ``series_kinds``)."""
        if kinds is not None:
            wanted = {str(kind) for kind in kinds}
            return [entry for entry in self.entries() if str(series_kind_of(entry.case_labels)) in wanted]
        if not self.exists():
            return []
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT {_ENTRY_COLUMNS} FROM cases ORDER BY case_id").fetchall()
        return [_entry_of_row(row) for row in rows]

    def load(self, entry: CaseEntry) -> StoredCase:
        with np.load(self.cases_dir / f"{entry.case_id}.npz") as arrays:
            image = arrays["image"]
            mask = arrays["mask"] if "mask" in arrays.files else None
            extra = {name: arrays[name] for name in arrays.files if name not in _RESERVED_ARRAY_NAMES}
        return StoredCase(entry=entry, image=image, mask=mask, arrays=extra)

    def __iter__(self) -> Iterator[StoredCase]:
        for entry in self.entries():
            yield self.load(entry)

    def __len__(self) -> int:
        return len(self.entries())
