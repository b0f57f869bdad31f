"""What the fairness audit measures, over which groups: the vocabulary a task's audit spec is written in.

One ``AuditSpec`` names the groupings (single attributes and chosen intersections),
the continuous metrics (with the words and units a clinician reads), and the binary
calls (a reference/prediction pair, optionally with a score for the area under the
curve). Each task declares its own (``tasks/<name>/audit.py``); sites and the server
build their statistics from the same spec. A spec holds only names and constants,
never data. The largest accepted gaps come from the run config (``fairness.settings``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from cmr.attributes import (
    AGE_BANDS,
    ATTRIBUTE_NAMES,
    ETHNICITIES,
    FIELD_STRENGTHS,
    SEXES,
    UNKNOWN,
    VENDORS,
)

# Characters with a meaning in the keys of groups and figures ("sex=female&vendor=GE",
# "scar_present|sensitivity"); names and attribute values may not use them.
RESERVED_CHARACTERS = ("|", "=", "&")
INTERSECTION_SIGN = "×"

VALUE_ORDER: dict[str, tuple[str, ...]] = {
    "sex": SEXES,
    "age_band": AGE_BANDS,
    "ethnicity": ETHNICITIES,
    "vendor": VENDORS,
    "field_strength": FIELD_STRENGTHS,
}

ATTRIBUTE_LABELS = {
    "sex": "sex",
    "age_band": "age band",
    "ethnicity": "ethnicity",
    "vendor": "scanner manufacturer",
    "field_strength": "magnetic field strength",
    "site": "site",
}


def value_label(attribute: str, value: str) -> str:
    """How a group value reads in the report: "not recorded", "18-39 years", "1.5 tesla"."""
    if value == UNKNOWN:
        return "not recorded"
    if attribute == "age_band":
        return f"{value.replace('-', '–')} years"
    if attribute == "field_strength" and value.endswith("T"):
        return f"{value[:-1]} tesla"
    return value


@dataclass(frozen=True, order=True)
class Grouping:
    """A way to split the cases: by nothing ("all"), one attribute, or an intersection."""

    attributes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return INTERSECTION_SIGN.join(self.attributes) if self.attributes else "all"

    @property
    def label(self) -> str:
        if not self.attributes:
            return "all cases"
        return " × ".join(ATTRIBUTE_LABELS.get(a, a.replace("_", " ")) for a in self.attributes)

    @classmethod
    def from_name(cls, name: str) -> Grouping:
        return cls(()) if name == "all" else cls(tuple(name.split(INTERSECTION_SIGN)))


ALL = Grouping(())
DEFAULT_INTERSECTIONS = (("sex", "ethnicity"), ("vendor", "field_strength"))
DEFAULT_GROUPINGS: tuple[Grouping, ...] = (
    ALL,
    *(Grouping((name,)) for name in ATTRIBUTE_NAMES),
    *(Grouping(pair) for pair in DEFAULT_INTERSECTIONS),
)


@dataclass(frozen=True)
class MetricInfo:
    """A continuous per-case metric, as the report explains it."""

    name: str  # key in CaseRecord.metrics
    label: str  # "Dice similarity of the myocardium"
    unit: str  # "" for unitless; "percentage points"
    explanation: str  # one plain sentence
    higher_is_better: bool
    lower_bound: float | None = None  # intervals are clipped to the metric's range
    upper_bound: float | None = None
    default_tolerance: float = 0.05  # largest accepted gap, in the metric's unit
    decimals: int = 3


@dataclass(frozen=True)
class CallPair:
    """A binary call: the reference answer and the model's, optionally with a score.

    The score (a per-case metric, higher = more likely positive) feeds binned
    histograms from which the area under the curve is computed. Bin edges are
    fixed here, never taken from the data: edges fitted to the data would carry
    case values.
    """

    name: str  # "scar_present"
    reference: str  # key in CaseRecord.calls
    predicted: str  # key in CaseRecord.calls
    label: str  # "scar present"
    score_metric: str | None = None  # key in CaseRecord.metrics
    score_label: str = ""
    score_bin_edges: tuple[float, ...] = ()

    @property
    def has_score(self) -> bool:
        return self.score_metric is not None and len(self.score_bin_edges) >= 2


@dataclass(frozen=True)
class AuditSpec:
    groupings: tuple[Grouping, ...] = DEFAULT_GROUPINGS
    metrics: tuple[MetricInfo, ...] = ()
    calls: tuple[CallPair, ...] = ()
    task_label: str = ""
    # Gaps compare real groups: "not recorded" is shown in the tables, never picked
    # as the worst or best group.
    unknown_in_gaps: bool = False
    rate_tolerance: float = 0.10  # sensitivity, specificity, area under the curve, equalised odds

    def __post_init__(self) -> None:
        self.validate()

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def metric(self, name: str) -> MetricInfo:
        for info in self.metrics:
            if info.name == name:
                return info
        raise KeyError(f"metric {name!r} is not in the audit spec ({', '.join(self.metric_names)})")

    def call(self, name: str) -> CallPair:
        for pair in self.calls:
            if pair.name == name:
                return pair
        raise KeyError(f"call {name!r} is not in the audit spec")

    def validate(self) -> None:
        problems = []
        names = [m.name for m in self.metrics] + [c.name for c in self.calls]
        if len(set(names)) != len(names):
            problems.append(f"metric and call names must be distinct: {names}")
        for name in names:
            if not name or any(ch in name for ch in RESERVED_CHARACTERS):
                problems.append(f"name {name!r} is empty or uses one of {RESERVED_CHARACTERS}")
        if ALL not in self.groupings:
            problems.append("the groupings must include 'all' (the site total)")
        known = set(ATTRIBUTE_NAMES)
        for grouping in self.groupings:
            unknown = [a for a in grouping.attributes if a not in known]
            if unknown:
                problems.append(f"grouping {grouping.name!r}: unknown attribute(s) {unknown}")
            if len(set(grouping.attributes)) != len(grouping.attributes):
                problems.append(f"grouping {grouping.name!r} repeats an attribute")
        for pair in self.calls:
            edges = pair.score_bin_edges
            if pair.score_metric is not None and (len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges))):
                problems.append(f"call {pair.name!r}: score bin edges must rise strictly ({edges})")
        if problems:
            raise ValueError("invalid audit spec: " + "; ".join(problems))
