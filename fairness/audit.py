"""The fairness audit: from sites' suppressed statistics to subgroup metrics, gaps and flags.

For each evaluation round:

* **Group estimates**, for the consortium (sites summed) and for each site: the mean
  of every metric (Student t interval), sensitivity and specificity of every binary
  call (Wilson intervals) and the area under the ROC curve from the score
  histograms (Hanley–McNeil). A consortium figure sums the sites that sent it; where
  a site withheld a group, the figure covers the other sites and says which.
* **Gaps**, per grouping (sex, ethnicity, …) and measure, for groups with at least
  ``min_cases`` values and a recorded attribute ("not recorded" is shown, never
  compared): the worst group against the best group, and the worst group against
  everyone else (the rest, exact by subtraction of sums, from the sites that sent
  both the group and its site total). Each gap is a *shortfall*: how much worse the
  worst group does, in the measure's unit (positive = worse), with Welch's interval
  (means), Newcombe's (proportions) or a normal one (areas under the curve), and a
  ratio worst ÷ comparator by the delta method on the log scale
  (``fairness.intervals`` gives the formulas).
* **Equalised-odds difference** per grouping and call: the larger of the
  worst-vs-best shortfalls in sensitivity and in specificity (specificity's gap is
  the gap in false-positive rate). Its interval is taken from the two intervals'
  bounds (approximate); it is flagged when either of its two gaps is.

**Flags.** A gap is flagged when its whole interval lies beyond the tolerance
(``fairness.spec.Tolerances``): the lower bound of the shortfall exceeds the
largest accepted gap. Choosing the worst and best group out of *g* is choosing
among g(g−1)/2 pairs, and the worst out of *g* against the rest among *g*
comparisons; a round tests M comparisons in all (summed over groupings and
measures). The interval used for flagging is widened by Bonferroni to confidence
1 − 0.05/M, so that with no gap beyond tolerance anywhere the chance of any flag
in the round is at most 5 %. Runs are flagged on their **final round** only (the
model the run produces); earlier rounds give the trend, with plain 95 % intervals,
and are never flagged, so that testing every round does not multiply false alarms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from fairness.evidence import Evidence, Measure, measures_of, pooled_evidence, rest_evidence
from fairness.intervals import Interval
from fairness.run_store import RoundStatistics, RunStatistics
from fairness.settings import Tolerances
from fairness.spec import ALL, AuditSpec, Grouping
from fairness.statistics import (
    NEGATIVE,
    POSITIVE,
    Group,
    call_item,
    group_order,
    metric_item,
)

ALPHA = 0.05
REPORT_LEVEL = 0.95
MIN_CASES_FOR_GAP = 5
WORST_VS_BEST = "worst vs best"
WORST_VS_REST = "worst vs rest"


# ------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupEstimate:
    group: str  # key: "sex=female"
    label: str  # "sex: female"
    grouping: str
    measure: str
    n: int
    value: float
    low: float
    high: float
    sd: float
    sites: tuple[str, ...]
    recorded: bool  # False for "not recorded" groups


@dataclass(frozen=True)
class Gap:
    server_round: int
    grouping: str
    grouping_label: str
    measure: str
    comparison: str  # "worst vs best" | "worst vs rest"
    worst_group: str
    worst_label: str
    comparator: str  # best group's key, or "rest"
    comparator_label: str
    worst_value: float
    comparator_value: float
    worst_n: int
    comparator_n: int
    shortfall: float  # how much worse the worst group is, in the measure's unit (positive = worse)
    shortfall_low: float  # 95 %
    shortfall_high: float
    ratio: float  # worst ÷ comparator
    ratio_low: float
    ratio_high: float
    flag_low: float  # the Bonferroni-widened interval used for flagging
    flag_high: float
    flag_level: float
    tolerance: float
    flagged: bool
    sites: tuple[str, ...]


@dataclass(frozen=True)
class EqualisedOdds:
    grouping: str
    grouping_label: str
    call: str
    value: float
    low: float
    high: float
    sensitivity_gap: float
    specificity_gap: float
    tolerance: float
    flagged: bool


@dataclass(frozen=True)
class SiteSuppression:
    site: str
    threshold: int | None
    groups_sent: int
    groups_withheld: tuple[str, ...]  # labels of groups withheld whole
    figures_withheld: tuple[str, ...]  # "sex: female — Dice similarity of the scar"
    note: str = ""


@dataclass(frozen=True)
class RoundAudit:
    server_round: int
    sites: tuple[str, ...]
    consortium: tuple[GroupEstimate, ...]
    per_site: dict[str, tuple[GroupEstimate, ...]]
    gaps: tuple[Gap, ...]
    equalised_odds: tuple[EqualisedOdds, ...]
    comparisons: int  # M, the Bonferroni family size
    flag_level: float
    suppression: tuple[SiteSuppression, ...]
    rejected: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditResult:
    task: str
    task_label: str
    measures: tuple[Measure, ...]
    rounds: tuple[RoundAudit, ...]
    alpha: float = ALPHA
    min_cases: int = MIN_CASES_FOR_GAP
    thresholds: tuple[int, ...] = ()
    groupings: tuple[str, ...] = ()  # the spec's groupings, "all" left out

    @property
    def final(self) -> RoundAudit:
        return self.rounds[-1]

    @property
    def flags(self) -> list[Gap]:
        return [g for g in self.final.gaps if g.flagged]

    def measure(self, key: str) -> Measure:
        return next(m for m in self.measures if m.key == key)

    def to_dict(self) -> dict[str, Any]:
        return _json_ready(asdict(self))


# ------------------------------------------------------------------------------------
# The audit
# ------------------------------------------------------------------------------------
def audit_round(
    round_statistics: RoundStatistics,
    spec: AuditSpec,
    tolerances: Tolerances,
    *,
    flag: bool = True,
    min_cases: int = MIN_CASES_FOR_GAP,
    alpha: float = ALPHA,
) -> RoundAudit:
    """Group estimates, gaps and, when ``flag`` (the final round), flags and per-site estimates."""
    sites = round_statistics.sites
    measures = measures_of(spec, tolerances)
    groups = _groups(sites.values(), spec)
    consortium = tuple(
        _estimate(sites, group, measure)
        for group in groups
        for measure in measures
        if pooled_evidence(sites, group, measure)[0] is not None
    )
    per_site = (
        {
            site_id: tuple(
                _estimate({site_id: stats}, group, measure)
                for group in groups
                for measure in measures
                if pooled_evidence({site_id: stats}, group, measure)[0] is not None
            )
            for site_id, stats in sites.items()
        }
        if flag
        else {}
    )

    candidates: dict[tuple[Grouping, str], list[tuple[Group, Evidence, tuple[str, ...]]]] = {}
    comparisons = 0
    for grouping in (g for g in spec.groupings if g != ALL):
        for measure in measures:
            eligible = []
            for group in (g for g in groups if g.grouping == grouping):
                if group.has_unknown and not spec.unknown_in_gaps:
                    continue
                evidence, senders = pooled_evidence(sites, group, measure)
                if evidence is not None and _usable(evidence, min_cases):
                    eligible.append((group, evidence, senders))
            if not eligible:
                continue
            candidates[(grouping, measure.key)] = eligible
            g = len(eligible)
            comparisons += g * (g - 1) // 2  # worst vs best: the largest of the pairwise gaps
            worst = _worst(eligible, measure)
            rest, _ = rest_evidence(sites, worst[0], measure)
            if rest is not None and _usable(rest, min_cases):
                comparisons += g  # worst vs rest: the largest of g group-vs-rest gaps
    flag_level = 1 - alpha / max(comparisons, 1)

    gaps = []
    for (grouping, key), eligible in candidates.items():
        measure = next(m for m in measures if m.key == key)
        worst = _worst(eligible, measure)
        if len(eligible) >= 2:
            best = max(eligible, key=lambda c: _goodness(c[1], measure))
            gaps.append(
                _gap(
                    round_statistics.server_round,
                    grouping,
                    measure,
                    WORST_VS_BEST,
                    worst,
                    best,
                    flag_level,
                    flag,
                    tuple(sorted(set(worst[2]) | set(best[2]))),
                )
            )
        rest, senders = rest_evidence(sites, worst[0], measure)
        if rest is not None and _usable(rest, min_cases):
            everyone_else = (None, rest, senders)
            gaps.append(
                _gap(
                    round_statistics.server_round,
                    grouping,
                    measure,
                    WORST_VS_REST,
                    worst,
                    everyone_else,
                    flag_level,
                    flag,
                    senders,
                )
            )
    odds = _equalised_odds(gaps, spec, tolerances)
    return RoundAudit(
        server_round=round_statistics.server_round,
        sites=tuple(sorted(sites)),
        consortium=consortium,
        per_site=per_site,
        gaps=tuple(gaps),
        equalised_odds=odds,
        comparisons=comparisons,
        flag_level=flag_level,
        suppression=_suppression(round_statistics, spec, measures),
        rejected=dict(round_statistics.rejected),
    )


def audit_run(
    run: RunStatistics, spec: AuditSpec, tolerances: Tolerances, *, min_cases: int = MIN_CASES_FOR_GAP
) -> AuditResult:
    """Every round audited; flags only on the final round (see the module docstring)."""
    last = max(run.rounds)
    rounds = tuple(
        audit_round(statistics, spec, tolerances, flag=(number == last), min_cases=min_cases)
        for number, statistics in run.rounds.items()
    )
    thresholds = sorted(
        {
            s.suppression_threshold
            for r in run.rounds.values()
            for s in r.sites.values()
            if s.suppression_threshold is not None
        }
    )
    return AuditResult(
        task=run.last.task,
        task_label=spec.task_label,
        measures=tuple(measures_of(spec, tolerances)),
        rounds=rounds,
        min_cases=min_cases,
        thresholds=tuple(thresholds),
        groupings=tuple(g.name for g in spec.groupings if g != ALL),
    )


def _groups(all_stats, spec: AuditSpec) -> list[Group]:
    groups = {g for stats in all_stats for g in stats.cells}
    return sorted(groups, key=group_order(spec.groupings))


def _usable(evidence: Evidence, min_cases: int) -> bool:
    if evidence.kind == "mean":
        return evidence.n >= max(min_cases, 2)
    if evidence.kind == "auroc":
        return evidence.n >= min_cases and math.isfinite(evidence.area.value)
    return evidence.trials >= min_cases


def _goodness(evidence: Evidence, measure: Measure) -> float:
    value = evidence.interval(measure, REPORT_LEVEL).value
    return value if measure.higher_is_better else -value


def _worst(eligible, measure: Measure):
    return min(eligible, key=lambda c: (_goodness(c[1], measure), c[0].key))


def _estimate(sites, group: Group, measure: Measure) -> GroupEstimate:
    evidence, senders = pooled_evidence(sites, group, measure)
    interval = evidence.interval(measure, REPORT_LEVEL)
    return GroupEstimate(
        group=group.key,
        label=group.long_label,
        grouping=group.grouping.name,
        measure=measure.key,
        n=evidence.n,
        value=interval.value,
        low=interval.low,
        high=interval.high,
        sd=evidence.sd(),
        sites=senders,
        recorded=not group.has_unknown,
    )


def _gap(server_round, grouping: Grouping, measure: Measure, comparison, worst, other, flag_level, flag, sites) -> Gap:
    worst_group, worst_evidence, _ = worst
    other_group, other_evidence, _ = other

    def shortfall(level: float) -> Interval:
        if measure.higher_is_better:
            return other_evidence.minus(worst_evidence, level)
        return worst_evidence.minus(other_evidence, level)

    plain, widened = shortfall(REPORT_LEVEL), shortfall(flag_level)
    ratio = worst_evidence.over(other_evidence, REPORT_LEVEL)
    flagged = bool(flag and widened.excludes_up_to(measure.tolerance))
    return Gap(
        server_round=server_round,
        grouping=grouping.name,
        grouping_label=grouping.label,
        measure=measure.key,
        comparison=comparison,
        worst_group=worst_group.key,
        worst_label=worst_group.label,
        comparator=other_group.key if other_group else "rest",
        comparator_label=other_group.label if other_group else "everyone else",
        worst_value=worst_evidence.interval(measure, REPORT_LEVEL).value,
        comparator_value=other_evidence.interval(measure, REPORT_LEVEL).value,
        worst_n=worst_evidence.n,
        comparator_n=other_evidence.n,
        shortfall=plain.value,
        shortfall_low=plain.low,
        shortfall_high=plain.high,
        ratio=ratio.value,
        ratio_low=ratio.low,
        ratio_high=ratio.high,
        flag_low=widened.low,
        flag_high=widened.high,
        flag_level=flag_level,
        tolerance=measure.tolerance,
        flagged=flagged,
        sites=tuple(sites),
    )


def _equalised_odds(gaps: list[Gap], spec: AuditSpec, tolerances: Tolerances) -> tuple[EqualisedOdds, ...]:
    found = []
    for grouping in (g for g in spec.groupings if g != ALL):
        for pair in spec.calls:
            pick = {
                kind: next(
                    (
                        g
                        for g in gaps
                        if g.grouping == grouping.name
                        and g.comparison == WORST_VS_BEST
                        and g.measure == f"{pair.name}|{kind}"
                    ),
                    None,
                )
                for kind in ("sensitivity", "specificity")
            }
            sens, spec_gap = pick["sensitivity"], pick["specificity"]
            if sens is None or spec_gap is None:
                continue
            found.append(
                EqualisedOdds(
                    grouping=grouping.name,
                    grouping_label=grouping.label,
                    call=pair.name,
                    value=max(sens.shortfall, spec_gap.shortfall),
                    low=max(sens.shortfall_low, spec_gap.shortfall_low),
                    high=max(sens.shortfall_high, spec_gap.shortfall_high),
                    sensitivity_gap=sens.shortfall,
                    specificity_gap=spec_gap.shortfall,
                    tolerance=float(tolerances.rate_gap),
                    flagged=sens.flagged or spec_gap.flagged,
                )
            )
    return tuple(found)


def _suppression(round_statistics: RoundStatistics, spec: AuditSpec, measures) -> tuple[SiteSuppression, ...]:
    labels = {metric_item(m.name).key: m.label for m in spec.metrics}
    for pair in spec.calls:
        labels[call_item(pair.name, POSITIVE).key] = f"{pair.label}: patients with it (sensitivity, discrimination)"
        labels[call_item(pair.name, NEGATIVE).key] = f"{pair.label}: patients without it (specificity, discrimination)"
    out = []
    site_ids = sorted(set(round_statistics.sites) | set(round_statistics.notes) | set(round_statistics.rejected))
    for site_id in site_ids:
        stats = round_statistics.sites.get(site_id)
        note = round_statistics.notes.get(site_id, "")
        if site_id in round_statistics.rejected:
            note = (note + "; " if note else "") + "statistics refused: " + round_statistics.rejected[site_id]
        if stats is None:
            out.append(SiteSuppression(site_id, None, 0, (), (), note or "sent no fairness statistics"))
            continue
        order = group_order(spec.groupings)
        whole = sorted((w.group for w in stats.withheld if w.item.kind == "cases"), key=order)
        figures = sorted((w for w in stats.withheld if w.item.kind != "cases"), key=lambda w: order(w.group))
        out.append(
            SiteSuppression(
                site=site_id,
                threshold=stats.suppression_threshold,
                groups_sent=len(stats.cells),
                groups_withheld=tuple(g.long_label for g in whole),
                figures_withheld=tuple(f"{w.group.long_label} — {labels.get(w.item.key, w.item.key)}" for w in figures),
                note=note,
            )
        )
    return tuple(out)


def _json_ready(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value
