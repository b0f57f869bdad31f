"""Before and after a fairness mitigation: two runs' final-round audits side by side.

The *baseline* run (before) and this run (after) are each audited on their own final
round with the same spec and tolerances; for every group of each single audited
attribute (sex, age band, …) and every measure, the two estimates are set side by
side, and so are the two worst-versus-best gaps. Plain numbers in, plain numbers out
(no torch): the report turns them into words (fairness/report.py).

Each run's intervals are its own. The two models are usually tested on the same
hospitals' patients, so the change is paired and its uncertainty is not the sum of
the two; the sums the sites send do not allow a paired interval, so none is given and
the words say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fairness.audit import WORST_VS_BEST, Gap, GroupEstimate, RoundAudit
from fairness.evidence import Measure
from fairness.spec import ATTRIBUTE_LABELS, Grouping, value_label

MITIGATION_KEY = "fairness-mitigation"
ALL_GROUP = "all"  # the grouping and group of all patients together
BALANCE_ATTRIBUTE_KEY = "fairness-balance-attribute"


@dataclass(frozen=True)
class Training:
    """How a run's sites drew their training examples (its fairness-* run-config keys)."""

    mitigation: str = "none"
    balance_attribute: str = ""

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Training:
        """Runs from before the mitigation could be chosen trained without one."""
        mitigation = str(settings.get(MITIGATION_KEY, "none"))
        attribute = str(settings.get(BALANCE_ATTRIBUTE_KEY, "")) if mitigation != "none" else ""
        return cls(mitigation, attribute)

    @property
    def description(self) -> str:
        if self.mitigation == "none":
            return "no fairness mitigation (training images drawn as they come)"
        if self.mitigation == "group-balanced":
            label = ATTRIBUTE_LABELS.get(self.balance_attribute, self.balance_attribute.replace("_", " "))
            return (
                f"group-balanced sampling by {label} at each hospital (each {label} group drawn equally "
                "often in training, whatever its share of the hospital's patients)"
            )
        return f"fairness mitigation {self.mitigation!r}"


@dataclass(frozen=True)
class GroupChange:
    grouping: str  # "sex"
    grouping_label: str
    group: str  # "sex=female"
    label: str  # "female"
    measure: str
    before: float  # NaN where the run has no figure for the group
    before_low: float
    before_high: float
    n_before: int
    after: float
    after_low: float
    after_high: float
    n_after: int

    @property
    def change(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class GapSide:
    worst_group: str
    worst_label: str
    best_label: str
    worst_value: float
    shortfall: float  # worst vs best, in the measure's unit (positive: worst group worse)
    low: float
    high: float
    flagged: bool


@dataclass(frozen=True)
class GapChange:
    grouping: str
    grouping_label: str
    measure: str
    tolerance: float
    before: GapSide | None
    after: GapSide | None

    @property
    def change(self) -> float:
        if self.before is None or self.after is None:
            return math.nan
        return self.after.shortfall - self.before.shortfall


@dataclass(frozen=True)
class BeforeAfter:
    baseline_run_dir: str
    baseline_round: int
    server_round: int
    before: Training
    after: Training
    groups: tuple[GroupChange, ...]
    gaps: tuple[GapChange, ...]

    def gap(self, grouping: str, measure: str) -> GapChange | None:
        return next((g for g in self.gaps if g.grouping == grouping and g.measure == measure), None)

    def overall(self, measure: str) -> GroupChange | None:
        return next((g for g in self.groups if g.group == ALL_GROUP and g.measure == measure), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (undefined figures as null)."""
        document = asdict(self)
        document["before"]["description"] = self.before.description
        document["after"]["description"] = self.after.description
        for row, group in zip(document["groups"], self.groups):
            row["change"] = group.change
        for row, gap in zip(document["gaps"], self.gaps):
            row["change"] = gap.change
        return _json_ready(document)


def single_attribute(grouping_name: str) -> bool:
    grouping = Grouping.from_name(grouping_name)
    return len(grouping.attributes) == 1


def compare_audits(
    baseline: RoundAudit,
    mitigated: RoundAudit,
    measures: tuple[Measure, ...],
    *,
    baseline_run_dir: Path,
    before: Training,
    after: Training,
) -> BeforeAfter:
    """Each single attribute's groups and worst-vs-best gaps, before (baseline) and after."""
    measure_order = {m.key: index for index, m in enumerate(measures)}
    estimates: dict[tuple[str, str, str], dict[str, GroupEstimate]] = {}
    for side, audit in (("before", baseline), ("after", mitigated)):
        for estimate in audit.consortium:
            wanted = estimate.grouping == ALL_GROUP or single_attribute(estimate.grouping)
            if wanted and estimate.measure in measure_order:
                estimates.setdefault((estimate.grouping, estimate.group, estimate.measure), {})[side] = estimate
    groups = []
    for (grouping, group, measure), sides in estimates.items():
        label = "all patients" if group == ALL_GROUP else value_label(*group.split("=", 1))
        b, a = sides.get("before"), sides.get("after")
        groups.append(
            GroupChange(
                grouping=grouping,
                grouping_label=Grouping.from_name(grouping).label,
                group=group,
                label=label,
                measure=measure,
                before=b.value if b else math.nan,
                before_low=b.low if b else math.nan,
                before_high=b.high if b else math.nan,
                n_before=b.n if b else 0,
                after=a.value if a else math.nan,
                after_low=a.low if a else math.nan,
                after_high=a.high if a else math.nan,
                n_after=a.n if a else 0,
            )
        )
    grouping_order = {name: index for index, name in enumerate((ALL_GROUP, *ATTRIBUTE_LABELS))}
    groups.sort(key=lambda g: (grouping_order.get(g.grouping, 99), measure_order[g.measure]))

    gaps_by_key: dict[tuple[str, str], dict[str, Gap]] = {}
    for side, audit in (("before", baseline), ("after", mitigated)):
        for gap in audit.gaps:
            if gap.comparison == WORST_VS_BEST and single_attribute(gap.grouping) and gap.measure in measure_order:
                gaps_by_key.setdefault((gap.grouping, gap.measure), {})[side] = gap
    gaps = []
    for (grouping, measure), gap_sides in gaps_by_key.items():
        tolerance = next(m.tolerance for m in measures if m.key == measure)
        gaps.append(
            GapChange(
                grouping=grouping,
                grouping_label=Grouping.from_name(grouping).label,
                measure=measure,
                tolerance=tolerance,
                before=_side(gap_sides.get("before")),
                after=_side(gap_sides.get("after")),
            )
        )
    gaps.sort(key=lambda g: (grouping_order.get(g.grouping, 99), measure_order[g.measure]))
    return BeforeAfter(
        baseline_run_dir=str(baseline_run_dir),
        baseline_round=baseline.server_round,
        server_round=mitigated.server_round,
        before=before,
        after=after,
        groups=tuple(groups),
        gaps=tuple(gaps),
    )


def _side(gap: Gap | None) -> GapSide | None:
    if gap is None:
        return None
    return GapSide(
        worst_group=gap.worst_group,
        worst_label=gap.worst_label,
        best_label=gap.comparator_label,
        worst_value=gap.worst_value,
        shortfall=gap.shortfall,
        low=gap.shortfall_low,
        high=gap.shortfall_high,
        flagged=gap.flagged,
    )


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value
