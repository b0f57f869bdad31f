"""What a run asks of every site's DP-SGD: the typed settings behind the run config's
dp-sgd-* keys. Light on purpose (no torch, no Opacus): the run config is validated and
the training instruction is decoded where no training happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from privacy.accounting import ACCOUNTANTS

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
