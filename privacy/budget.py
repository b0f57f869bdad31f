"""Each site owns its privacy budget: it decides, before a round, whether to train.

A site states its budget in ``site.toml``::

    [privacy]
    max-epsilon = 8.0   # the most ε its patients may ever spend, all runs together
    delta = 1e-5        # the δ that ε is stated at (default: the run's dp-sgd-delta)

Before a DP-SGD round the site computes what its cumulative ε would be after the
round's planned steps (ledger history + this round, with the run's accountant); if
that exceeds ``max-epsilon`` it declines the round and says so, with the numbers.
A site that has a budget also declines training *without* DP-SGD, whose ε is
unbounded. A site without a ``[privacy]`` table trains whatever it is asked, and
still records every DP-SGD round in its ledger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmrfl.protocol import Metric
from privacy.accounting import epsilon_spent
from privacy.ledger import DECLINED, TRAINED, LedgerEntry, PrivacyLedger

if TYPE_CHECKING:  # not at run time: privacy.dp_sgd imports torch, and a site's key-exchange
    from privacy.dp_sgd import PrivateRoundPlan  # messages load this module without it

# The Error code of a ClientApp reply that declines a round for the site's budget
# (Flower's own codes are 0-8).
BUDGET_DECLINED_ERROR_CODE = 4030

# Every site's train reply carries these keys (zeros with dp-sgd 0 when DP-SGD is off),
# since Flower aggregates only replies whose MetricRecords share one key set.
PRIVACY_METRIC_KEYS = tuple(
    key.value
    for key in (
        Metric.DP_SGD,
        Metric.DP_EPSILON,
        Metric.DP_DELTA,
        Metric.DP_NOISE_MULTIPLIER,
        Metric.DP_SAMPLE_RATE,
        Metric.DP_STEPS,
    )
)


class SiteBudgetError(ValueError):
    """The [privacy] table of a site.toml has a value the site cannot run with."""


@dataclass(frozen=True)
class SiteBudget:
    max_epsilon: float
    delta: float | None = None  # None: state ε at the run's δ


def site_budget_from(table: Mapping[str, Any], source: Path | str) -> SiteBudget:
    """The ``[privacy]`` table of a site.toml, validated; errors name the file and key."""
    known = {"max-epsilon", "delta"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise SiteBudgetError(f"{source}: [privacy] has unknown key(s) {', '.join(unknown)}; known: max-epsilon, delta")
    if "max-epsilon" not in table:
        raise SiteBudgetError(f"{source}: [privacy] needs max-epsilon (the most ε this site's patients may spend)")
    try:
        max_epsilon = float(table["max-epsilon"])
        delta = None if "delta" not in table else float(table["delta"])
    except (TypeError, ValueError):
        raise SiteBudgetError(f"{source}: [privacy] max-epsilon and delta must be numbers") from None
    if not max_epsilon > 0:
        raise SiteBudgetError(f"{source}: [privacy] max-epsilon={max_epsilon!r} must be positive")
    if delta is not None and not 0 < delta < 1:
        raise SiteBudgetError(f"{source}: [privacy] delta={delta!r} must be in (0, 1)")
    return SiteBudget(max_epsilon, delta)


@dataclass(frozen=True)
class PrivacySpend:
    """What a site reports after a DP-SGD round (crosses the network as scalars)."""

    epsilon: float  # cumulative, all the site's DP-SGD rounds so far
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int  # this round

    def as_metrics(self) -> dict[str, float]:
        return dict(
            zip(
                PRIVACY_METRIC_KEYS,
                (1.0, self.epsilon, self.delta, self.noise_multiplier, self.sample_rate, float(self.steps)),
                strict=True,
            )
        )


def privacy_metrics(spend: PrivacySpend | None) -> dict[str, float]:
    """The reply's privacy scalars; all zero (``dp-sgd`` 0) for a round without DP-SGD."""
    return spend.as_metrics() if spend is not None else dict.fromkeys(PRIVACY_METRIC_KEYS, 0.0)


class SitePrivacy:
    """One site's side of DP-SGD: its budget, its ledger, and the decision to train."""

    def __init__(self, site_dir: Path | str, site_id: str, budget: SiteBudget | None) -> None:
        self.site_id = site_id
        self.budget = budget
        self.ledger = PrivacyLedger.for_site(site_dir)

    def delta_for(self, plan: PrivateRoundPlan) -> float:
        """The δ this site states ε at: its own, else the run's."""
        return self.budget.delta if self.budget is not None and self.budget.delta is not None else plan.delta

    def decline_without_dp(self, run_id: str, server_round: int) -> str | None:
        """The reason to decline a round without DP-SGD, or None to train."""
        if self.budget is None:
            return None
        reason = (
            f"site {self.site_id} declined round {server_round} because of its privacy budget "
            f"(max ε={self.budget.max_epsilon:g}): the run asks for training without DP-SGD, "
            f"whose ε is unbounded; set dp-sgd = true in the run config"
        )
        self.ledger.append(
            LedgerEntry(
                run_id=run_id,
                server_round=server_round,
                outcome=DECLINED,
                protected_unit="none",
                protected_units=0,
                steps=0,
                sample_rate=0.0,
                noise_multiplier=0.0,
                max_grad_norm=0.0,
                delta=self.budget.delta or 0.0,
                accountant="none",
                epsilon_round=math.inf,
                epsilon_cumulative=self._spent_so_far(),
                max_epsilon=self.budget.max_epsilon,
                reason=reason,
            )
        )
        return reason

    def decline_over_budget(self, plan: PrivateRoundPlan, run_id: str, server_round: int) -> str | None:
        """The reason to decline ``plan``, recorded in the ledger, or None to train it."""
        if self.budget is None:
            return None
        delta = self.delta_for(plan)
        history = self.ledger.spent()
        spent = epsilon_spent(history, delta, plan.accountant)
        projected = epsilon_spent([*history, plan.mechanism], delta, plan.accountant)
        if projected <= self.budget.max_epsilon:
            return None
        this_round = epsilon_spent([plan.mechanism], delta, plan.accountant)
        reason = (
            f"site {self.site_id} declined round {server_round} because of its privacy budget: "
            f"after this round's {plan.steps} DP-SGD steps (noise multiplier {plan.noise_multiplier:.4g}, "
            f"sample rate {plan.sample_rate:.4g}, clipping norm {plan.max_grad_norm:g}) "
            f"its {plan.protected_unit}-level ε would be {projected:.3f} at δ={delta:g} "
            f"({plan.accountant.upper()} accountant), above its maximum "
            f"ε={self.budget.max_epsilon:g}; spent so far ε={spent:.3f}"
        )
        self.ledger.append(
            self._entry(plan, run_id, server_round, DECLINED, delta, this_round, spent, plan.steps, reason)
        )
        return reason

    def record_round(self, plan: PrivateRoundPlan, steps: int, run_id: str, server_round: int) -> PrivacySpend:
        """Write the round's ``steps`` (as trained) to the ledger; the spend to report."""
        delta = self.delta_for(plan)
        trained = replace(plan, steps=steps)
        this_round = epsilon_spent([trained.mechanism], delta, plan.accountant)
        cumulative = epsilon_spent([*self.ledger.spent(), trained.mechanism], delta, plan.accountant)
        self.ledger.append(self._entry(trained, run_id, server_round, TRAINED, delta, this_round, cumulative, steps))
        return PrivacySpend(cumulative, delta, plan.noise_multiplier, plan.sample_rate, steps)

    def _spent_so_far(self) -> float:
        history = self.ledger.spent()
        entries = [e for e in self.ledger.entries() if e.outcome == TRAINED]
        if not entries:
            return 0.0
        last = entries[-1]
        return epsilon_spent(history, last.delta, last.accountant)

    def _entry(
        self,
        plan: PrivateRoundPlan,
        run_id: str,
        server_round: int,
        outcome: str,
        delta: float,
        epsilon_round: float,
        epsilon_cumulative: float,
        steps: int,
        reason: str = "",
    ) -> LedgerEntry:
        return LedgerEntry(
            run_id=run_id,
            server_round=server_round,
            outcome=outcome,
            protected_unit=plan.protected_unit,
            protected_units=plan.protected_units,
            steps=steps,
            sample_rate=plan.sample_rate,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            delta=delta,
            accountant=plan.accountant,
            epsilon_round=epsilon_round,
            epsilon_cumulative=epsilon_cumulative,
            max_epsilon=self.budget.max_epsilon if self.budget is not None else None,
            reason=reason,
        )
