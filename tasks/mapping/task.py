"""Motion-robust T1 mapping: the task the Flower apps call (train / evaluate), plain PyTorch.

The site's MOLLI series (``cmr.mapping_store``) are split by patient into training
and validation patients, so that a patient's examinations, and the native and
post-contrast series of one examination (ECV needs both), stay together. ``train`` fits the network to the
reference T1 maps from frames moved by synthetic motion; ``evaluate`` maps each
validation series on its own grid, without added motion, and scores it per study
(``tasks.mapping.metrics``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from cmr.mapping_store import NATIVE, POST_CONTRAST, T1MappingCase, t1_mapping_cases
from cmr.series_kinds import SeriesKind
from cmr.store import CaseStore
from fairness.spec import AuditSpec
from tasks.base import (
    CaseRecord,
    DemoRecipe,
    Evaluation,
    ModelDescription,
    Prediction,
    Task,
    TrainingExamples,
    patient_keys,
    validation_case_ids,
)
from tasks.mapping.audit import MAPPING_AUDIT_SPEC
from tasks.mapping.data import (
    DEFAULT_MAX_FRAMES,
    T1_SCALE_MS,
    SeriesTrainingSet,
    groups_by,
    network_input,
    network_target,
)
from tasks.mapping.demo import generate_mapping_hospitals
from tasks.mapping.inference import t1_map_ms
from tasks.mapping.loss import WeightedL1Loss
from tasks.mapping.metrics import METRIC_NAMES, SUMMARY_METRICS, nan_mean, study_metrics
from tasks.mapping.network import build_mapping_unet, size_multiple

T1_MAP_FILE = "t1.nii.gz"


@dataclass(frozen=True)
class PreparedSeries:
    """One MOLLI series with a reference, ready for the network (kept between rounds)."""

    case: T1MappingCase
    image: torch.Tensor  # [3·max_frames, row, col] network input
    target: torch.Tensor  # [2, row, col]: T1 / T1_SCALE_MS and pixel weights


@dataclass(frozen=True)
class _Study:
    """A patient's examinations (or one examination, patient unknown), split as a unit."""

    case_id: str  # the patient's or study's key, hashed by the house split as a case id would be


@dataclass
class MotionRobustT1Mapping(Task):
    """Map T1 from a MOLLI series under motion; score myocardial and blood T1 and ECV per study."""

    name: ClassVar[str] = "mapping"
    description: ClassVar[str] = (
        "Map native and post-contrast myocardial T1 from MOLLI source images, robust to motion between frames"
    )
    series_kinds: ClassVar[tuple[str, ...]] = (SeriesKind.MOLLI,)
    metric_names: ClassVar[tuple[str, ...]] = METRIC_NAMES
    audit_spec: ClassVar[AuditSpec | None] = MAPPING_AUDIT_SPEC
    demo: ClassVar[DemoRecipe | None] = DemoRecipe(
        generate=generate_mapping_hospitals,
        # 20 examinations a hospital (native and post-contrast MOLLI each, motion up to
        # 4 mm): 2-3 validation studies per site. 20 rounds of up to 100 local steps,
        # about 5 s a round on 2 cores (README, "Other tasks").
        cases_per_site=20,
        rounds=20,
        model_name="t1-mapping",
        example_series="*/MOLLI_NATIVE",
        run_config={"batch-size": 4, "learning-rate": 0.002, "max-local-steps": 100, "local-epochs": 50},
    )

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
        """(training series, validation series), split by patient with the house rule of tasks.base.

        A patient's examinations, and each examination's native and post-contrast series,
        stay on one side; a study whose patient is unknown (no stored header) is its own unit.
        """
        series = self.prepared(store)
        patients = patient_keys(store, (s.case.entry for s in series))
        unit_of = {}
        for s in series:
            patient = patients[s.case.entry.case_id]
            unit_of[s.case.entry.case_id] = patient if patient.startswith("patient:") else s.case.study
        units = [_Study(case_id=unit) for unit in sorted(set(unit_of.values()))]
        chosen = validation_case_ids(units, self.validation_fraction)
        return (
            [s for s in series if unit_of[s.case.entry.case_id] not in chosen],
            [s for s in series if unit_of[s.case.entry.case_id] in chosen],
        )

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

    # ---------------------------------------------------------------- training (tasks.training runs it)

    def training_examples(self, store: CaseStore, seed: int) -> TrainingExamples:
        """Every training series, moved by synthetic motion as drawn."""
        training, _ = self.split(store)
        return TrainingExamples(
            self.training_set(training, [[i] for i in range(len(training))], seed),
            [s.case.entry.attributes.as_dict() for s in training],
            f"{len(training)} MOLLI series",
        )

    def patient_examples(self, store: CaseStore, seed: int = 0) -> SeriesTrainingSet:
        """One item per patient: each draw is one of the patient's training series."""
        training, _ = self.split(store)
        patients = patient_keys(store, (s.case.entry for s in training))
        return self.training_set(training, groups_by([patients[s.case.entry.case_id] for s in training]), seed)

    def training_patients(self, store: CaseStore) -> int:
        training, _ = self.split(store)
        return len(set(patient_keys(store, (s.case.entry for s in training)).values()))

    def loss(self) -> torch.nn.Module:
        return WeightedL1Loss()

    # ---------------------------------------------------------------- evaluation

    def t1_map_ms(
        self,
        model: torch.nn.Module,
        frames: np.ndarray,
        inversion_times_ms: Sequence[float] | np.ndarray,
        device: torch.device,
    ) -> np.ndarray:
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

    # ---------------------------------------------------------------- outputs, model card, inference

    @property
    def headline(self) -> Mapping[str, str]:
        return {name: name for name in SUMMARY_METRICS}

    def describe_model(self) -> ModelDescription:
        return ModelDescription(
            network={
                "architecture": "MONAI UNet, 2D, no normalisation, LeakyReLU (tasks/mapping/network.py)",
                "max_frames": self.max_frames,
                "channels": list(self.channels),
            },
            input={
                "modality": "MOLLI source images (native or post-contrast), one slice",
                "series": "one DICOM series: the frames with their InversionTime, any order, any vendor",
                "output": "T1 map in ms on the series' own grid (NIfTI)",
            },
        )

    def with_network(self, network: Mapping[str, Any]) -> MotionRobustT1Mapping:
        if "channels" not in network:
            return self
        return replace(
            self,
            max_frames=int(network.get("max_frames", self.max_frames)),
            channels=tuple(int(c) for c in network["channels"]),
        )

    def predict(
        self,
        model: torch.nn.Module,
        series_dir: Path,
        out_dir: Path,
        device: torch.device,
        provenance: Mapping[str, Any],
    ) -> Prediction:
        """T1 map (ms) of one MOLLI series, written as NIfTI on the series' grid."""
        from cmr.mapping_series import read_mapping_series
        from cmr.parametric_map import write_parametric_map

        series = read_mapping_series(series_dir, "t1")
        t1 = self.t1_map_ms(model, series.frames, series.times_ms, device)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / T1_MAP_FILE
        write_parametric_map(path, t1, series.geometry)
        summary = {"t1_map": T1_MAP_FILE, "frames": int(series.frames.shape[0]), "model": dict(provenance)}
        result = out_dir / "t1-map.json"
        result.write_text(json.dumps(summary, indent=2) + "\n")
        return Prediction({"t1_map": path, "result": result}, summary, (f"T1 map of {series_dir}",))


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
            str(store.index_path.resolve()),
            stat.st_mtime_ns,
            stat.st_size,
            task.max_frames,
            task.blood_weight,
            task.myocardium_weight,
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
