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
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils.data import DataLoader

from privacy.accounting import ACCOUNTANTS, MechanismSteps, noise_multiplier_for

PROTECTED_UNIT = "patient"
# "ew" (expanded weights) cannot differentiate conv_transpose2d, which the U-Net's
# decoder uses; see benchmarks/dp_sgd_throughput.py for the speed of the others.
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ghost")


@dataclass(frozen=True)
class DpSgdRequest:
    """What a run asks of every site's DP-SGD (the run config's dp-sgd-* keys).

    Either ``target_epsilon`` > 0 (each site spends at most that ε, at ``delta``, over
    ``planned_rounds`` rounds) or an explicit ``noise_multiplier`` > 0.
    """

    max_grad_norm: float = 1.0
    delta: float = 1e-5
    noise_multiplier: float = 0.0
    target_epsilon: float = 8.0
    planned_rounds: int = 1
    accountant: str = "rdp"
    grad_sample_mode: str = "hooks"

    def __post_init__(self) -> None:
        problems = request_problems(self)
        if problems:
            raise ValueError("invalid DP-SGD settings: " + "; ".join(problems))


def request_problems(request: DpSgdRequest | SimpleNamespace) -> list[str]:
    problems = []
    if (request.target_epsilon > 0) == (request.noise_multiplier > 0):
        problems.append("set exactly one of dp-sgd-target-epsilon > 0 or dp-sgd-noise-multiplier > 0")
    if request.target_epsilon < 0 or request.noise_multiplier < 0:
        problems.append("dp-sgd-target-epsilon and dp-sgd-noise-multiplier must not be negative")
    if not 0.0 < request.delta < 1.0:
        problems.append(f"dp-sgd-delta={request.delta!r} must be in (0, 1)")
    if request.max_grad_norm <= 0:
        problems.append(f"dp-sgd-max-grad-norm={request.max_grad_norm!r} must be positive")
    if request.planned_rounds < 1:
        problems.append("the planned number of rounds must be at least 1")
    if request.accountant not in ACCOUNTANTS:
        problems.append(f"dp-sgd-accountant={request.accountant!r}: choose one of {', '.join(ACCOUNTANTS)}")
    if request.grad_sample_mode not in GRAD_SAMPLE_MODES:
        problems.append(
            f"dp-sgd-grad-sample-mode={request.grad_sample_mode!r}: choose one of {', '.join(GRAD_SAMPLE_MODES)}"
        )
    return problems


def run_config_problems(config: Any) -> list[str]:
    """What is wrong with a run config's dp-sgd-* keys (``server.config.FederationConfig``'s
    ``dp_sgd*`` attributes, read as attributes so that privacy/ does not import the
    server). The accountant and mode names are checked even when DP-SGD is off."""
    values = DpSgdRequest().__dict__ | {
        "accountant": config.dp_sgd_accountant,
        "grad_sample_mode": config.dp_sgd_grad_sample_mode,
    }
    if config.dp_sgd:
        values |= {
            "max_grad_norm": config.dp_sgd_max_grad_norm,
            "delta": config.dp_sgd_delta,
            "noise_multiplier": config.dp_sgd_noise_multiplier,
            "target_epsilon": config.dp_sgd_target_epsilon,
            "planned_rounds": config.num_server_rounds,
        }
    return request_problems(SimpleNamespace(**values))


def train_config(config: Any) -> dict[str, bool | int | float | str]:
    """The dp-sgd-* entries of a round's train ConfigRecord (sites build their request from them)."""
    return {
        "dp-sgd": bool(config.dp_sgd),
        "dp-sgd-target-epsilon": float(config.dp_sgd_target_epsilon),
        "dp-sgd-noise-multiplier": float(config.dp_sgd_noise_multiplier),
        "dp-sgd-delta": float(config.dp_sgd_delta),
        "dp-sgd-max-grad-norm": float(config.dp_sgd_max_grad_norm),
        "dp-sgd-accountant": str(config.dp_sgd_accountant),
        "dp-sgd-grad-sample-mode": str(config.dp_sgd_grad_sample_mode),
        "dp-sgd-planned-rounds": int(config.num_server_rounds),
    }


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
            0, 0.0, 0, 0, request.noise_multiplier, request.max_grad_norm, request.delta,
            request.accountant, request.grad_sample_mode,
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

    module: torch.nn.Module
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
    if len(private_loader) != plan.steps_per_epoch or not math.isclose(
        private_loader.sample_rate, plan.sample_rate
    ):
        raise RuntimeError(
            f"Opacus samples {len(private_loader)} batches per epoch at rate {private_loader.sample_rate:.6g}; "
            f"the round was planned with {plan.steps_per_epoch} at {plan.sample_rate:.6g}"
        )
    if data_independent_penalty is not None:
        _add_gradient_after_noise(private_optimizer, data_independent_penalty)
    return PrivateTraining(
        private_module, private_optimizer, private_loader, private_criterion, engine, plan
    )


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
