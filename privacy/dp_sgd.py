"""Sample-level DP-SGD at a site, with Opacus; the protected unit is the patient.

What a "sample" is decides what is protected. A patient contributes a stack of
short-axis slices; if each slice were a record, DP-SGD would bound what one *slice*
can change, and a patient with ten slices could change the model ten times as much.
So the record is the patient:

* the task hands over a **patient-level dataset**: one item per patient, and each
  draw of a patient returns one of that patient's labelled slices, chosen by
  randomness that does not depend on any other patient (``tasks.lge.data``);
* Opacus' ``PrivacyEngine.make_private(poisson_sampling=True)`` turns the loader into
  a ``DPDataLoader``: every step includes every *patient* independently with
  probability ``q``, computes one gradient per sampled patient, clips it to
  ``max_grad_norm`` and adds Gaussian noise of ``noise_multiplier × max_grad_norm``;
* the loss must be a mean of per-slice losses (no batch-wide Dice or weighted-mean
  normalisation): otherwise one patient's data would move the other patients'
  "per-sample" gradients and clipping would bound nothing.

Then adding or removing one patient changes at most one clipped gradient per step, so
the Poisson-subsampled Gaussian mechanism that Opacus' accountants analyse is exactly
the mechanism that runs, and ε is patient-level. The alternative design, a fixed
number of slices stacked per patient, needs a model wrapper that folds slices into
the sample dimension and back; one slice per draw needs nothing but a dataset and
uses every stock Opacus path (hooks, functorch, ghost clipping).

Details that keep the guarantee honest:

* **Sample rate and steps are Opacus' own.** ``make_private`` sets the sample rate
  to ``1 / len(loader)`` and its sampler yields ``int(1 / sample_rate)`` batches per
  epoch (which is one fewer than ``len(loader)`` for some sizes, e.g. 93);
  :func:`plan_round` reproduces both, and :func:`make_private` checks that the
  wrapped loader agrees, so the budget check before a round and the accountant
  after it count the same steps.
* **Empty batches still release noise.** Poisson sampling can draw nobody. The
  U-Net cannot run on an empty batch (instance norm), and skipping the step would
  reveal that nobody was drawn, so :meth:`PrivateTraining.noise_only_step` takes
  an optimiser step from zero gradients plus noise, accounted like any other.
  (Opacus' ``rand_on_empty`` would feed a random sample instead, which doubles the
  sensitivity on that step.)
* **Randomness the server cannot know.** Poisson sampling and noise use generators
  seeded from the operating system's entropy, never from the run's seed, which the
  server chooses. (Opacus' ``secure_mode`` needs torchcsprng, which is not installed:
  noise comes from torch's Mersenne twister, as in Opacus' default mode.)
* **Data-independent terms after the noise.** FedProx's proximal term depends only
  on the current and global weights; its gradient is added after clipping and noise
  (post-processing), not to the per-sample loss, where Opacus would discard it.
* **No mixed precision.** GradScaler's loss scaling acts on ``.grad``, not on the
  per-sample gradients Opacus clips, so the task trains in float32 under DP.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from privacy.accounting import MechanismSteps, noise_multiplier_for
from privacy.dp_sgd_settings import (
    GRAD_SAMPLE_MODES,
    DpSgdRequest,
    request_problems,
    run_config_problems,
)

if TYPE_CHECKING:
    from opacus import GradSampleModule

__all__ = [
    "GRAD_SAMPLE_MODES",
    "PROTECTED_UNIT",
    "DpSgdRequest",
    "PrivateRoundPlan",
    "PrivateTraining",
    "make_private",
    "plan_round",
    "request_problems",
    "run_config_problems",
]

PROTECTED_UNIT = "patient"


@dataclass(frozen=True)
class PrivateRoundPlan:
    """One round of DP-SGD at one site, fixed before it trains (what the budget is checked on)."""

    protected_units: int  # patients in the training set: the records Poisson sampling draws from
    sample_rate: float  # probability that a patient is in a step's batch
    steps_per_epoch: int
    steps: int  # DP-SGD steps this round (epochs × steps per epoch, capped by max-local-steps)
    noise_multiplier: float
    max_grad_norm: float
    delta: float  # the δ the noise was chosen for (the run's)
    accountant: str
    grad_sample_mode: str = "hooks"
    protected_unit: str = PROTECTED_UNIT

    @property
    def mechanism(self) -> MechanismSteps:
        return MechanismSteps(self.noise_multiplier, self.sample_rate, self.steps)


def plan_round(
    request: DpSgdRequest,
    protected_units: int,
    batch_size: int,
    local_epochs: int,
    max_steps: int = 0,
) -> PrivateRoundPlan:
    """Sample rate, steps and noise for a round over ``protected_units`` patients.

    ``batch_size`` is the expected number of patients per step. With a target ε the
    noise multiplier is the one Opacus derives for the whole federation at this site:
    ``planned_rounds × steps`` steps at this site's sample rate.
    """
    if protected_units <= 0:
        return PrivateRoundPlan(
            0,
            0.0,
            0,
            0,
            request.noise_multiplier,
            request.max_grad_norm,
            request.delta,
            request.accountant,
            request.grad_sample_mode,
        )
    batches = math.ceil(protected_units / batch_size)  # len() of the task's DataLoader
    sample_rate = 1 / batches  # as PrivacyEngine.make_private sets it
    steps_per_epoch = int(1 / sample_rate)  # as Opacus' UniformWithReplacementSampler counts
    steps = local_epochs * steps_per_epoch
    if max_steps:
        steps = min(steps, max_steps)
    noise_multiplier = request.noise_multiplier or noise_multiplier_for(
        request.target_epsilon, request.delta, sample_rate, request.planned_rounds * steps, request.accountant
    )
    return PrivateRoundPlan(
        protected_units=protected_units,
        sample_rate=sample_rate,
        steps_per_epoch=steps_per_epoch,
        steps=steps,
        noise_multiplier=noise_multiplier,
        max_grad_norm=request.max_grad_norm,
        delta=request.delta,
        accountant=request.accountant,
        grad_sample_mode=request.grad_sample_mode,
    )


def secret_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from the operating system's entropy (not from the run's seed)."""
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


@dataclass
class PrivateTraining:
    """The Opacus-wrapped trio (and criterion) for one round, and its accountant."""

    module: GradSampleModule  # the caller's model in Opacus' wrapper (an nn.Module)
    optimizer: Any  # opacus DPOptimizer (or its fast-gradient-clipping variant)
    data_loader: DataLoader
    criterion: Callable[..., Any]
    engine: Any  # opacus PrivacyEngine
    plan: PrivateRoundPlan
    _closed: bool = field(default=False, repr=False)

    @property
    def accounted_steps(self) -> int:
        return sum(steps for _, _, steps in self.engine.accountant.history)

    def epsilon(self, delta: float) -> float:
        """ε of this round alone, from the engine's own accountant."""
        return float(self.engine.get_epsilon(delta)) if self.accounted_steps else 0.0

    def noise_only_step(self) -> None:
        """A step for a Poisson batch that drew no patient: zero gradients, full noise, accounted."""
        self.optimizer.zero_grad(set_to_none=True)
        for parameter in self.optimizer.params:
            parameter.grad = torch.zeros_like(parameter)
            parameter.grad_sample = parameter.new_zeros((0, *parameter.shape))  # hooks, functorch
            parameter._norm_sample = parameter.new_zeros((0,))  # ghost clipping reads the norms
        self.optimizer.step()
        for parameter in self.optimizer.params:
            # Left in place, ghost clipping's hooks would stack the next batch onto these
            # and fail ("'list' object has no attribute 'device'").
            parameter.grad_sample = None

    def close(self) -> None:
        """Detach Opacus' hooks and per-sample state from the caller's model."""
        if self._closed:
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.module.cleanup()  # removes the hooks and every attribute Opacus put on parameters
        self._closed = True


def make_private(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader,
    criterion: torch.nn.Module,
    plan: PrivateRoundPlan,
    data_independent_penalty: Callable[[], torch.Tensor] | None = None,
) -> PrivateTraining:
    """Wrap a task's model, optimiser, patient-level loader and per-sample loss for DP-SGD.

    ``data_loader`` iterates one item per protected unit with ``batch_size`` = the
    expected number of units per step; ``criterion`` returns the mean of per-sample
    losses and has a ``reduction`` attribute ("mean"; ghost clipping sets "none").
    ``data_independent_penalty`` (e.g. FedProx's proximal term) is a scalar of the
    parameters alone; its gradient is added after clipping and noise.
    """
    from opacus import PrivacyEngine

    if len(data_loader.dataset) != plan.protected_units:  # type: ignore[arg-type]
        raise ValueError(
            f"the round was planned for {plan.protected_units} {plan.protected_unit}s, "
            f"the loader holds {len(data_loader.dataset)}"  # type: ignore[arg-type]
        )
    device = next(module.parameters()).device
    engine = PrivacyEngine(accountant=plan.accountant)
    wrapped = engine.make_private(
        module=module,
        optimizer=optimizer,
        criterion=criterion,
        data_loader=_with_secret_sampling(data_loader),
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode=plan.grad_sample_mode,
        noise_generator=secret_generator(device),
    )
    if len(wrapped) == 4:  # ghost clipping also wraps the criterion
        private_module, private_optimizer, private_criterion, private_loader = wrapped
    else:
        (private_module, private_optimizer, private_loader), private_criterion = wrapped, criterion
    if len(private_loader) != plan.steps_per_epoch or not math.isclose(private_loader.sample_rate, plan.sample_rate):
        raise RuntimeError(
            f"Opacus samples {len(private_loader)} batches per epoch at rate {private_loader.sample_rate:.6g}; "
            f"the round was planned with {plan.steps_per_epoch} at {plan.sample_rate:.6g}"
        )
    if data_independent_penalty is not None:
        _add_gradient_after_noise(private_optimizer, data_independent_penalty)
    return PrivateTraining(private_module, private_optimizer, private_loader, private_criterion, engine, plan)


def _with_secret_sampling(data_loader: DataLoader) -> DataLoader:
    """The same loader with a generator the server cannot know; Opacus' Poisson sampler inherits it."""
    return DataLoader(
        data_loader.dataset,
        batch_size=data_loader.batch_size,
        collate_fn=data_loader.collate_fn,
        num_workers=data_loader.num_workers,
        pin_memory=data_loader.pin_memory,
        generator=secret_generator(),
    )


def _add_gradient_after_noise(optimizer: Any, penalty: Callable[[], torch.Tensor]) -> None:
    """Chain onto the step hook (called after clipping, noise and scaling, before the update)."""
    accountant_hook = optimizer.step_hook
    parameters = list(optimizer.params)

    def step_hook(dp_optimizer: Any) -> None:
        if accountant_hook is not None:
            accountant_hook(dp_optimizer)
        with torch.enable_grad():
            gradients = torch.autograd.grad(penalty(), parameters, allow_unused=True)
        for parameter, gradient in zip(parameters, gradients, strict=True):
            if gradient is not None:
                parameter.grad.add_(gradient)

    optimizer.step_hook = step_hook
