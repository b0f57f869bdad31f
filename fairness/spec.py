"""What the fairness audit measures, over which groups, and how much of a gap is tolerated.

One ``AuditSpec`` names the groupings (single attributes and chosen intersections),
the continuous metrics (with the words and units a clinician reads), and the binary
calls (a reference/prediction pair, optionally with a score for the area under the
curve). Sites and the server build their statistics from the same spec; the spec
holds only names and constants, never data.

``Tolerances`` are the largest gaps the consortium accepts, from the run config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cmr.attributes import (
    AGE_BANDS,
    ATTRIBUTE_NAMES,
    ETHNICITIES,
    FIELD_STRENGTHS,
    SEXES,
    UNKNOWN,
    VENDORS,
)

# Characters with a meaning in the wire keys (fairness.wire); names and values may not use them.
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
            if pair.score_metric is not None and (
                len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:]))
            ):
                problems.append(f"call {pair.name!r}: score bin edges must rise strictly ({edges})")
        if problems:
            raise ValueError("invalid audit spec: " + "; ".join(problems))


LGE_AUDIT_SPEC = AuditSpec(
    task_label="scar segmentation on late gadolinium enhancement (LGE) cardiac magnetic resonance images",
    metrics=(
        MetricInfo(
            name="dice_myocardium",
            label="Dice similarity of the myocardium",
            unit="",
            explanation=(
                "Overlap between the heart muscle (myocardium) outlined by the model and by the "
                "expert, from 0 (no overlap) to 1 (perfect overlap)."
            ),
            higher_is_better=True,
            lower_bound=0.0,
            upper_bound=1.0,
            default_tolerance=0.05,
        ),
        MetricInfo(
            name="dice_scar",
            label="Dice similarity of the scar",
            unit="",
            explanation=(
                "Overlap between the scar outlined by the model and by the expert, from 0 to 1 "
                "(1 = perfect overlap); only patients whose reference shows scar count."
            ),
            higher_is_better=True,
            lower_bound=0.0,
            upper_bound=1.0,
            default_tolerance=0.05,
        ),
        MetricInfo(
            name="scar_burden_abs_error",
            label="Error in scar burden",
            unit="percentage points",
            explanation=(
                "Scar burden is the percentage of the left-ventricular myocardium that is scar; "
                "the error is the absolute difference between the model's and the expert's "
                "scar burden, in percentage points (0 = exact)."
            ),
            higher_is_better=False,
            lower_bound=0.0,
            upper_bound=100.0,
            default_tolerance=2.0,
            decimals=2,
        ),
    ),
    calls=(
        CallPair(
            name="scar_present",
            reference="scar_present_reference",
            predicted="scar_present_predicted",
            label="scar present",
            score_metric="scar_burden_percent_predicted",
            score_label="predicted scar burden (% of myocardium)",
            # Percent of myocardium; the presence call's threshold (1 %) is an edge.
            score_bin_edges=(0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0),
        ),
    ),
)


def _t1_error(name: str, label: str, where: str, tolerance: float) -> MetricInfo:
    return MetricInfo(
        name=name,
        label=label,
        unit="ms",
        explanation=(
            f"Average absolute difference between the T1 relaxation time mapped by the model and the "
            f"reference T1, over the pixels of {where}, in milliseconds (0 = exact)."
        ),
        higher_is_better=False,
        lower_bound=0.0,
        default_tolerance=tolerance,
        decimals=1,
    )


MAPPING_AUDIT_SPEC = AuditSpec(
    task_label="T1 and extracellular volume (ECV) mapping from MOLLI cardiac magnetic resonance series",
    metrics=(
        _t1_error("myocardial_t1_abs_error_ms", "Error in native myocardial T1", "the heart muscle (myocardium)", 20.0),
        _t1_error("blood_t1_abs_error_ms", "Error in native blood T1", "the left-ventricular blood pool", 30.0),
        _t1_error(
            "post_myocardial_t1_abs_error_ms", "Error in post-contrast myocardial T1",
            "the myocardium after contrast", 15.0,
        ),
        MetricInfo(
            name="ecv_abs_error_percent",
            label="Error in extracellular volume (ECV)",
            unit="percentage points",
            explanation=(
                "ECV is the share of the heart muscle outside its cells, computed from T1 before and "
                "after contrast and the haematocrit; the error is the absolute difference between "
                "the ECV from the model's maps and from the reference maps, in percentage points."
            ),
            higher_is_better=False,
            lower_bound=0.0,
            upper_bound=100.0,
            default_tolerance=1.5,
            decimals=2,
        ),
    ),
)


def tolerance_key(metric_name: str) -> str:
    """Run-config key of a metric's gap tolerance: fairness-tolerance-dice-myocardium."""
    return "fairness-tolerance-" + metric_name.replace("_", "-")


RATE_TOLERANCE_KEY = "fairness-tolerance-rates"


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
        gaps = {}
        for info in spec.metrics:
            gaps[info.name] = _non_negative(run_config, tolerance_key(info.name), info.default_tolerance)
        rate = _non_negative(run_config, RATE_TOLERANCE_KEY, spec.rate_tolerance)
        return cls(gaps, rate)

    def to_run_config(self, spec: AuditSpec) -> dict[str, float]:
        """The keys and values to declare under [tool.flwr.app.config]."""
        values = {tolerance_key(m.name): self.for_metric(spec, m.name) for m in spec.metrics}
        values[RATE_TOLERANCE_KEY] = float(self.rate_gap)
        return values


def _non_negative(run_config: Mapping[str, Any], key: str, default: float) -> float:
    value = run_config.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"run-config {key}={value!r}: expected a number") from None
    if not number >= 0:
        raise ValueError(f"run-config {key}={value!r}: a tolerance must be 0 or more")
    return number


AUDIT_SPECS: dict[str, AuditSpec] = {"lge": LGE_AUDIT_SPEC, "mapping": MAPPING_AUDIT_SPEC}


def run_config_problems(run_config: Mapping[str, Any]) -> list[str]:
    """What is wrong with the run config's ``fairness-*`` keys (for the federation's check)."""
    from fairness.suppression import suppression_threshold_from_run_config

    problems = []
    try:
        suppression_threshold_from_run_config(run_config)
    except ValueError as problem:
        problems.append(str(problem))
    for spec in AUDIT_SPECS.values():
        try:
            Tolerances.from_run_config(run_config, spec)
        except ValueError as problem:
            problems.append(str(problem))
    return problems


def audit_spec_for(task: str) -> AuditSpec:
    """The audit spec of a task, by the task's registry name."""
    try:
        return AUDIT_SPECS[task]
    except KeyError:
        raise KeyError(f"no fairness audit spec for task {task!r}; known: {', '.join(sorted(AUDIT_SPECS))}") from None
