"""LGE scar segmentation: the task the Flower apps call (train / evaluate), plain PyTorch.

Each site's labelled cases are split once and for all, by patient, into training
and validation cases (``tasks.base.validation_case_ids``); the shared loop
(``tasks.training``) trains on the first, ``evaluate`` scores the second case by
case on the original image grid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from monai.data import Dataset

from cmr.phantom import generate_consortium
from cmr.series_kinds import SeriesKind
from cmr.store import CaseStore
from fairness.spec import AuditSpec
from tasks.base import (
    CaseRecord,
    DemoRecipe,
    Evaluation,
    ModelDescription,
    Prediction,
    RunPlot,
    Task,
    TrainingExamples,
    patient_keys,
    validation_case_ids,
)
from tasks.lge.audit import LGE_AUDIT_SPEC
from tasks.lge.card import model_description
from tasks.lge.classes import tissue_to_class
from tasks.lge.data import (
    IMAGE,
    LABEL,
    OneSlicePerPatient,
    PreprocessedCase,
    SliceGeometry,
    preprocessed_cases,
    training_augmentation,
    untracked_augmentation,
)
from tasks.lge.inference import (
    most_probable_class,
    predict_stack,
    probabilities_on_original_grid,
    slice_logits,
)
from tasks.lge.loss import DEFAULT_CLASS_WEIGHTS, per_slice_segmentation_loss, segmentation_loss
from tasks.lge.metrics import METRIC_NAMES, SUMMARY_METRICS, case_metrics, nan_mean
from tasks.lge.network import build_unet


@dataclass(frozen=True)
class _Unit:
    """What the split puts on one side: a patient's cases, hashed by the house split as a case id would be."""

    case_id: str


@dataclass
class LgeScarSegmentation(Task):
    """Segment healthy myocardium and scar in short-axis LGE; score myocardium, scar and burden."""

    name: ClassVar[str] = "lge"
    description: ClassVar[str] = "Segment healthy myocardium and scar in short-axis LGE cardiac MR; report scar burden"
    series_kinds: ClassVar[tuple[str, ...]] = (SeriesKind.LGE_STACK,)
    metric_names: ClassVar[tuple[str, ...]] = METRIC_NAMES
    audit_spec: ClassVar[AuditSpec | None] = LGE_AUDIT_SPEC
    mixed_precision: ClassVar[bool] = True
    demo: ClassVar[DemoRecipe | None] = DemoRecipe(
        generate=generate_consortium,
        # 60 patients a hospital: about 13 validation patients each, so that groups of 10
        # or more reach the fairness audit (a site withholds smaller ones) and the model
        # learns scar as well as myocardium. 10 rounds: on a 2-core machine the whole demo
        # took 3 min 23 s, consortium myocardium Dice 0.85 (README, "How long it takes").
        cases_per_site=60,
        rounds=10,
        model_name="lge-scar",
        example_series="*/*_LGE_SAX",
    )

    validation_fraction: float = 0.25
    geometry: SliceGeometry = field(default_factory=SliceGeometry)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = 0
    class_weights: tuple[float, float, float] = DEFAULT_CLASS_WEIGHTS
    augment: bool = True
    scar_presence_threshold_percent: float = 1.0

    def build_model(self) -> torch.nn.Module:
        return build_unet(self.channels, self.num_res_units)

    def split(self, store: CaseStore) -> tuple[list[PreprocessedCase], list[PreprocessedCase]]:
        """The store's labelled cases, preprocessed: (training cases, validation cases).

        Split by patient with the house rule of tasks.base, so that no patient's series sit
        on both sides; a case whose patient is unknown (no stored header) is its own unit.
        """
        cases = preprocessed_cases(store, self.geometry)
        patients = patient_keys(store, (c.entry for c in cases))
        unit_of = {}
        for case in cases:
            patient = patients[case.entry.case_id]
            unit_of[case.entry.case_id] = patient if patient.startswith("patient:") else case.entry.case_id
        units = [_Unit(case_id=unit) for unit in sorted(set(unit_of.values()))]
        chosen = validation_case_ids(units, self.validation_fraction)
        validation = [c for c in cases if unit_of[c.entry.case_id] in chosen]
        training = [c for c in cases if unit_of[c.entry.case_id] not in chosen]
        return training, validation

    # ---------------------------------------------------------------- training (tasks.training runs it)

    def training_examples(self, store: CaseStore, seed: int) -> TrainingExamples:
        """Every labelled training slice, augmented as drawn."""
        training_cases, _ = self.split(store)
        samples = [sample for case in training_cases for sample in case.slice_samples()]
        return TrainingExamples(
            Dataset(samples, transform=training_augmentation(seed) if self.augment else None),
            [sample["attributes"] for sample in samples],
            f"{len(samples)} slices of {len(training_cases)} cases",
        )

    def patient_examples(self, store: CaseStore, seed: int = 0) -> OneSlicePerPatient:
        """The training set as DP-SGD samples it: one item per patient, one slice per draw."""
        training_cases, _ = self.split(store)
        patients = patient_keys(store, (case.entry for case in training_cases))
        augmentation = training_augmentation(seed) if self.augment else None
        return OneSlicePerPatient(training_cases, patients, augmentation, seed)

    def loss(self) -> torch.nn.Module:
        return segmentation_loss(self.class_weights)

    def per_example_loss(self) -> torch.nn.Module:
        return per_slice_segmentation_loss(self.class_weights)

    def batch_to_device(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Slice batches are MONAI dicts; patient batches (DP-SGD) are (image, label) tuples."""
        images, labels = (batch[IMAGE], batch[LABEL]) if isinstance(batch, dict) else batch
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True).long()

    def augmenting(self) -> contextlib.AbstractContextManager[None]:
        return untracked_augmentation()

    # ---------------------------------------------------------------- evaluation

    def evaluate(
        self,
        model: torch.nn.Module,
        store: CaseStore,
        device: torch.device,
        site_id: str,
    ) -> Evaluation:
        _, validation_cases = self.split(store)
        model.to(device)
        loss_function = segmentation_loss(self.class_weights)
        records, losses = [], []
        for case in validation_cases:
            labelled = list(case.labelled_slices)
            logits = slice_logits(model, case.image.as_tensor(), device)
            losses.append(float(loss_function(logits[labelled], case.label[labelled, None].long())))
            restored = probabilities_on_original_grid(torch.softmax(logits, dim=1), case.image, self.geometry)
            predicted = most_probable_class(restored)
            mask = store.load(case.entry).mask
            assert mask is not None, f"{case.entry.case_id}: preprocessed_cases keeps labelled cases only"
            reference = tissue_to_class(mask)
            entry = case.entry
            metrics, calls = case_metrics(
                reference[labelled],
                predicted[labelled],
                voxel_volume_mm3=entry.row_spacing_mm * entry.column_spacing_mm * entry.slice_spacing_mm,
                scar_presence_threshold_percent=self.scar_presence_threshold_percent,
            )
            records.append(CaseRecord(entry.case_id, site_id, entry.attributes, metrics, calls))
        summary = {name: nan_mean([r.metrics[name] for r in records]) for name in SUMMARY_METRICS}
        summary["loss"] = nan_mean(losses)
        return Evaluation(records=records, summary=summary, num_examples=len(records))

    # ---------------------------------------------------------------- outputs, model card, inference

    @property
    def headline(self) -> Mapping[str, str]:
        return {
            "dice_myocardium": "dice_myocardium",
            "dice_scar": "dice_scar",
            "scar_burden_abs_error_percent": "scar_burden_abs_error",
        }

    @property
    def headline_labels(self) -> Mapping[str, str]:
        return {
            "dice_myocardium": "Dice myocardium",
            "dice_scar": "Dice scar",
            "scar_burden_abs_error_percent": "scar burden error (% points)",
        }

    @property
    def plots(self) -> tuple[RunPlot, ...]:
        return (
            RunPlot(
                "dice_plot",
                "dice_per_round.png",
                (
                    ("dice_myocardium", "Myocardium Dice on each site's validation cases"),
                    ("dice_scar", "Scar Dice on each site's validation cases"),
                ),
                y_label="Dice (0–1, higher is better)",
                y_range=(0.0, 1.0),
            ),
        )

    def describe_model(self) -> ModelDescription:
        return model_description(self)

    def with_network(self, network: Mapping[str, Any]) -> LgeScarSegmentation:
        if "channels" not in network:
            return self
        return replace(self, channels=tuple(network["channels"]), num_res_units=int(network.get("num_res_units", 0)))

    def predict_stack(
        self, model: torch.nn.Module, image: np.ndarray, spacing: Sequence[float], device: torch.device
    ) -> np.ndarray:
        """Tissue-label mask (0, 2 myocardium, 3 scar) of a whole stack on its original grid."""
        return predict_stack(model, image, spacing, device, self.geometry)

    def predict(
        self,
        model: torch.nn.Module,
        series_dir: Path,
        out_dir: Path,
        device: torch.device,
        provenance: Mapping[str, Any],
    ) -> Prediction:
        from tasks.lge.predict import segment_series

        return segment_series(self, model, series_dir, out_dir, device, provenance)
