"""LGE scar segmentation: the task the Flower apps call (train / evaluate), plain PyTorch.

Each site's labelled cases are split once and for all into training and
validation cases (``tasks.base.validation_case_ids``); ``train`` uses the first,
``evaluate`` scores the second case by case on the original image grid.
"""

from __future__ import annotations

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
from tasks.base import CaseRecord, Evaluation, TrainOutcome, TrainSettings, validation_case_ids
from tasks.lge.classes import tissue_to_class
from tasks.lge.data import IMAGE, LABEL, PreprocessedCase, SliceGeometry, preprocessed_cases, training_augmentation
from tasks.lge.inference import autocast_for, predict_stack, probabilities_on_original_grid, slice_logits
from tasks.lge.loss import DEFAULT_CLASS_WEIGHTS, segmentation_loss
from tasks.lge.metrics import METRIC_NAMES, SUMMARY_METRICS, case_metrics, nan_mean
from tasks.lge.network import build_unet

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

    def train(
        self,
        model: torch.nn.Module,
        store: CaseStore,
        settings: TrainSettings,
        device: torch.device,
    ) -> TrainOutcome:
        started = time.perf_counter()
        training_cases, _ = self.split(store)
        samples = [sample for case in training_cases for sample in case.slice_samples()]
        if not samples:
            log.warning("no labelled training slices in %s: nothing to train", store.root)
            return TrainOutcome(0, 0, 0, math.nan, time.perf_counter() - started)

        dataset = Dataset(samples, transform=training_augmentation(settings.seed) if self.augment else None)
        loader = DataLoader(
            dataset,
            batch_size=settings.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(settings.seed),
            num_workers=0,
            pin_memory=device.type == "cuda",
        )
        model.to(device).train()
        loss_function = segmentation_loss(self.class_weights).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        scaler = _grad_scaler(device)
        global_weights = [p.detach().clone() for p in model.parameters() if p.requires_grad]

        steps, examples_seen, loss_total = 0, 0, 0.0
        for batch in _batches(loader, settings.local_epochs, settings.max_steps):
            images = batch[IMAGE].to(device, non_blocking=True)
            labels = batch[LABEL].to(device, non_blocking=True).long()
            optimizer.zero_grad(set_to_none=True)
            with autocast_for(device):
                data_loss = loss_function(model(images), labels)
            loss = data_loss.float()
            if settings.proximal_mu > 0:
                loss = loss + proximal_term(model, global_weights, settings.proximal_mu)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            steps += 1
            examples_seen += images.shape[0]
            loss_total += float(data_loss.detach())
        seconds = time.perf_counter() - started
        mean_loss = loss_total / steps if steps else math.nan
        log.info(
            "trained %d steps on %d slices (%d cases), mean loss %.4f, %.1f slices/s",
            steps, len(samples), len(training_cases), mean_loss, examples_seen / max(seconds, 1e-9),
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
            predicted = restored.argmax(dim=1).to(torch.uint8).numpy()
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


def proximal_term(model: torch.nn.Module, global_weights: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx: mu/2 · ||w − w_global||² over the trainable parameters."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    squared = sum(torch.sum((p.float() - g.float()) ** 2) for p, g in zip(trainable, global_weights, strict=True))
    return 0.5 * mu * squared


def _grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling only for fp16 autocast on CUDA; a no-op otherwise (bf16, CPU)."""
    fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=fp16)
