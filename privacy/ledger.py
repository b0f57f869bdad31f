"""The site's privacy ledger: an append-only SQLite table of every DP-SGD round and decline.

``SITE_DIR/privacy-ledger.sqlite`` holds one row per round this site trained with
DP-SGD, and one per round it declined. A row says which run and round, how many
steps at which sample rate, noise multiplier and clipping norm, for which protected
unit, at which δ and with which accountant, what ε that round cost on its own and
what the site's cumulative ε was after it. Triggers refuse UPDATE and DELETE: the
ledger is evidence, and evidence is not edited.

The accountant's state is the ledger: the cumulative ε is recomputed from the
``(noise multiplier, sample rate, steps)`` of every trained row (all runs, since the
same patients take part in all of them), so a site that restarts, or trains in a
new run, continues from what its patients have already spent.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from privacy.accounting import MechanismSteps, epsilon_spent

LEDGER_FILE = "privacy-ledger.sqlite"
TRAINED = "trained"
DECLINED = "declined"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS privacy_ledger (
    entry              INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at        TEXT NOT NULL,      -- UTC, ISO 8601
    run_id             TEXT NOT NULL,
    server_round       INTEGER NOT NULL,
    outcome            TEXT NOT NULL CHECK (outcome IN ('{TRAINED}', '{DECLINED}')),
    protected_unit     TEXT NOT NULL,
    protected_units    INTEGER NOT NULL,   -- records Poisson sampling drew from
    steps              INTEGER NOT NULL,   -- DP-SGD steps (declined: the steps planned)
    sample_rate        REAL NOT NULL,
    noise_multiplier   REAL NOT NULL,
    max_grad_norm      REAL NOT NULL,
    delta              REAL NOT NULL,      -- the δ both ε columns are stated at
    accountant         TEXT NOT NULL,
    epsilon_round      REAL NOT NULL,      -- this round on its own (declined: what it would have cost)
    epsilon_cumulative REAL NOT NULL,      -- every trained round so far, this one included
    max_epsilon        REAL,               -- the site's budget when the row was written (NULL: none)
    reason             TEXT NOT NULL DEFAULT ''
);
CREATE TRIGGER IF NOT EXISTS privacy_ledger_no_update BEFORE UPDATE ON privacy_ledger
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only: rows cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS privacy_ledger_no_delete BEFORE DELETE ON privacy_ledger
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only: rows cannot be deleted'); END;
"""


@dataclass(frozen=True)
class LedgerEntry:
    run_id: str
    server_round: int
    outcome: str
    protected_unit: str
    protected_units: int
    steps: int
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant: str
    epsilon_round: float
    epsilon_cumulative: float
    max_epsilon: float | None = None
    reason: str = ""
    recorded_at: str = ""
    entry: int = 0  # assigned by the ledger

    @property
    def mechanism(self) -> MechanismSteps:
        return MechanismSteps(self.noise_multiplier, self.sample_rate, self.steps)


_COLUMNS = [f.name for f in fields(LedgerEntry)]


class PrivacyLedger:
    """The append-only ledger of one site (one SQLite file in the site folder)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @classmethod
    def for_site(cls, site_dir: Path | str) -> PrivacyLedger:
        return cls(Path(site_dir) / LEDGER_FILE)

    def exists(self) -> bool:
        return self.path.is_file()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30)) as connection:
            connection.executescript(_SCHEMA)
            with connection:  # one transaction
                yield connection

    def entries(self) -> list[LedgerEntry]:
        if not self.exists():
            return []
        with self._connection() as connection:
            rows = connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM privacy_ledger ORDER BY entry").fetchall()
        return [LedgerEntry(**dict(zip(_COLUMNS, row, strict=True))) for row in rows]

    def spent(self) -> list[MechanismSteps]:
        """The accountant history: every round this site trained, in order."""
        return [e.mechanism for e in self.entries() if e.outcome == TRAINED]

    def epsilon(self, delta: float, accountant: str) -> float:
        """The site's cumulative ε at ``delta``, recomputed from every trained round."""
        return epsilon_spent(self.spent(), delta, accountant)

    def append(self, entry: LedgerEntry) -> LedgerEntry:
        """Write one row (the ledger assigns its number and timestamp)."""
        values = asdict(entry)
        values.pop("entry")
        values["recorded_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        columns = list(values)
        with self._connection() as connection:
            cursor = connection.execute(
                f"INSERT INTO privacy_ledger ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [values[c] for c in columns],
            )
            number = int(cursor.lastrowid or 0)
        return LedgerEntry(**{**values, "entry": number})


def ledger_table(entries: list[LedgerEntry]):
    """The ledger as a table for a person: one line per round trained or declined.

    What rarely changes (protected unit, δ, accountant, budget) goes in the caption,
    listed once per distinct value, so that the table fits a terminal.
    """
    from rich.table import Table

    def distinct(values: list[str]) -> str:
        return ", ".join(dict.fromkeys(values)) or "—"

    caption = (
        f"protected unit: {distinct([e.protected_unit for e in entries])}; "
        f"ε at δ={distinct([f'{e.delta:g}' for e in entries])} "
        f"({distinct([e.accountant for e in entries])} accountant); "
        f"max ε: {distinct(['none' if e.max_epsilon is None else f'{e.max_epsilon:g}' for e in entries])}; "
        "q: sample rate, σ: noise multiplier, C: clipping norm"
    )
    table = Table(title="Privacy ledger", title_justify="left", caption=caption, caption_justify="left")
    for heading in (
        "#",
        "recorded (UTC)",
        "run",
        "round",
        "outcome",
        "units",
        "steps",
        "q",
        "σ",
        "C",
        "ε round",
        "ε total",
    ):
        justify: Literal["left", "right"] = "left" if heading in ("recorded (UTC)", "run", "outcome") else "right"
        # On a narrow terminal the other columns fold; the outcome stays one readable word.
        table.add_column(heading, justify=justify, overflow="fold", no_wrap=heading == "outcome")
    for e in entries:
        table.add_row(
            str(e.entry),
            e.recorded_at.replace("T", " ").removesuffix("+00:00"),
            e.run_id,
            str(e.server_round),
            e.outcome if e.outcome == TRAINED else f"[bold red]{e.outcome}[/]",
            str(e.protected_units),
            str(e.steps),
            f"{e.sample_rate:.4g}",
            f"{e.noise_multiplier:.4g}",
            f"{e.max_grad_norm:g}",
            f"{e.epsilon_round:.3f}",
            f"{e.epsilon_cumulative:.3f}",
        )
    return table
