"""Privacy accounting for DP-SGD: Opacus' own accountants, fed from recorded history.

An Opacus accountant is nothing but a history of ``(noise multiplier, sample rate,
steps)`` entries and a formula that composes them (Rényi DP, or the numerical
privacy-loss-random-variable accountant). A site's whole DP-SGD history is therefore
three numbers per round, which the ledger keeps; giving that history back to a fresh
accountant reproduces, exactly, what the accountant would say had it lived through
every round, restarts included. Nothing here keeps state of its own.

Opacus is imported on first use: it takes seconds to import and a site that never
trains privately should not pay for it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class MechanismSteps:
    """``steps`` applications of the Poisson-subsampled Gaussian mechanism (one accountant history entry)."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def as_opacus_history_entry(self) -> tuple[float, float, int]:
        return (self.noise_multiplier, self.sample_rate, self.steps)


def _accountant(name: str):
    if name not in ACCOUNTANTS:
        raise ValueError(f"accountant {name!r}: choose one of {', '.join(ACCOUNTANTS)}")
    from opacus.accountants.utils import create_accountant

    return create_accountant(mechanism=name)


def epsilon_spent(history: Iterable[MechanismSteps], delta: float, accountant: str) -> float:
    """ε after every entry of ``history`` composed, at ``delta``, by Opacus' ``accountant``.

    0 for an empty history (nothing released); infinite for a step without noise.
    """
    entries = [entry for entry in history if entry.steps > 0 and entry.sample_rate > 0]
    if not entries:
        return 0.0
    if any(entry.noise_multiplier <= 0 for entry in entries):
        return math.inf
    counter = _accountant(accountant)
    counter.history = [entry.as_opacus_history_entry() for entry in entries]
    return float(counter.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=256)
def noise_multiplier_for(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The smallest noise multiplier (to Opacus' tolerance, 0.01 in ε) that keeps
    ``steps`` steps at ``sample_rate`` within (``target_epsilon``, ``delta``)."""
    _accountant(accountant)  # validates the name
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
        )
    except ValueError as too_low:
        raise ValueError(
            f"no noise multiplier reaches ε={target_epsilon:g} at δ={delta:g} over {steps} steps "
            f"at sample rate {sample_rate:.4g} ({too_low})"
        ) from None
