"""The contract every tissue-characterisation task fulfils.

A task is plain PyTorch/MONAI: it builds its network, trains it on a site's case
store and evaluates it case by case. The Flower apps call exactly these methods
and nothing else, so a task runs and is tested without Flower.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

from cmr.attributes import SubgroupAttributes
from cmr.store import CaseEntry, CaseStore
from tasks.sampling import DEFAULT_BALANCE_ATTRIBUTE, NO_MITIGATION, mitigation_problems

if TYPE_CHECKING:
    from privacy.dp_sgd import PrivateRoundPlan


@dataclass(frozen=True)
class TrainSettings:
    """What the server asks of one round of local training (from run config)."""

    local_epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 1e-3
    proximal_mu: float = 0.0  # FedProx: 0 means plain local SGD
    max_steps: int = 0  # 0: no cap; otherwise stop after this many optimiser steps
    seed: int = 0
    # DP-SGD for this round (privacy.dp_sgd.plan_round): None trains without it. The
    # task then samples patients, not slices, and hands its model, optimiser and
    # loader to privacy.dp_sgd.make_private.
    privacy: PrivateRoundPlan | None = None
    # Fairness mitigation (tasks/sampling.py): "none" draws every training slice alike;
    # "group-balanced" draws each group of ``balance_attribute`` present at the site
    # equally often. Not with DP-SGD, whose accounting assumes uniform patient sampling.
    fairness_mitigation: str = NO_MITIGATION
    balance_attribute: str = DEFAULT_BALANCE_ATTRIBUTE

    def __post_init__(self) -> None:
        problems = mitigation_problems(self.fairness_mitigation, self.balance_attribute, self.privacy is not None)
        if problems:
            raise ValueError("invalid training settings: " + "; ".join(problems))


@dataclass(frozen=True)
class TrainOutcome:
    num_examples: int  # distinct training examples (slices) at this site
    num_examples_seen: int  # examples processed, all epochs together
    steps: int  # optimiser steps
    mean_loss: float
    seconds: float

    @property
    def examples_per_second(self) -> float:
        return 0.0 if self.seconds <= 0 else self.num_examples_seen / self.seconds


@dataclass(frozen=True)
class CaseRecord:
    """Per-case evaluation result. Site-local: never sent over the network."""

    case_id: str
    site_id: str
    attributes: SubgroupAttributes
    metrics: dict[str, float]  # continuous metrics, NaN where undefined
    calls: dict[str, bool] = field(default_factory=dict)  # binary reference/prediction pairs


@dataclass(frozen=True)
class Evaluation:
    records: list[CaseRecord]
    summary: dict[str, float]  # means over cases, the scalars that may cross the network
    num_examples: int  # cases evaluated


class Task(Protocol):
    name: str
    # Every per-case metric evaluate() may report: sites send all of them, even with no
    # case to score, because Flower's aggregation needs the same keys from every site.
    metric_names: tuple[str, ...]

    def build_model(self) -> torch.nn.Module: ...

    def training_patients(self, store: CaseStore) -> int:
        """How many patients ``train`` learns from: the records DP-SGD samples and protects."""
        ...

    def train(
        self,
        model: torch.nn.Module,
        store: CaseStore,
        settings: TrainSettings,
        device: torch.device,
    ) -> TrainOutcome: ...

    def evaluate(
        self,
        model: torch.nn.Module,
        store: CaseStore,
        device: torch.device,
        site_id: str,
    ) -> Evaluation: ...


# A site-wide sum over fewer cases would be one case's values, so sites withhold it
# (client.app); a site therefore validates at least this many cases where it can.
MIN_CASES_IN_A_SUM = 2


def _split_bucket(entry: CaseEntry) -> float:
    return int(hashlib.sha256(entry.case_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def validation_case_ids(
    entries: Iterable[CaseEntry], validation_fraction: float, minimum: int = MIN_CASES_IN_A_SUM
) -> set[str]:
    """The site's validation cases: a deterministic per-case split by hash of the case id.

    A case stays on its side however the store grows. A site with at least twice
    ``minimum`` cases validates at least ``minimum`` of them (the lowest hashes), so
    that every site is scored: case ids are salted per site at ingest, and a small
    site could otherwise draw a single validation case, whose figures it withholds.
    """
    entries = sorted(entries, key=_split_bucket)
    chosen = {e.case_id for e in entries if _split_bucket(e) < validation_fraction}
    if len(chosen) < minimum and len(entries) >= 2 * minimum and validation_fraction > 0:
        chosen = {e.case_id for e in entries[:minimum]}
    return chosen


def patient_keys(store: CaseStore, entries: Iterable[CaseEntry]) -> dict[str, str]:
    """Case id → the patient it belongs to, so that DP-SGD protects patients, not cases.

    A case is one series; a patient may have several. Ingest keeps each case's
    de-identified header, whose PatientID is the site's salted pseudonym of the
    patient (``cmr.deid``): cases with the same pseudonym are one patient. A case
    without a header (stores written directly, as in tests) is its own patient.
    (The case store could index this pseudonym; until it does, it is read here.)
    """
    from cmr.ingest import HEADERS_FOLDER

    keys = {}
    for entry in entries:
        header_path = store.root / HEADERS_FOLDER / f"{entry.case_id}.json"
        patient = None
        if header_path.is_file():
            values = json.loads(header_path.read_text()).get("00100020", {}).get("Value") or []
            patient = str(values[0]) if values else None
        keys[entry.case_id] = f"patient:{patient}" if patient else f"case:{entry.case_id}"
    return keys


def pick_device(prefer: str = "auto") -> torch.device:
    """CUDA when present (or asked for), the CPU otherwise."""
    if prefer == "cpu":
        return torch.device("cpu")
    if prefer in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if prefer == "cuda":
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is visible")
    return torch.device("cpu")
