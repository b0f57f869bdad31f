"""LGE scar segmentation: the task the Flower apps call (train / evaluate), plain PyTorch.

Each site's labelled cases are split once and for all into training and
validation cases (``tasks.base.validation_case_ids``); ``train`` uses the first,
``evaluate`` scores the second case by case on the original image grid.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.data import Dataset
from torch.utils.data import DataLoader

from cmr.store import CaseStore
from tasks.base import CaseRecord, Evaluation, TrainOutcome, TrainSettings, patient_keys, validation_case_ids
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
    autocast_for,
    most_probable_class,
    predict_stack,
    probabilities_on_original_grid,
    slice_logits,
)
from tasks.lge.loss import DEFAULT_CLASS_WEIGHTS, per_slice_segmentation_loss, segmentation_loss
from tasks.lge.metrics import METRIC_NAMES, SUMMARY_METRICS, case_metrics, nan_mean
from tasks.lge.network import build_unet
from tasks.sampling import GROUP_BALANCED, group_balanced_sampler

log = logging.getLogger(__name__)


@dataclass
class LgeScarSegmentation:
    """Segment healthy myocardium and scar in short-axis LGE; score myocardium, scar and burden."""

    name: str = "lge"
    metric_names: tuple[str, ...] = METRIC_NAMES
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
        """The store's labelled cases, preprocessed: (training cases, validation cases)."""
        cases = preprocessed_cases(store, self.geometry)
        validation_ids = validation_case_ids((c.entry for c in cases), self.validation_fraction)
        validation = [c for c in cases if c.entry.case_id in validation_ids]
        training = [c for c in cases if c.entry.case_id not in validation_ids]
        return training, validation

    def training_patients(self, store: CaseStore) -> int:
        return len(self.patient_dataset(store))

    def patient_dataset(self, store: CaseStore, seed: int = 0) -> OneSlicePerPatient:
        """The training set as DP-SGD samples it: one item per patient, one slice per draw."""
        training_cases, _ = self.split(store)
        patients = patient_keys(store, (case.entry for case in training_cases))
        augmentation = training_augmentation(seed) if self.augment else None
        return OneSlicePerPatient(training_cases, patients, augmentation, seed)

    def training_loader(self, samples: list[dict], settings: TrainSettings, device: torch.device) -> DataLoader:
        """Batches of training slices (without DP-SGD), in the order the run config asks for.

        By default a shuffled pass over every slice; with ``fairness-mitigation =
        group-balanced``, slices drawn with replacement so that each group of the
        balancing attribute is drawn equally often (tasks/sampling.py). Either way an
        epoch is ``len(samples)`` slices, so the number of steps does not change.
        """
        generator = torch.Generator().manual_seed(settings.seed)
        order: dict = {"shuffle": True, "generator": generator}
        if settings.fairness_mitigation == GROUP_BALANCED:
            groups = [sample["attributes"][settings.balance_attribute] for sample in samples]
            order = {"sampler": group_balanced_sampler(groups, generator)}
        return DataLoader(
            Dataset(samples, transform=training_augmentation(settings.seed) if self.augment else None),
            batch_size=settings.batch_size,
            num_workers=0,
            pin_memory=device.type == "cuda",
            **order,
        )

    def train(
        self,
        model: torch.nn.Module,
        store: CaseStore,
        settings: TrainSettings,
        device: torch.device,
    ) -> TrainOutcome:
        """Local training; with ``settings.privacy``, DP-SGD over patients (see privacy.dp_sgd)."""
        started = time.perf_counter()
        training_cases, _ = self.split(store)
        samples = [sample for case in training_cases for sample in case.slice_samples()]
        plan = settings.privacy
        if not samples or (plan is not None and plan.steps == 0):
            log.warning("no labelled training slices in %s: nothing to train", store.root)
            return TrainOutcome(len(samples), 0, 0, math.nan, time.perf_counter() - started)

        model.to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        global_weights = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        private = None
        if plan is None:
            loader = self.training_loader(samples, settings, device)
            loss_function = segmentation_loss(self.class_weights).to(device)
        else:
            from privacy.dp_sgd import make_private

            private = make_private(
                model,
                optimizer,
                DataLoader(
                    self.patient_dataset(store, settings.seed),
                    batch_size=settings.batch_size,  # expected patients per step
                    num_workers=0,
                    pin_memory=device.type == "cuda",
                ),
                per_slice_segmentation_loss(self.class_weights).to(device),
                plan,
                data_independent_penalty=(
                    (lambda local=model: proximal_term(local, global_weights, settings.proximal_mu))
                    if settings.proximal_mu > 0
                    else None
                ),
            )
            model, optimizer, loader, loss_function = private.module, private.optimizer, private.data_loader, private.criterion
        # Mixed precision only without DP: loss scaling acts on .grad, not on the
        # per-sample gradients that Opacus clips.
        scaler = _grad_scaler(device) if private is None else torch.amp.GradScaler(device.type, enabled=False)
        precision = (lambda: autocast_for(device)) if private is None else contextlib.nullcontext

        # Under DP-SGD the plan's steps are the ones the site's budget was checked on.
        epochs, max_steps = settings.local_epochs, settings.max_steps
        if plan is not None:
            epochs, max_steps = math.ceil(plan.steps / plan.steps_per_epoch), plan.steps

        steps, examples_seen, loss_total, loss_steps = 0, 0, 0.0, 0
        try:
            with untracked_augmentation():  # the loader augments as it yields
                for batch in _batches(loader, epochs, max_steps):
                    images, labels = _images_and_labels(batch, device)
                    optimizer.zero_grad(set_to_none=True)
                    steps += 1
                    if private is not None and images.shape[0] == 0:  # Poisson sampling drew nobody
                        private.noise_only_step()
                        continue
                    with precision():
                        data_loss = loss_function(model(images), labels)
                    loss = data_loss if private is not None else data_loss.float()
                    if settings.proximal_mu > 0 and private is None:
                        loss = loss + proximal_term(model, global_weights, settings.proximal_mu)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    examples_seen += images.shape[0]
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
        balanced = settings.fairness_mitigation == GROUP_BALANCED
        log.info(
            "trained %d steps%s on %d slices (%d cases), mean loss %.4f, %.1f slices/s",
            steps,
            " with DP-SGD" if private is not None else (f", {settings.balance_attribute}-balanced" if balanced else ""),
            len(samples), len(training_cases),
            mean_loss, examples_seen / max(seconds, 1e-9),
        )
        return TrainOutcome(
            num_examples=len(samples),
            num_examples_seen=examples_seen,
            steps=steps,
            mean_loss=mean_loss,
            seconds=seconds,
        )

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
            reference = tissue_to_class(store.load(case.entry).mask)
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

    def predict_stack(
        self, model: torch.nn.Module, image: np.ndarray, spacing: Sequence[float], device: torch.device
    ) -> np.ndarray:
        """Tissue-label mask (0, 2 myocardium, 3 scar) of a whole stack on its original grid."""
        return predict_stack(model, image, spacing, device, self.geometry)


def _batches(loader: DataLoader, epochs: int, max_steps: int) -> Iterator[dict]:
    """The loader's batches over ``epochs`` epochs, stopping after ``max_steps`` (0: no cap)."""
    steps = 0
    for _ in range(epochs):
        for batch in loader:
            if max_steps and steps >= max_steps:
                return
            steps += 1
            yield batch


def _images_and_labels(batch: dict | Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice batches are MONAI dicts; patient batches (DP-SGD) are (image, label) tuples."""
    images, labels = (batch[IMAGE], batch[LABEL]) if isinstance(batch, dict) else batch
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True).long()


def proximal_term(model: torch.nn.Module, global_weights: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx: mu/2 · ||w − w_global||² over the trainable parameters."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    squared = sum(torch.sum((p.float() - g.float()) ** 2) for p, g in zip(trainable, global_weights, strict=True))
    return 0.5 * mu * squared


def _grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling only for fp16 autocast on CUDA; a no-op otherwise (bf16, CPU)."""
    fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=fp16)
