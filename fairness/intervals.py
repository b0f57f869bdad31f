"""Confidence intervals from sufficient statistics (plain numbers, no per-case values).

Every function takes the confidence ``level`` (0.95 for the report's intervals; the
audit widens it for flagging, see ``fairness.audit``). Methods:

* mean of a metric: Student t interval, mean ± t(n−1) · s/√n, clipped to the metric's range;
* proportion: Wilson score interval;
* difference of two means: Welch's t interval (unequal variances, Welch–Satterthwaite
  degrees of freedom);
* difference of two proportions: Newcombe's hybrid score interval (his method 10),
  built from the two Wilson intervals;
* area under the ROC curve from binned scores: ties within a bin count one half;
  standard error by Hanley and McNeil (1982); interval normal, clipped to 0–1;
* difference of two areas (independent groups): normal, SE = √(SE₁² + SE₂²);
* ratio of two means or areas: delta method on the log scale,
  SE(log r) = √(SE₁²/m₁² + SE₂²/m₂²), interval exp(log r ± z · SE);
* ratio of two proportions: the same on the log scale with Katz's
  SE(log r) = √(1/x₁ − 1/n₁ + 1/x₂ − 1/n₂) (half a case for a zero numerator).

An undefined estimate (too few values, a zero denominator) is NaN with NaN bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

from fairness.statistics import MetricSums

NAN = math.nan


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    @property
    def defined(self) -> bool:
        return math.isfinite(self.value)

    def excludes_up_to(self, limit: float) -> bool:
        """True when the whole interval lies above ``limit``."""
        return math.isfinite(self.low) and self.low > limit


UNDEFINED = Interval(NAN, NAN, NAN)


def z_value(level: float) -> float:
    _check_level(level)
    return float(scipy_stats.norm.ppf(0.5 + level / 2))


def t_value(level: float, degrees_of_freedom: float) -> float:
    _check_level(level)
    return float(scipy_stats.t.ppf(0.5 + level / 2, degrees_of_freedom))


def mean_interval(
    sums: MetricSums, level: float = 0.95, lower_bound: float | None = None, upper_bound: float | None = None
) -> Interval:
    """Mean with a Student t interval; NaN bounds below two values."""
    if sums.count < 1:
        return UNDEFINED
    mean = sums.mean
    if sums.count < 2:
        return Interval(mean, NAN, NAN)
    half = t_value(level, sums.count - 1) * math.sqrt(sums.variance / sums.count)
    low, high = mean - half, mean + half
    if lower_bound is not None:
        low = max(low, lower_bound)
    if upper_bound is not None:
        high = min(high, upper_bound)
    return Interval(mean, low, high)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Interval:
    if n <= 0:
        return UNDEFINED
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes out of {n}")
    z = z_value(level)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def welch_difference(a: MetricSums, b: MetricSums, level: float = 0.95) -> Interval:
    """mean(a) − mean(b) with Welch's interval; NaN bounds if either has fewer than two values."""
    if a.count < 1 or b.count < 1:
        return UNDEFINED
    difference = a.mean - b.mean
    if a.count < 2 or b.count < 2:
        return Interval(difference, NAN, NAN)
    va, vb = a.variance / a.count, b.variance / b.count
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(difference, difference, difference)
    df = (va + vb) ** 2 / (va * va / (a.count - 1) + vb * vb / (b.count - 1))
    half = t_value(level, df) * se
    return Interval(difference, difference - half, difference + half)


def newcombe_difference(x1: int, n1: int, x2: int, n2: int, level: float = 0.95) -> Interval:
    """p₁ − p₂ with Newcombe's hybrid score interval."""
    if n1 <= 0 or n2 <= 0:
        return UNDEFINED
    first, second = wilson_interval(x1, n1, level), wilson_interval(x2, n2, level)
    p1, p2 = first.value, second.value
    difference = p1 - p2
    low = difference - math.sqrt((p1 - first.low) ** 2 + (second.high - p2) ** 2)
    high = difference + math.sqrt((first.high - p1) ** 2 + (p2 - second.low) ** 2)
    return Interval(difference, max(-1.0, low), min(1.0, high))


def normal_difference(v1: float, se1: float, v2: float, se2: float, level: float = 0.95) -> Interval:
    """v₁ − v₂ of two independent estimates with normal errors."""
    if not (math.isfinite(v1) and math.isfinite(v2)):
        return UNDEFINED
    difference = v1 - v2
    if not (math.isfinite(se1) and math.isfinite(se2)):
        return Interval(difference, NAN, NAN)
    half = z_value(level) * math.sqrt(se1 * se1 + se2 * se2)
    return Interval(difference, difference - half, difference + half)


def log_ratio(v1: float, se1: float, v2: float, se2: float, level: float = 0.95) -> Interval:
    """v₁ / v₂ by the delta method on the log scale; NaN unless both are positive."""
    if not (math.isfinite(v1) and math.isfinite(v2)) or v1 <= 0 or v2 <= 0:
        return UNDEFINED
    ratio = v1 / v2
    if not (math.isfinite(se1) and math.isfinite(se2)):
        return Interval(ratio, NAN, NAN)
    se_log = math.sqrt((se1 / v1) ** 2 + (se2 / v2) ** 2)
    z = z_value(level)
    return Interval(ratio, ratio * math.exp(-z * se_log), ratio * math.exp(z * se_log))


def ratio_of_means(a: MetricSums, b: MetricSums, level: float = 0.95) -> Interval:
    if a.count < 2 or b.count < 2:
        return UNDEFINED
    return log_ratio(a.mean, math.sqrt(a.variance / a.count), b.mean, math.sqrt(b.variance / b.count), level)


def ratio_of_proportions(x1: int, n1: int, x2: int, n2: int, level: float = 0.95) -> Interval:
    """p₁ / p₂ with Katz's log interval; undefined when p₂ is 0."""
    if n1 <= 0 or n2 <= 0 or x2 == 0:
        return UNDEFINED
    a1 = x1 if x1 > 0 else 0.5  # half a case keeps log(0) away
    se_log = math.sqrt(max(0.0, 1 / a1 - 1 / n1 + 1 / x2 - 1 / n2))
    centre = (a1 / n1) / (x2 / n2)
    z = z_value(level)
    low = 0.0 if x1 == 0 else centre * math.exp(-z * se_log)
    return Interval((x1 / n1) / (x2 / n2), low, centre * math.exp(z * se_log))


@dataclass(frozen=True)
class Auroc:
    value: float
    standard_error: float
    positives: int
    negatives: int

    def interval(self, level: float = 0.95) -> Interval:
        if not math.isfinite(self.value):
            return UNDEFINED
        half = z_value(level) * self.standard_error
        return Interval(self.value, max(0.0, self.value - half), min(1.0, self.value + half))


def auroc_from_histograms(positive: Sequence[int], negative: Sequence[int]) -> Auroc:
    """Area under the ROC curve from score histograms on the same bins (higher score = positive).

    The probability that a random positive case scores above a random negative one,
    counting one half for a pair in the same bin. Undefined without both sides.
    """
    if len(positive) != len(negative):
        raise ValueError(f"histograms have {len(positive)} and {len(negative)} bins")
    n_positive, n_negative = int(sum(positive)), int(sum(negative))
    if n_positive == 0 or n_negative == 0:
        return Auroc(NAN, NAN, n_positive, n_negative)
    below = 0
    pairs = 0.0
    for p, q in zip(positive, negative):
        pairs += p * (below + 0.5 * q)
        below += q
    area = pairs / (n_positive * n_negative)
    q1, q2 = area / (2 - area), 2 * area * area / (1 + area)
    variance = (area * (1 - area) + (n_positive - 1) * (q1 - area * area) + (n_negative - 1) * (q2 - area * area)) / (
        n_positive * n_negative
    )
    return Auroc(area, math.sqrt(max(variance, 0.0)), n_positive, n_negative)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie strictly between 0 and 1, not {level}")
