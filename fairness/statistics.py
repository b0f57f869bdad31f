"""Sufficient statistics of per-case records, per subgroup.

For every group of cases (everyone, each value of each attribute, each cell of the
chosen intersections) a site keeps only sums that add up across sites:

* the number of cases;
* per continuous metric: how many cases have a value, their sum and sum of squares
  (NaN values are left out, so a metric undefined for a case does not count);
* per binary call, separately for the cases where the reference says yes
  ("positive" side) and no ("negative" side): how many cases, how many the model
  called positive, and a histogram of the score over fixed bins.

From these the server gets exact means, standard deviations, sensitivity,
specificity and the area under the curve of any union of sites, and of "everyone
but this group" by subtraction. Nothing here is per case.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from cmr.attributes import UNKNOWN
from fairness.records import CaseRecordLike
from fairness.spec import (
    ALL,
    ATTRIBUTE_LABELS,
    RESERVED_CHARACTERS,
    VALUE_ORDER,
    AuditSpec,
    CallPair,
    Grouping,
    value_label,
)

POSITIVE = "positive"  # the reference call is yes
NEGATIVE = "negative"  # the reference call is no
SIDES = (POSITIVE, NEGATIVE)


@dataclass(frozen=True)
class Group:
    """One group of cases: a grouping and one value per attribute in it."""

    grouping: Grouping
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.values) != len(self.grouping.attributes):
            raise ValueError(f"group of {self.grouping.name!r} needs one value per attribute: {self.values}")

    @property
    def key(self) -> str:
        """``all``, ``sex=female`` or ``sex=female&ethnicity=White``."""
        if not self.values:
            return "all"
        return "&".join(f"{a}={v}" for a, v in zip(self.grouping.attributes, self.values))

    @property
    def label(self) -> str:
        if not self.values:
            return "all cases"
        return " × ".join(value_label(a, v) for a, v in zip(self.grouping.attributes, self.values))

    @property
    def long_label(self) -> str:
        """``sex: female`` or ``sex × ethnicity: female × White``."""
        return self.label if not self.values else f"{self.grouping.label}: {self.label}"

    @property
    def has_unknown(self) -> bool:
        return UNKNOWN in self.values

    def contains(self, attributes: dict[str, str]) -> bool:
        return all(attributes.get(a) == v for a, v in zip(self.grouping.attributes, self.values))

    def refines(self, coarser: Group) -> bool:
        """True when every case of this group is in ``coarser`` (a strict coarsening)."""
        if set(coarser.grouping.attributes) >= set(self.grouping.attributes):
            return False
        if not set(coarser.grouping.attributes) <= set(self.grouping.attributes):
            return False
        mine = dict(zip(self.grouping.attributes, self.values))
        return all(mine[a] == v for a, v in zip(coarser.grouping.attributes, coarser.values))

    @classmethod
    def of(cls, grouping: Grouping, attributes: dict[str, str]) -> Group:
        return cls(grouping, tuple(attributes[a] for a in grouping.attributes))


ALL_CASES = Group(ALL, ())


def group_order(groupings: Sequence[Grouping]):
    """Sort key: groupings in spec order, values in the order of cmr.attributes."""
    position = {g: i for i, g in enumerate(groupings)}

    def key(group: Group) -> tuple:
        ranks = []
        for attribute, value in zip(group.grouping.attributes, group.values):
            order = VALUE_ORDER.get(attribute, ())
            known = value in order and value != UNKNOWN
            ranks.append((0 if known else 1, order.index(value) if known else 0, value))
        return (position.get(group.grouping, len(position)), group.grouping.attributes, tuple(ranks))

    return key


@dataclass(frozen=True)
class Item:
    """What in a group's statistics is meant: the whole group, a metric, or one side of a call."""

    kind: str  # "cases" | "metric" | "call"
    name: str = ""
    side: str = ""

    @property
    def key(self) -> str:
        if self.kind == "cases":
            return "cases"
        if self.kind == "metric":
            return f"metric|{self.name}"
        return f"call|{self.name}|{self.side}"


CASES = Item("cases")


def metric_item(name: str) -> Item:
    return Item("metric", name)


def call_item(name: str, side: str) -> Item:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, not {side!r}")
    return Item("call", name, side)


@dataclass(frozen=True)
class MetricSums:
    """Count, sum and sum of squares of one metric's finite values."""

    count: int = 0
    total: float = 0.0
    total_of_squares: float = 0.0

    def __add__(self, other: MetricSums) -> MetricSums:
        return MetricSums(
            self.count + other.count,
            self.total + other.total,
            self.total_of_squares + other.total_of_squares,
        )

    def __sub__(self, other: MetricSums) -> MetricSums:
        return MetricSums(
            self.count - other.count,
            self.total - other.total,
            self.total_of_squares - other.total_of_squares,
        )

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count > 0 else math.nan

    @property
    def variance(self) -> float:
        """Sample variance (n − 1); NaN below two values."""
        if self.count < 2:
            return math.nan
        centred = self.total_of_squares - self.total * self.total / self.count
        return max(centred, 0.0) / (self.count - 1)

    @classmethod
    def of(cls, values: Iterable[float]) -> MetricSums:
        finite = [float(v) for v in values if math.isfinite(v)]
        return cls(len(finite), math.fsum(finite), math.fsum(v * v for v in finite))


@dataclass(frozen=True)
class CallSide:
    """One side of a binary call in a group: cases, model positives, score histogram.

    On the positive side (reference yes) ``called_positive`` is the true positives;
    on the negative side (reference no) it is the false positives.
    """

    cases: int = 0
    called_positive: int = 0
    score_histogram: tuple[int, ...] = ()

    def __add__(self, other: CallSide) -> CallSide:
        return CallSide(
            self.cases + other.cases,
            self.called_positive + other.called_positive,
            _add_histograms(self.score_histogram, other.score_histogram, +1),
        )

    def __sub__(self, other: CallSide) -> CallSide:
        return CallSide(
            self.cases - other.cases,
            self.called_positive - other.called_positive,
            _add_histograms(self.score_histogram, other.score_histogram, -1),
        )


def _add_histograms(a: tuple[int, ...], b: tuple[int, ...], sign: int) -> tuple[int, ...]:
    if not a and not b:
        return ()
    if len(a) != len(b):
        raise ValueError(f"score histograms have different bins ({len(a)} and {len(b)})")
    return tuple(x + sign * y for x, y in zip(a, b))


@dataclass(frozen=True)
class CellStatistics:
    """Everything a site keeps about one group."""

    cases: int
    metrics: dict[str, MetricSums] = field(default_factory=dict)
    calls: dict[tuple[str, str], CallSide] = field(default_factory=dict)  # (call, side)

    def get(self, item: Item):
        """The item's statistics, or None when it is not here (withheld)."""
        if item.kind == "cases":
            return self.cases
        if item.kind == "metric":
            return self.metrics.get(item.name)
        return self.calls.get((item.name, item.side))

    def items(self) -> Iterator[Item]:
        yield CASES
        for name in self.metrics:
            yield metric_item(name)
        for name, side in self.calls:
            yield call_item(name, side)


@dataclass(frozen=True)
class Atom:
    """The finest split of a site's cases: all attribute values, and which figures count the case."""

    attributes: tuple[tuple[str, str], ...]  # (attribute, value) for every attribute of the spec
    metrics_defined: tuple[str, ...]  # metrics with a finite value for the case
    call_sides: tuple[tuple[str, str], ...]  # (call, side) for the calls the case has

    def counted_by(self, group: Group, item: Item) -> bool:
        """True when the case is one of those behind ``item`` of ``group``."""
        if not group.contains(dict(self.attributes)):
            return False
        if item.kind == "cases":
            return True
        if item.kind == "metric":
            return item.name in self.metrics_defined
        return (item.name, item.side) in self.call_sides


@dataclass(frozen=True)
class WithheldItem:
    """A group (or one item of it) a site did not send, and why (the reason stays at the site)."""

    group: Group
    item: Item
    reason: str = ""


@dataclass(frozen=True)
class SiteStatistics:
    """A site's statistics for one evaluation round.

    Before ``fairness.suppression.suppress`` it holds every non-empty group and
    ``suppression_threshold`` is None: that object never leaves the site.
    Afterwards ``cells`` holds only what may be sent, ``withheld`` what was not.
    """

    site_id: str
    cells: dict[Group, CellStatistics]
    withheld: tuple[WithheldItem, ...] = ()
    suppression_threshold: int | None = None
    score_bin_edges: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # Site-local, never sent: how many cases share each combination of attribute values
    # and of which figures count them (``Atom``). Suppression needs it to find every
    # small set of cases that published figures could isolate; it is emptied by suppress.
    atoms: dict[Atom, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_suppressed(self) -> bool:
        return self.suppression_threshold is not None

    def get(self, group: Group, item: Item):
        cell = self.cells.get(group)
        return None if cell is None else cell.get(item)


def score_bin_index(value: float, edges: Sequence[float]) -> int | None:
    """Bin of a score on fixed edges; below the first edge goes in the first bin,
    at or above the last in the last; NaN has no bin."""
    if not math.isfinite(value):
        return None
    index = int(np.searchsorted(np.asarray(edges, dtype=float), value, side="right")) - 1
    return min(max(index, 0), len(edges) - 2)


def call_side_of(record: CaseRecordLike, pair: CallPair) -> str | None:
    """``positive``/``negative`` by the reference call; None when either call is missing."""
    calls = record.calls
    if pair.reference not in calls or pair.predicted not in calls:
        return None
    return POSITIVE if bool(calls[pair.reference]) else NEGATIVE


def check_attribute_values(record: CaseRecordLike, spec: AuditSpec) -> dict[str, str]:
    attributes = dict(record.attributes.as_dict())
    for grouping in spec.groupings:
        for attribute in grouping.attributes:
            value = attributes.get(attribute)
            if value is None:
                raise ValueError(f"case {record.case_id}: no attribute {attribute!r}")
            if not value or any(ch in value for ch in RESERVED_CHARACTERS):
                raise ValueError(
                    f"case {record.case_id}: {ATTRIBUTE_LABELS.get(attribute, attribute)} value "
                    f"{value!r} is empty or uses one of {RESERVED_CHARACTERS}"
                )
    return attributes


def groups_of_record(attributes: dict[str, str], spec: AuditSpec) -> list[Group]:
    return [Group.of(grouping, attributes) for grouping in spec.groupings]


def site_statistics(records: Sequence[CaseRecordLike], spec: AuditSpec, site_id: str | None = None) -> SiteStatistics:
    """Sufficient statistics of every non-empty group (site-local: not yet suppressed).

    ``site_id`` defaults to the records' own; records from several sites need one
    given explicitly (pooling, as in the tests).
    """
    records = list(records)
    if site_id is None:
        site_ids = sorted({r.site_id for r in records})
        if len(site_ids) > 1:
            raise ValueError(f"records come from several sites {site_ids}: pass site_id")
        site_id = site_ids[0] if site_ids else ""
    members: dict[Group, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        for group in groups_of_record(check_attribute_values(record, spec), spec):
            members[group].append(index)
    if not records:
        members[ALL_CASES] = []

    cells = {}
    for group, indices in members.items():
        chosen = [records[i] for i in indices]
        metrics = {
            info.name: MetricSums.of(r.metrics.get(info.name, math.nan) for r in chosen) for info in spec.metrics
        }
        calls = {}
        for pair in spec.calls:
            for side in SIDES:
                calls[(pair.name, side)] = _call_side([r for r in chosen if call_side_of(r, pair) == side], pair)
        cells[group] = CellStatistics(len(chosen), metrics, calls)
    ordered = dict(sorted(cells.items(), key=lambda kv: group_order(spec.groupings)(kv[0])))
    edges = {pair.name: tuple(float(e) for e in pair.score_bin_edges) for pair in spec.calls if pair.has_score}
    atoms: dict[Atom, int] = defaultdict(int)
    used = sorted({a for grouping in spec.groupings for a in grouping.attributes})
    for record in records:
        attributes = record.attributes.as_dict()
        atom = Atom(
            attributes=tuple((a, attributes[a]) for a in used),
            metrics_defined=tuple(m.name for m in spec.metrics if math.isfinite(record.metrics.get(m.name, math.nan))),
            call_sides=tuple(
                (pair.name, found) for pair in spec.calls if (found := call_side_of(record, pair)) is not None
            ),
        )
        atoms[atom] += 1
    return SiteStatistics(site_id=site_id, cells=ordered, score_bin_edges=edges, atoms=dict(atoms))


def _call_side(records: list[CaseRecordLike], pair: CallPair) -> CallSide:
    called = sum(1 for r in records if bool(r.calls[pair.predicted]))
    histogram: tuple[int, ...] = ()
    if pair.has_score and pair.score_metric is not None:
        bins = [0] * (len(pair.score_bin_edges) - 1)
        for record in records:
            index = score_bin_index(record.metrics.get(pair.score_metric, math.nan), pair.score_bin_edges)
            if index is not None:
                bins[index] += 1
        histogram = tuple(bins)
    return CallSide(len(records), called, histogram)
