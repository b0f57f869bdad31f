"""What the audit measures, and the sums behind one measure in one set of cases.

A ``Measure`` is one figure the audit estimates per group: the mean of a task's metric,
or the sensitivity, specificity or area under the ROC curve of one of its binary calls.
``Evidence`` is the sufficient statistics behind one estimate, summed over the sites
that sent them (``pooled_evidence``), or over everyone but a group (``rest_evidence``,
exact by subtraction); it gives the estimate's interval and the intervals of
differences and ratios between two estimates (``fairness.intervals``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fairness.intervals import (
    Auroc,
    Interval,
    auroc_from_histograms,
    log_ratio,
    mean_interval,
    newcombe_difference,
    normal_difference,
    ratio_of_means,
    ratio_of_proportions,
    welch_difference,
    wilson_interval,
)
from fairness.settings import Tolerances
from fairness.spec import AuditSpec
from fairness.statistics import (
    ALL_CASES,
    NEGATIVE,
    POSITIVE,
    CallSide,
    Group,
    Item,
    MetricSums,
    SiteStatistics,
    call_item,
    metric_item,
)


# ------------------------------------------------------------------------------------
# What is measured
# ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measure:
    key: str  # "dice_myocardium", "scar_present|sensitivity"
    kind: str  # "mean" | "sensitivity" | "specificity" | "auroc"
    label: str
    unit: str
    explanation: str
    higher_is_better: bool
    tolerance: float
    decimals: int = 3
    source: str = ""  # metric or call name
    lower_bound: float | None = None
    upper_bound: float | None = None


def measures_of(spec: AuditSpec, tolerances: Tolerances) -> list[Measure]:
    measures = [
        Measure(
            key=m.name,
            kind="mean",
            label=m.label,
            unit=m.unit,
            explanation=m.explanation,
            higher_is_better=m.higher_is_better,
            tolerance=tolerances.for_metric(spec, m.name),
            decimals=m.decimals,
            source=m.name,
            lower_bound=m.lower_bound,
            upper_bound=m.upper_bound,
        )
        for m in spec.metrics
    ]
    rate = float(tolerances.rate_gap)
    for pair in spec.calls:
        measures.append(
            Measure(
                key=f"{pair.name}|sensitivity",
                kind="sensitivity",
                label=f"Sensitivity for {pair.label}",
                unit="",
                explanation=(
                    f"Of the patients whose expert reference says {pair.label}, the share the model also calls "
                    "positive, from 0 to 1 (1 = none missed)."
                ),
                higher_is_better=True,
                tolerance=rate,
                source=pair.name,
                lower_bound=0.0,
                upper_bound=1.0,
            )
        )
        measures.append(
            Measure(
                key=f"{pair.name}|specificity",
                kind="specificity",
                label=f"Specificity for {pair.label}",
                unit="",
                explanation=(
                    f"Of the patients whose expert reference does not say {pair.label}, the share the model "
                    "calls negative, from 0 to 1 (1 = no false alarms)."
                ),
                higher_is_better=True,
                tolerance=rate,
                source=pair.name,
                lower_bound=0.0,
                upper_bound=1.0,
            )
        )
        if pair.has_score:
            measures.append(
                Measure(
                    key=f"{pair.name}|auroc",
                    kind="auroc",
                    label=f"Discrimination for {pair.label} (area under the ROC curve)",
                    unit="",
                    explanation=(
                        f"The chance that a patient with {pair.label} gets a higher {pair.score_label} than a "
                        "patient without, from 0 to 1 (0.5 = a coin toss, 1 = perfect). ROC: receiver operating "
                        "characteristic, the curve of sensitivity against false alarms over all thresholds."
                    ),
                    higher_is_better=True,
                    tolerance=rate,
                    source=pair.name,
                    lower_bound=0.0,
                    upper_bound=1.0,
                )
            )
    return measures


# ------------------------------------------------------------------------------------
# Evidence: the sufficient statistics behind one measure in one set of cases
# ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """Sums behind one estimate; ``n`` is the number of values (or of cases on the call's side)."""

    kind: str
    sums: MetricSums | None = None
    successes: int = 0
    trials: int = 0
    auroc: Auroc | None = None

    @property
    def metric_sums(self) -> MetricSums:
        if self.sums is None:
            raise ValueError(f"{self.kind} evidence carries no metric sums")
        return self.sums

    @property
    def area(self) -> Auroc:
        if self.auroc is None:
            raise ValueError(f"{self.kind} evidence carries no area under the curve")
        return self.auroc

    @property
    def n(self) -> int:
        if self.kind == "mean":
            return self.metric_sums.count
        if self.kind == "auroc":
            return min(self.area.positives, self.area.negatives)
        return self.trials

    def interval(self, measure: Measure, level: float) -> Interval:
        if self.kind == "mean":
            return mean_interval(self.metric_sums, level, measure.lower_bound, measure.upper_bound)
        if self.kind == "auroc":
            return self.area.interval(level)
        return wilson_interval(self.successes, self.trials, level)

    def sd(self) -> float:
        return self.metric_sums.variance**0.5 if self.kind == "mean" and self.metric_sums.count >= 2 else math.nan

    def minus(self, other: Evidence, level: float) -> Interval:
        """self − other."""
        if self.kind == "mean":
            return welch_difference(self.metric_sums, other.metric_sums, level)
        if self.kind == "auroc":
            return normal_difference(
                self.area.value, self.area.standard_error, other.area.value, other.area.standard_error, level
            )
        return newcombe_difference(self.successes, self.trials, other.successes, other.trials, level)

    def over(self, other: Evidence, level: float) -> Interval:
        """self ÷ other."""
        if self.kind == "mean":
            return ratio_of_means(self.metric_sums, other.metric_sums, level)
        if self.kind == "auroc":
            return log_ratio(
                self.area.value, self.area.standard_error, other.area.value, other.area.standard_error, level
            )
        return ratio_of_proportions(self.successes, self.trials, other.successes, other.trials, level)


def _item_names(measure: Measure) -> list[Item]:
    if measure.kind == "mean":
        return [metric_item(measure.source)]
    if measure.kind == "sensitivity":
        return [call_item(measure.source, POSITIVE)]
    if measure.kind == "specificity":
        return [call_item(measure.source, NEGATIVE)]
    return [call_item(measure.source, POSITIVE), call_item(measure.source, NEGATIVE)]


def _evidence(measure: Measure, parts: list) -> Evidence:
    """Evidence from the summed figures of ``_item_names(measure)``."""
    if measure.kind == "mean":
        return Evidence("mean", sums=parts[0])
    if measure.kind == "sensitivity":
        side: CallSide = parts[0]
        return Evidence("sensitivity", successes=side.called_positive, trials=side.cases)
    if measure.kind == "specificity":
        side = parts[0]
        return Evidence("specificity", successes=side.cases - side.called_positive, trials=side.cases)
    positive, negative = parts
    return Evidence("auroc", auroc=auroc_from_histograms(positive.score_histogram, negative.score_histogram))


def _site_part(stats: SiteStatistics, group: Group, item: Item):
    """A site's figure: as sent; zero if the site has no such case; None if it withheld it."""
    value = stats.get(group, item)
    if value is not None:
        return value
    if group in stats.cells or any(w.group == group for w in stats.withheld):
        return None  # withheld (the whole group, or this figure of it)
    if item.kind == "metric":
        return MetricSums()
    bins = len(stats.score_bin_edges.get(item.name, ())) - 1
    return CallSide(0, 0, tuple(0 for _ in range(max(bins, 0))))


def _sum_over(sites: Mapping[str, SiteStatistics], group: Group, items: list[Item], site_ids: Sequence[str]):
    parts = []
    for item in items:
        total = None
        for site_id in site_ids:
            value = _site_part(sites[site_id], group, item)
            total = value if total is None else total + value
        parts.append(total)
    return parts


def _senders(sites: Mapping[str, SiteStatistics], groups: Sequence[Group], items: list[Item]) -> list[str]:
    """Sites whose figures for all ``groups`` and ``items`` are known (sent, or zero for want of cases)."""
    return [s for s, stats in sites.items() if all(_site_part(stats, g, i) is not None for g in groups for i in items)]


def pooled_evidence(sites: Mapping[str, SiteStatistics], group: Group, measure: Measure):
    """(evidence, sites covered) for a group over the sites whose figures are known; (None, ()) if none."""
    items = _item_names(measure)
    senders = _senders(sites, [group], items)
    if not senders or (measure.kind == "auroc" and not all(sites[s].score_bin_edges for s in senders)):
        return None, ()
    evidence = _evidence(measure, _sum_over(sites, group, items, senders))
    return (evidence, tuple(senders)) if evidence.n > 0 else (None, ())


def rest_evidence(sites: Mapping[str, SiteStatistics], group: Group, measure: Measure):
    """Everyone but ``group``: site totals minus the group, over the sites whose figures for both are known."""
    items = _item_names(measure)
    senders = _senders(sites, [ALL_CASES, group], items)
    if not senders:
        return None, ()
    totals = _sum_over(sites, ALL_CASES, items, senders)
    inside = _sum_over(sites, group, items, senders)
    evidence = _evidence(measure, [t - g for t, g in zip(totals, inside)])
    return (evidence, tuple(senders)) if evidence.n > 0 else (None, ())
