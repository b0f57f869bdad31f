"""The contract every tissue-characterisation task fulfils (``Task``), and the records
that pass between a task and the platform.

A task is plain PyTorch/MONAI: it builds its network, hands its training examples to
the shared loop (``tasks.training``) and evaluates case by case. The Flower apps call
exactly these methods and nothing else, so a task runs and is tested without Flower.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch.utils.data import Dataset

from cmr.attributes import SubgroupAttributes
from cmr.store import CaseEntry, CaseStore
from tasks.settings import TrainSettings as TrainSettings  # re-exported: tasks.settings owns it

if TYPE_CHECKING:
    from fairness.spec import AuditSpec


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


class Task(abc.ABC):
    """A tissue-characterisation task: everything the platform needs to know of it.

    A task is one folder ``tasks/<name>/`` plus one registration (``tasks/registry.py``,
    or an entry point in the ``cmrfl.tasks`` group for a task shipped as its own
    package). It declares, here and nowhere else:

    * what it reads (``series_kinds``) and how the phantom renders a demo site for it
      (``demo``);
    * its network (``build_model``), data (``training_examples``, ``patient_examples``)
      and losses; the shared loop (``tasks.training``) trains every task;
    * evaluation into per-case records (``evaluate``) and which per-case metrics
      cross the network as sums (``metric_names``);
    * its fairness audit (``audit_spec``), run outputs (``headline``, ``plots``) and
      model-card text (``describe_model``);
    * its inference for ``cmrfl predict`` (``predict``).

    Nothing outside ``tasks/`` branches on a task's name: the server, the clients, the
    registry and the command line read these declarations.
    """

    name: ClassVar[str]
    description: ClassVar[str]  # one sentence: what the model does (model card, CLI help)
    series_kinds: ClassVar[tuple[str, ...]]  # case-store series kinds it reads (cmr.series_kinds)
    # Every per-case metric evaluate() may report. Sites send all of them, as sums and
    # counts, even with no case to score: aggregation needs the same keys from every site.
    metric_names: ClassVar[tuple[str, ...]]
    audit_spec: ClassVar[AuditSpec | None] = None  # None: the task is not audited
    # Mixed precision in non-private training on CUDA (DP-SGD always trains in float32).
    mixed_precision: ClassVar[bool] = False

    # ------------------------------------------------------------------ network and data

    @abc.abstractmethod
    def build_model(self) -> torch.nn.Module: ...

    @abc.abstractmethod
    def training_examples(self, store: CaseStore, seed: int) -> TrainingExamples:
        """The site's training examples for one round of non-private training."""

    @abc.abstractmethod
    def patient_examples(self, store: CaseStore, seed: int = 0) -> Dataset:
        """DP-SGD's training set: one item per patient (the protected unit).

        Each item must depend on that patient's data alone (and on randomness that
        depends on nothing else), so that one patient moves one clipped gradient.
        """

    def training_patients(self, store: CaseStore) -> int:
        """How many patients DP-SGD samples from: the records it protects."""
        return len(self.patient_examples(store, 0))  # type: ignore[arg-type]

    @abc.abstractmethod
    def loss(self) -> torch.nn.Module:
        """The training loss of a batch, (predictions, targets) → scalar."""

    def per_example_loss(self) -> torch.nn.Module:
        """DP-SGD's loss: a mean of per-example losses with a ``reduction`` attribute
        ("mean" or "none", as Opacus' ghost clipping switches it). By default the
        training loss, which must then couple no two examples of a batch."""
        return self.loss()

    def batch_to_device(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader's batch as (inputs, targets) on the device; (inputs, targets) pairs by default."""
        inputs, targets = batch
        return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    def augmenting(self) -> contextlib.AbstractContextManager[None]:
        """Entered around a round's batches (e.g. MONAI without metadata tracking)."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ training and evaluation

    def train(
        self, model: torch.nn.Module, store: CaseStore, settings: TrainSettings, device: torch.device
    ) -> TrainOutcome:
        """One round of local training through the shared loop (``tasks.training``)."""
        from tasks.training import train_locally

        return train_locally(self, model, store, settings, device)

    @abc.abstractmethod
    def evaluate(self, model: torch.nn.Module, store: CaseStore, device: torch.device, site_id: str) -> Evaluation:
        """Score the site's validation cases, one record per case (never sent)."""

    # ------------------------------------------------------------------ outputs and use

    @property
    def headline(self) -> Mapping[str, str]:
        """summary.json key → per-case metric, the figures at the head of a run's outputs."""
        return {name: name for name in self.metric_names}

    @property
    def headline_labels(self) -> Mapping[str, str]:
        """summary.json key → its title for people (model card, demo table)."""
        return {key: key.replace("_", " ") for key in self.headline}

    @property
    def plots(self) -> tuple[RunPlot, ...]:
        """Per-round figures of a run, drawn by the server from the round history."""
        names = tuple(self.headline.values())[:2]
        panels = tuple((name, name.replace("_", " ") + " (validation cases)") for name in names)
        return (RunPlot("metrics_plot", "metrics_per_round.png", panels),)

    def describe_model(self) -> ModelDescription:
        """The model card's task-specific text: network and input."""
        return ModelDescription(network={}, input={"task": self.name})

    def with_network(self, network: Mapping[str, Any]) -> Task:
        """The task as a model card's ``network`` section describes it (non-default sizes)."""
        return self

    def predict(
        self,
        model: torch.nn.Module,
        series_dir: Path,
        out_dir: Path,
        device: torch.device,
        provenance: Mapping[str, Any],
    ) -> Prediction:
        """Apply a pulled model to one local DICOM series (``cmrfl predict``)."""
        raise NotImplementedError(f"task {self.name!r} has no inference for single series")

    demo: ClassVar[DemoRecipe | None] = None  # how ``cmrfl demo --task NAME`` makes its hospitals


@dataclass(frozen=True)
class TrainingExamples:
    """A round's training examples as the shared loop draws them (without DP-SGD)."""

    dataset: Dataset  # one item per example, augmented as it is drawn
    attributes: Sequence[Mapping[str, str]]  # each example's subgroup attributes (group-balanced sampling)
    description: str  # what they are, for the log: "412 slices of 45 cases"

    def __len__(self) -> int:
        return len(self.attributes)


@dataclass(frozen=True)
class RunPlot:
    """A per-round figure: one panel per metric, each site and the consortium as lines."""

    output: str  # its key under summary.json's "outputs"
    file: str
    panels: tuple[tuple[str, str], ...]  # (metric, panel title)
    y_label: str = ""
    y_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class ModelDescription:
    network: dict[str, Any]  # architecture, sizes, classes: what a site needs to rebuild it
    input: dict[str, Any]  # modality, series, preprocessing, output


@dataclass(frozen=True)
class Prediction:
    files: dict[str, Path]  # what was written, by role
    summary: dict[str, Any]  # the figures, as also written to the result file
    lines: tuple[str, ...] = ()  # what the command line prints


@dataclass(frozen=True)
class DemoRecipe:
    """How the phantom renders hospitals for a task, and the demo's defaults for it."""

    generate: Callable[..., Any]  # (out, n_sites, cases_per_site, seed, on_case_written=, workers=)
    cases_per_site: int
    rounds: int
    model_name: str
    # A series ``cmrfl predict`` takes, as a glob under a phantom hospital's dicom/ folder:
    # the demo prints a predict command for the first match.
    example_series: str
    run_config: Mapping[str, Any] = field(default_factory=dict)  # overrides of the run config's defaults


# A site-wide sum over fewer cases would be one case's values, so sites withhold it
# (client.app); a site therefore validates at least this many cases where it can.
MIN_CASES_IN_A_SUM = 2


class HasCaseId(Protocol):
    """What the split reads: a CaseEntry, or any unit split as one case (a study of several series)."""

    @property
    def case_id(self) -> str: ...


def _split_bucket(entry: HasCaseId) -> float:
    return int(hashlib.sha256(entry.case_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def validation_case_ids(
    entries: Iterable[HasCaseId], validation_fraction: float, minimum: int = MIN_CASES_IN_A_SUM
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
