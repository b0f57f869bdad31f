"""The one local-training loop every task runs (as nnU-Net's single trainer with hooks).

A task supplies its model, its examples and its losses (``tasks.base.Task``); this
loop owns everything around them, the same for every task:

* the order of examples: a shuffled pass, or drawn group-balanced by a subgroup
  attribute (``fairness-mitigation``, ``tasks.sampling``);
* DP-SGD: the task's patient-level set, per-example loss and model are handed to
  ``privacy.dp_sgd.make_private``, which owns clipping, noise and accounting; the loop
  takes exactly the planned steps, and a Poisson batch that drew nobody still takes a
  noise-only step;
* FedProx's proximal term (after the noise under DP-SGD: it is data-independent);
* mixed precision on CUDA for tasks that ask for it, never under DP-SGD (loss scaling
  acts on ``.grad``, not on the per-sample gradients Opacus clips).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from cmr.store import CaseStore
from tasks.base import TrainingExamples, TrainOutcome, TrainSettings
from tasks.sampling import GROUP_BALANCED, group_balanced_sampler

if TYPE_CHECKING:
    from privacy.dp_sgd import PrivateTraining
    from tasks.base import Task

log = logging.getLogger(__name__)


def train_locally(
    task: Task, model: torch.nn.Module, store: CaseStore, settings: TrainSettings, device: torch.device
) -> TrainOutcome:
    """One round of local training; with ``settings.privacy``, DP-SGD over patients."""
    started = time.perf_counter()
    examples = task.training_examples(store, settings.seed)
    plan = settings.privacy
    if not len(examples) or (plan is not None and plan.steps == 0):
        log.warning("no training examples for task %s in %s: nothing to train", task.name, store.root)
        return TrainOutcome(len(examples), 0, 0, math.nan, time.perf_counter() - started)

    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    global_weights = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    private: PrivateTraining | None = None
    epochs, max_steps = settings.local_epochs, settings.max_steps
    if plan is None:
        loader: Iterable[Any] = training_loader(examples, settings, device)
        loss_function: Callable[..., torch.Tensor] = task.loss().to(device)
    else:
        from privacy.dp_sgd import make_private

        private = make_private(
            model,
            optimizer,
            DataLoader(
                task.patient_examples(store, settings.seed),
                batch_size=settings.batch_size,  # expected patients per step
                num_workers=0,
                pin_memory=device.type == "cuda",
            ),
            task.per_example_loss().to(device),
            plan,
            data_independent_penalty=(
                # bound to the model itself now: the name is rebound to Opacus' wrapper below
                functools.partial(proximal_term, model, global_weights, settings.proximal_mu)
                if settings.proximal_mu > 0
                else None
            ),
        )
        model, optimizer, loader, loss_function = (
            private.module,
            private.optimizer,
            private.data_loader,
            private.criterion,
        )
        # The plan's steps are the ones the site's budget was checked on.
        epochs, max_steps = math.ceil(plan.steps / plan.steps_per_epoch), plan.steps
    mixed = task.mixed_precision and private is None
    scaler = grad_scaler(device) if mixed else torch.amp.GradScaler(device.type, enabled=False)
    precision = (lambda: autocast_for(device)) if mixed else contextlib.nullcontext

    steps, examples_seen, loss_total, loss_steps = 0, 0, 0.0, 0
    try:
        with task.augmenting():  # the loader augments as it yields
            for batch in epochs_of(loader, epochs, max_steps):
                inputs, targets = task.batch_to_device(batch, device)
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                if private is not None and inputs.shape[0] == 0:  # Poisson sampling drew nobody
                    private.noise_only_step()
                    continue
                with precision():
                    data_loss = loss_function(model(inputs), targets)
                # Opacus' ghost clipping returns its own loss type, which has no .float()
                loss = data_loss if private is not None else data_loss.float()
                if settings.proximal_mu > 0 and private is None:
                    loss = loss + proximal_term(model, global_weights, settings.proximal_mu)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                examples_seen += inputs.shape[0]
                loss_total += float(data_loss.detach())
                loss_steps += 1
        if plan is not None and private is not None and not private.accounted_steps == steps == plan.steps:
            raise RuntimeError(
                f"DP-SGD planned {plan.steps} steps, took {steps}, Opacus accounted {private.accounted_steps}"
            )
    finally:
        if private is not None:
            private.close()
    seconds = time.perf_counter() - started
    mean_loss = loss_total / loss_steps if loss_steps else math.nan
    balanced = settings.fairness_mitigation == GROUP_BALANCED and private is None
    log.info(
        "%s: trained %d steps%s on %s, mean loss %.4f, %.1f examples/s",
        task.name,
        steps,
        " with DP-SGD" if private is not None else (f", {settings.balance_attribute}-balanced" if balanced else ""),
        examples.description,
        mean_loss,
        examples_seen / max(seconds, 1e-9),
    )
    return TrainOutcome(len(examples), examples_seen, steps, mean_loss, seconds)


def training_loader(examples: TrainingExamples, settings: TrainSettings, device: torch.device) -> DataLoader:
    """Batches of training examples (without DP-SGD), in the order the run config asks for.

    By default a shuffled pass over every example; with ``fairness-mitigation =
    group-balanced``, examples drawn with replacement so that each group of the
    balancing attribute is drawn equally often (tasks/sampling.py). Either way an
    epoch is ``len(examples)`` draws, so the number of steps does not change.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    order: dict[str, Any] = {"shuffle": True, "generator": generator}
    if settings.fairness_mitigation == GROUP_BALANCED:
        groups = [attributes[settings.balance_attribute] for attributes in examples.attributes]
        order = {"sampler": group_balanced_sampler(groups, generator)}
    return DataLoader(
        examples.dataset, batch_size=settings.batch_size, num_workers=0, pin_memory=device.type == "cuda", **order
    )


def epochs_of(loader: Iterable[Any], epochs: int, max_steps: int) -> Iterator[Any]:
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
    squared = sum(
        (torch.sum((p.float() - g.float()) ** 2) for p, g in zip(trainable, global_weights, strict=True)),
        torch.zeros(()),
    )
    return 0.5 * mu * squared


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA (bf16 where supported, else fp16); plain fp32 elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling only for fp16 autocast on CUDA; a no-op otherwise (bf16, CPU)."""
    fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=fp16)
