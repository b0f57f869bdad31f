"""The server's record of what sites sent about fairness: one JSON file per round in the run folder.

``RUN_DIR/fairness/round-003.json`` holds, for one evaluation round, each site's
statistics document as received (already suppressed at the site; ``fairness.wire``),
the task's name, the run-config settings of the audit, notes on sites that sent
nothing, and any site whose document failed validation (kept out of the audit, with
the reason). ``load_run_statistics`` reads every round back as checked statistics.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairness.statistics import SiteStatistics
from fairness.wire import WireFormatError, statistics_from_document

log = logging.getLogger(__name__)

FAIRNESS_DIR = "fairness"
FILE_FORMAT = "cmrfl-fairness-round"
FILE_VERSION = 2  # version 1 held the flat key language that fairness.wire no longer reads
SETTINGS_PREFIX = "fairness-"


class NoFairnessStatistics(FileNotFoundError):
    """The run folder holds no fairness statistics."""


@dataclass(frozen=True)
class RoundStatistics:
    server_round: int
    sites: dict[str, SiteStatistics]  # site id → checked statistics
    task: str = ""  # the task's registry name, as recorded ("" when not recorded)
    settings: dict[str, Any] = field(default_factory=dict)  # fairness-* run-config keys
    notes: dict[str, str] = field(default_factory=dict)  # site id → why nothing (or less) came
    rejected: dict[str, str] = field(default_factory=dict)  # site id → why its dict was refused


@dataclass(frozen=True)
class RunStatistics:
    run_dir: Path
    rounds: dict[int, RoundStatistics]  # in round order

    @property
    def last(self) -> RoundStatistics:
        return self.rounds[max(self.rounds)]


def fairness_dir(run_dir: Path) -> Path:
    return Path(run_dir) / FAIRNESS_DIR


def round_statistics_path(run_dir: Path, server_round: int) -> Path:
    if server_round < 0:
        raise ValueError(f"server round must be 0 or more, not {server_round}")
    return fairness_dir(run_dir) / f"round-{server_round:03d}.json"


def clear_round_statistics(run_dir: Path) -> None:
    """Forget a previous run's rounds (a fresh run in the same folder starts clean)."""
    for path in fairness_dir(run_dir).glob("round-*.json"):
        path.unlink()


def save_round_statistics(
    run_dir: Path,
    server_round: int,
    site_documents: Mapping[str, str],
    suppressed_info: Mapping[str, str] | None = None,
    *,
    task: str,
    run_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write one round's statistics, as received from each site, to ``RUN_DIR/fairness/round-NNN.json``.

    ``site_documents``: site id → the document the site sent (``fairness.wire``).
    ``suppressed_info``: site id → a note for the report on a site that sent nothing
    or less this round ("no reply", "evaluation failed"). ``task``: the registry name
    of the task audited, so that a report can find its audit spec. ``run_config``:
    its ``fairness-*`` keys (tolerances, suppression threshold) are kept with the
    round so the report needs nothing else. A site whose document fails validation
    is logged, recorded under ``rejected`` with the reason and left out. Writing the
    same round again replaces the file.
    """
    sites, rejected = {}, {}
    for site_id, text in sorted(site_documents.items()):
        try:
            statistics_from_document(text, site_id)
        except WireFormatError as error:
            log.warning("round %d: fairness statistics of %s refused: %s", server_round, site_id, error)
            rejected[str(site_id)] = str(error)
            continue
        sites[str(site_id)] = json.loads(text)  # kept as an object, so that the round file reads plainly
    settings = {k: v for k, v in (run_config or {}).items() if str(k).startswith(SETTINGS_PREFIX)}
    document = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "round": int(server_round),
        "task": str(task),
        "settings": settings,
        "sites": sites,
        "notes": {str(k): str(v) for k, v in (suppressed_info or {}).items()},
        "rejected": rejected,
    }
    path = round_statistics_path(run_dir, server_round)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=1, sort_keys=True, allow_nan=False)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_round_statistics(path: Path) -> RoundStatistics:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable fairness round file ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
        raise ValueError(f"{path}: not a fairness round file (format {document.get('format')!r})")
    if document.get("version") != FILE_VERSION:
        raise ValueError(f"{path}: file version {document.get('version')!r}, this code reads {FILE_VERSION}")
    try:
        sites = {
            site_id: statistics_from_document(json.dumps(stored), site_id)
            for site_id, stored in document["sites"].items()
        }
    except WireFormatError as error:
        raise ValueError(f"{path}: {error}") from None
    return RoundStatistics(
        server_round=int(document["round"]),
        sites=sites,
        task=str(document["task"]),
        settings=dict(document.get("settings", {})),
        notes=dict(document.get("notes", {})),
        rejected=dict(document.get("rejected", {})),
    )


def load_run_statistics(run_dir: Path) -> RunStatistics:
    """Every round's statistics in the run folder; ``NoFairnessStatistics`` names the folder if none."""
    run_dir = Path(run_dir)
    paths = sorted(fairness_dir(run_dir).glob("round-*.json"))
    rounds = {}
    for path in paths:
        if path.stem.removeprefix("round-").isdigit():
            statistics = load_round_statistics(path)
            rounds[statistics.server_round] = statistics
    if not rounds:
        raise NoFairnessStatistics(
            f"no fairness statistics in {run_dir} (expected {fairness_dir(run_dir)}/round-NNN.json)"
        )
    return RunStatistics(run_dir, dict(sorted(rounds.items())))
