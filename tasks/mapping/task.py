"""Motion-robust T1 mapping: the task the Flower apps call (train / evaluate), plain PyTorch.

The site's MOLLI series (``cmr.mapping_store``) are split by study into training
and validation studies, so that the native and post-contrast series of one
examination stay together (ECV needs both). ``train`` fits the network to the
reference T1 maps from frames moved by synthetic motion; ``evaluate`` maps each
validation series on its own grid, without added motion, and scores it per study
(``tasks.mapping.metrics``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmr.mapping_store import NATIVE, POST_CONTRAST, T1MappingCase, t1_mapping_cases
from cmr.store import CaseStore
from tasks.base import CaseRecord, Evaluation, TrainOutcome, TrainSettings, patient_keys, validation_case_ids
from tasks.lge.task import proximal_term
from tasks.mapping.data import (
    DEFAULT_MAX_FRAMES,
    SeriesTrainingSet,
    T1_SCALE_MS,
    groups_by,
    network_input,
    network_target,
)
from tasks.mapping.inference import t1_map_ms
from tasks.mapping.loss import WeightedL1Loss
from tasks.mapping.metrics import METRIC_NAMES, SUMMARY_METRICS, nan_mean, study_metrics
from tasks.mapping.network import build_mapping_unet, size_multiple
from tasks.sampling import GROUP_BALANCED, group_balanced_sampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSeries:
    """One MOLLI series with a reference, ready for the network (kept between rounds)."""

    case: T1MappingCase
    image: torch.Tensor  # [3·max_frames, row, col] network input
    target: torch.Tensor  # [2, row, col]: T1 / T1_SCALE_MS and pixel weights


@dataclass
class MotionRobustT1Mapping:
    """Map T1 from a MOLLI series under motion; score myocardial and blood T1 and ECV per study."""

    name: str = "mapping"
    metric_names: tuple[str, ...] = METRIC_NAMES
    summary_metrics: tuple[str, ...] = SUMMARY_METRICS  # what heads a run's metrics.csv and summary.json
    validation_fraction: float = 0.25
    max_frames: int = DEFAULT_MAX_FRAMES
    channels: tuple[int, ...] = (16, 32, 64, 128)
    training_size: tuple[int, int] = (96, 96)  # training crops; evaluation uses the whole image
    blood_weight: float = 3.0  # loss weights against the rest of the image (tasks.mapping.data.pixel_weights)
    myocardium_weight: float = 10.0
    max_motion_mm: float = 6.0  # synthetic in-plane shift per frame, each axis
    max_rotation_deg: float = 5.0
    motion_probability: float = 0.8  # the rest of the draws train on still series

    def build_model(self) -> torch.nn.Module:
        return build_mapping_unet(self.max_frames, self.channels)

    # ---------------------------------------------------------------- data

    def prepared(self, store: CaseStore) -> list[PreparedSeries]:
        return _CACHE.get(store, self)

    def split(self, store: CaseStore) -> tuple[list[PreparedSeries], list[PreparedSeries]]:
        """(training series, validation series), split by study with the house rule of tasks.base."""
        series = self.prepared(store)
        studies = [SimpleNamespace(case_id=study) for study in sorted({s.case.study for s in series})]
        chosen = validation_case_ids(studies, self.validation_fraction)
        return [s for s in series if s.case.study not in chosen], [s for s in series if s.case.study in chosen]

    def training_patients(self, store: CaseStore) -> int:
        training, _ = self.split(store)
        return len(set(patient_keys(store, (s.case.entry for s in training)).values()))

    def training_set(
        self, series: Sequence[PreparedSeries], groups: Sequence[Sequence[int]], seed: int
    ) -> SeriesTrainingSet:
        return SeriesTrainingSet(
            [s.image for s in series],
            [s.target for s in series],
            [s.case.frames.shape[0] for s in series],
            groups,
            self.training_size,
            [self.max_motion_mm / min(s.case.entry.row_spacing_mm, s.case.entry.column_spacing_mm) for s in series],
            self.max_rotation_deg,
            seed,
            self.motion_probability,
        )

    def training_loader(self, series: Sequence[PreparedSeries], settings: TrainSettings, device: torch.device) -> DataLoader:
        """Shuffled series, or drawn group-balanced by an attribute (tasks/sampling.py)."""
        generator = torch.Generator().manual_seed(settings.seed)
        order: dict = {"shuffle": True, "generator": generator}
        if settings.fairness_mitigation == GROUP_BALANCED:
            groups = [s.case.entry.attributes.as_dict()[settings.balance_attribute] for s in series]
            order = {"sampler": group_balanced_sampler(groups, generator)}
        dataset = self.training_set(series, [[i] for i in range(len(series))], settings.seed)
        return DataLoader(dataset, batch_size=settings.batch_size, num_workers=0, pin_memory=device.type == "cuda", **order)

    # ---------------------------------------------------------------- training

    def train(
        self,
        model: torch.nn.Module,
        store: CaseStore,
        settings: TrainSettings,
        device: torch.device,
    ) -> TrainOutcome:
        """Local training; with ``settings.privacy``, DP-SGD over patients (see privacy.dp_sgd)."""
        started = time.perf_counter()
        training, _ = self.split(store)
        plan = settings.privacy
        if not training or (plan is not None and plan.steps == 0):
            log.warning("no T1-mapping training series in %s: nothing to train", store.root)
            return TrainOutcome(len(training), 0, 0, math.nan, time.perf_counter() - started)

        model.to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        global_weights = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        private = None
        epochs, max_steps = settings.local_epochs, settings.max_steps
        if plan is None:
            loader = self.training_loader(training, settings, device)
            loss_function: torch.nn.Module = WeightedL1Loss()
        else:
            from privacy.dp_sgd import make_private

            patients = patient_keys(store, (s.case.entry for s in training))
            patient_set = self.training_set(
                training, groups_by([patients[s.case.entry.case_id] for s in training]), settings.seed
            )
            private = make_private(
                model,
                optimizer,
                DataLoader(patient_set, batch_size=settings.batch_size, num_workers=0),
                WeightedL1Loss(),
                plan,
                data_independent_penalty=(
                    (lambda local=model: proximal_term(local, global_weights, settings.proximal_mu))
                    if settings.proximal_mu > 0
                    else None
                ),
            )
            model, optimizer, loader, loss_function = private.module, private.optimizer, private.data_loader, private.criterion
            epochs, max_steps = math.ceil(plan.steps / plan.steps_per_epoch), plan.steps

        steps, seen, loss_total, loss_steps = 0, 0, 0.0, 0
        try:
            for inputs, targets in _batches(loader, epochs, max_steps):
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                if private is not None and inputs.shape[0] == 0:  # Poisson sampling drew nobody
                    private.noise_only_step()
                    continue
                inputs, targets = inputs.to(device), targets.to(device)
                data_loss = loss_function(model(inputs), targets)
                loss = data_loss
                if settings.proximal_mu > 0 and private is None:
                    loss = loss + proximal_term(model, global_weights, settings.proximal_mu)
                loss.backward()
                optimizer.step()
                seen += inputs.shape[0]
                loss_total += float(data_loss.detach())
                loss_steps += 1
            if private is not None and not private.accounted_steps == steps == plan.steps:
                raise RuntimeError(
                    f"DP-SGD planned {plan.steps} steps, took {steps}, Opacus accounted {private.accounted_steps}"
                )
        finally:
            if private is not None:
                private.close()
        seconds = time.perf_counter() - started
        mean_loss = loss_total / loss_steps if loss_steps else math.nan
        log.info(
            "trained %d steps%s on %d MOLLI series, mean loss %.4f (×%g ms), %.1f series/s",
            steps, " with DP-SGD" if private is not None else "", len(training),
            mean_loss, T1_SCALE_MS, seen / max(seconds, 1e-9),
        )
        return TrainOutcome(len(training), seen, steps, mean_loss, seconds)

    # ---------------------------------------------------------------- evaluation

    def t1_map_ms(self, model: torch.nn.Module, frames: np.ndarray, inversion_times_ms: Sequence[float], device: torch.device) -> np.ndarray:
        model.to(device)
        return t1_map_ms(model, frames, inversion_times_ms, self.max_frames, size_multiple(self.channels), device)

    def evaluate(
        self,
        model: torch.nn.Module,
        store: CaseStore,
        device: torch.device,
        site_id: str,
    ) -> Evaluation:
        _, validation = self.split(store)
        loss_function = WeightedL1Loss()
        by_study: OrderedDict[str, dict[str, tuple]] = OrderedDict()
        entries: dict[str, T1MappingCase] = {}
        losses = []
        for series in validation:
            case = series.case
            predicted = self.t1_map_ms(model, case.frames, case.inversion_times_ms, device)
            prediction = torch.as_tensor(predicted / T1_SCALE_MS)[None, None]
            losses.append(float(loss_function(prediction, series.target[None])))
            mask = case.tissue_mask if case.tissue_mask is not None else np.zeros(predicted.shape, np.uint8)
            by_study.setdefault(case.study, {})[case.contrast] = (predicted, case.reference_t1_ms, mask)
            if case.study not in entries or case.contrast == NATIVE:
                entries[case.study] = case  # the record is named after the native series
        records = []
        for study, maps in by_study.items():
            case = entries[study]
            metrics = study_metrics(maps.get(NATIVE), maps.get(POST_CONTRAST), case.haematocrit)
            records.append(CaseRecord(case.entry.case_id, site_id, case.entry.attributes, metrics))
        summary = {name: nan_mean([r.metrics[name] for r in records]) for name in SUMMARY_METRICS}
        summary["loss"] = nan_mean(losses)
        return Evaluation(records=records, summary=summary, num_examples=len(records))


def _batches(loader: DataLoader, epochs: int, max_steps: int) -> Iterator:
    steps = 0
    for _ in range(epochs):
        for batch in loader:
            if max_steps and steps >= max_steps:
                return
            steps += 1
            yield batch


class _PreparedCache:
    """Prepared series per store and task settings, so a site reads its store once, not every round.

    Keyed by the store's index file (path, modification time, size): ingesting
    changes the index and so the key. Holds the most recently used stores only.
    """

    def __init__(self, max_stores: int = 16) -> None:
        self.max_stores = max_stores
        self._entries: OrderedDict[tuple, list[PreparedSeries]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: CaseStore, task: MotionRobustT1Mapping) -> list[PreparedSeries]:
        if not store.exists():
            return []
        stat = store.index_path.stat()
        key = (
            str(store.index_path.resolve()), stat.st_mtime_ns, stat.st_size,
            task.max_frames, task.blood_weight, task.myocardium_weight,
        )
        with self._lock:
            if key not in self._entries:
                self._entries[key] = [
                    PreparedSeries(
                        case,
                        network_input(case.frames, case.inversion_times_ms, task.max_frames),
                        network_target(case, task.blood_weight, task.myocardium_weight),
                    )
                    for case in t1_mapping_cases(store)
                    if case.reference_t1_ms is not None
                ]
                while len(self._entries) > self.max_stores:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
            return self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CACHE = _PreparedCache()


def clear_prepared_cache() -> None:
    _CACHE.clear()
