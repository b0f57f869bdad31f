"""Global-model checkpoints, one per completed round, and resume from the last.

A checkpoint is written only after a round has fully completed (trained,
aggregated, evaluated), atomically (write to a temporary file, then rename), so an
interruption at any moment leaves the last completed round intact. Weights with a NaN
or an infinity are refused: a resumed run must never start from a poisoned model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from server.reply_validation import non_finite_problem


class CheckpointMismatchError(RuntimeError):
    """The run directory holds checkpoints of a differently configured run."""


@dataclass(frozen=True)
class Checkpoint:
    server_round: int
    arrays: ArrayRecord
    history: list[dict[str, Any]]


def config_fingerprint(settings: dict[str, Any]) -> str:
    """What must not change between an interrupted run and its resumption."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class CheckpointStore:
    def __init__(self, run_dir: Path, fingerprint: str) -> None:
        self.directory = Path(run_dir) / "checkpoints"
        self.fingerprint = fingerprint

    def save(self, server_round: int, arrays: ArrayRecord, history: list[dict[str, Any]]) -> Path:
        weights = {k: v.numpy() for k, v in arrays.items()}
        if (problem := non_finite_problem(weights, "weights")) is not None:
            raise ValueError(f"round {server_round}: not checkpointed: {problem}")
        self.directory.mkdir(parents=True, exist_ok=True)
        weights_path = self.directory / f"round-{server_round:04d}.npz"
        _atomic_savez(weights_path, weights)
        state = {
            "server_round": server_round,
            "weights": weights_path.name,
            "config_fingerprint": self.fingerprint,
            "history": history,
        }
        _atomic_write_text(self.directory / "latest.json", json.dumps(state, indent=1))
        return weights_path

    def latest(self) -> Checkpoint | None:
        state_path = self.directory / "latest.json"
        if not state_path.is_file():
            return None
        state = json.loads(state_path.read_text())
        if state["config_fingerprint"] != self.fingerprint:
            raise CheckpointMismatchError(
                f"{state_path}: checkpoints belong to a run with other settings "
                "(task, strategy or seed changed); use a new run directory or start fresh"
            )
        with np.load(self.directory / state["weights"]) as weights:
            arrays = ArrayRecord({k: Array(weights[k]) for k in weights.files})
        return Checkpoint(state["server_round"], arrays, state["history"])

    def clear(self) -> None:
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                path.unlink()


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    temporary = path.with_name(path.stem + ".partial.npz")
    np.savez(temporary, **arrays)  # type: ignore[arg-type]  # numpy's stub fears a key named allow_pickle
    os.replace(temporary, path)


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text)
    os.replace(temporary, path)
