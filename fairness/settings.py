"""The audit's run-config keys: the small-cell threshold and the largest accepted gaps.

``fairness-suppression-threshold`` (default 10) is the smallest group a site reports
on; a site's own ``site.toml`` floor wins when higher (client/site.py).
``fairness-tolerance-<metric>`` and ``fairness-tolerance-rates`` are the largest gaps
the consortium accepts, per metric of the task's audit spec and for rates (0–1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fairness.spec import AuditSpec

SUPPRESSION_THRESHOLD_KEY = "fairness-suppression-threshold"
DEFAULT_SUPPRESSION_THRESHOLD = 10
TOLERANCE_PREFIX = "fairness-tolerance-"
RATE_TOLERANCE_KEY = TOLERANCE_PREFIX + "rates"


def suppression_threshold_from_run_config(run_config: Mapping[str, Any]) -> int:
    """``fairness-suppression-threshold`` from the run config (default 10, at least 1)."""
    value = run_config.get(SUPPRESSION_THRESHOLD_KEY, DEFAULT_SUPPRESSION_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise ValueError(f"run-config {SUPPRESSION_THRESHOLD_KEY}={value!r}: expected a whole number, 1 or more")
    return int(value)


def tolerance_key(metric_name: str) -> str:
    """Run-config key of a metric's gap tolerance: fairness-tolerance-dice-myocardium."""
    return TOLERANCE_PREFIX + metric_name.replace("_", "-")


@dataclass(frozen=True)
class Tolerances:
    """Largest accepted gaps: per metric in its unit, and one for rates (0–1)."""

    metric_gaps: Mapping[str, float] = field(default_factory=dict)
    rate_gap: float = 0.10

    def for_metric(self, spec: AuditSpec, name: str) -> float:
        return float(self.metric_gaps.get(name, spec.metric(name).default_tolerance))

    @classmethod
    def defaults(cls, spec: AuditSpec) -> Tolerances:
        return cls({m.name: m.default_tolerance for m in spec.metrics}, spec.rate_tolerance)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], spec: AuditSpec) -> Tolerances:
        """Read ``fairness-tolerance-*`` keys; absent keys keep the spec's defaults.

        Other keys are ignored: the federation's own config checks for unknown keys.
        """
        gaps = {
            info.name: _non_negative(run_config, tolerance_key(info.name), info.default_tolerance)
            for info in spec.metrics
        }
        rate = _non_negative(run_config, RATE_TOLERANCE_KEY, spec.rate_tolerance)
        return cls(gaps, rate)

    def to_run_config(self, spec: AuditSpec) -> dict[str, float]:
        """The keys and values to declare under [tool.flwr.app.config]."""
        values = {tolerance_key(m.name): self.for_metric(spec, m.name) for m in spec.metrics}
        values[RATE_TOLERANCE_KEY] = float(self.rate_gap)
        return values


def run_config_problems(run_config: Mapping[str, Any]) -> list[str]:
    """What is wrong with the run config's ``fairness-*`` keys (for the federation's check).

    Every ``fairness-tolerance-*`` key present is checked, whichever task's spec names it.
    """
    problems = []
    try:
        suppression_threshold_from_run_config(run_config)
    except ValueError as problem:
        problems.append(str(problem))
    for key in sorted(k for k in run_config if str(k).startswith(TOLERANCE_PREFIX)):
        try:
            _non_negative(run_config, key, 0.0)
        except ValueError as problem:
            problems.append(str(problem))
    return problems


def _non_negative(run_config: Mapping[str, Any], key: str, default: float) -> float:
    value = run_config.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"run-config {key}={value!r}: expected a number") from None
    if not number >= 0:
        raise ValueError(f"run-config {key}={value!r}: a tolerance must be 0 or more")
    return number
