"""Per-case evaluation records, kept in the site folder as JSON Lines.

Every evaluation round writes ``SITE_DIR/evaluations/round-0003.jsonl``: one line
per case with its metrics, binary calls and subgroup attributes. These files stay
at the site; nothing in this module sends anything anywhere. Undefined metrics
(NaN) are written as ``null`` and read back as NaN.

Records are duck-typed (``case_id``, ``site_id``, ``attributes.as_dict()``,
``metrics``, ``calls``) so that fairness never imports the task code.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cmr.attributes import SubgroupAttributes

EVALUATIONS_DIR = "evaluations"


class HasAttributeDict(Protocol):
    def as_dict(self) -> dict[str, str]: ...


class CaseRecordLike(Protocol):
    """What fairness needs of a per-case record (tasks.base.CaseRecord fits)."""

    @property
    def case_id(self) -> str: ...
    @property
    def site_id(self) -> str: ...
    @property
    def attributes(self) -> HasAttributeDict: ...
    @property
    def metrics(self) -> Mapping[str, float]: ...
    @property
    def calls(self) -> Mapping[str, bool]: ...


@dataclass(frozen=True)
class SiteCaseRecord:
    """A per-case record as read back from the site folder."""

    case_id: str
    site_id: str
    attributes: SubgroupAttributes
    metrics: dict[str, float]
    calls: dict[str, bool] = field(default_factory=dict)


class RecordFileError(ValueError):
    """A per-case record file has a line that is not a valid record."""


def evaluations_dir(site_dir: Path) -> Path:
    return Path(site_dir) / EVALUATIONS_DIR


def round_records_path(site_dir: Path, server_round: int) -> Path:
    if server_round < 0:
        raise ValueError(f"server round must be 0 or more, not {server_round}")
    return evaluations_dir(site_dir) / f"round-{server_round:04d}.jsonl"


def record_to_json(record: CaseRecordLike) -> dict[str, Any]:
    return {
        "case_id": str(record.case_id),
        "site_id": str(record.site_id),
        "attributes": dict(record.attributes.as_dict()),
        "metrics": {name: _finite_or_none(value) for name, value in record.metrics.items()},
        "calls": {name: bool(value) for name, value in record.calls.items()},
    }


def write_case_records(site_dir: Path, server_round: int, records: Iterable[CaseRecordLike]) -> Path:
    """Write one round's per-case records into the site folder (owner-readable only).

    The file is written whole and then moved into place, so a reader never sees a
    half-written round; writing the same round again replaces it.
    """
    path = round_records_path(site_dir, server_round)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record_to_json(r), sort_keys=True, allow_nan=False) for r in records]
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write("".join(line + "\n" for line in lines))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_case_records(path: Path) -> list[SiteCaseRecord]:
    """Read a round's records; a bad line raises ``RecordFileError`` naming file and line."""
    path = Path(path)
    records = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                records.append(_record_from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError) as error:
                raise RecordFileError(f"{path}, line {number}: not a case record ({error})") from None
    return records


def read_round_records(site_dir: Path, server_round: int) -> list[SiteCaseRecord]:
    return read_case_records(round_records_path(site_dir, server_round))


def _record_from_json(data: dict[str, Any]) -> SiteCaseRecord:
    missing = {"case_id", "site_id", "attributes", "metrics"} - set(data)
    if missing:
        raise KeyError(f"missing field(s) {sorted(missing)}")
    metrics = {}
    for name, value in data["metrics"].items():
        if value is not None and not isinstance(value, (int, float)):
            raise TypeError(f"metric {name!r} is {value!r}, expected a number or null")
        metrics[str(name)] = math.nan if value is None else float(value)
    calls = {}
    for name, value in data.get("calls", {}).items():
        if not isinstance(value, bool):
            raise TypeError(f"call {name!r} is {value!r}, expected true or false")
        calls[str(name)] = value
    return SiteCaseRecord(
        case_id=str(data["case_id"]),
        site_id=str(data["site_id"]),
        attributes=SubgroupAttributes(**data["attributes"]),
        metrics=metrics,
        calls=calls,
    )


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
