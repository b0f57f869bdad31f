"""A site's suppressed statistics as a flat dict that fits a Flower ``MetricRecord``, and back.

Keys are strings, values ``int``, ``float``, ``list[int]`` or ``list[float]``: no
nested dicts, no strings. Every key starts with ``fairness|``::

    fairness|version                                            1
    fairness|suppression-threshold                              10
    fairness|bins|scar_present                                  [0.0, 0.5, …, 100.0]
    fairness|cell|sex=female|cases                              14
    fairness|cell|sex=female|metric|dice_myocardium|count       14
    fairness|cell|sex=female|metric|dice_myocardium|sum         11.2
    fairness|cell|sex=female|metric|dice_myocardium|sum-of-squares 9.1
    fairness|cell|sex=female|call|scar_present|positive|cases   10
    fairness|cell|sex=female|call|scar_present|positive|called-positive 7
    fairness|cell|sex=female|call|scar_present|positive|histogram [0, 1, …]
    fairness|withheld|sex=unknown|cases                         1

Keys name groups and figures, never cases. Only suppressed statistics can be
encoded (``fairness.suppression.suppress``); why a figure was withheld stays at
the site. ``decode`` checks everything and raises ``WireFormatError`` naming the
site and the key. ``add_statistics`` sums several sites exactly: counts stay
integers, sums are added with ``math.fsum``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cmr.attributes import ATTRIBUTE_NAMES
from fairness.statistics import (
    CASES,
    SIDES,
    CallSide,
    CellStatistics,
    Group,
    Item,
    MetricSums,
    SiteStatistics,
    WithheldItem,
    call_item,
    metric_item,
)

# Where a site's statistics travel in its evaluate reply: a ConfigRecord of this name.
MESSAGE_RECORD = "fairness"

WIRE_VERSION = 1
PREFIX = "fairness|"
VERSION_KEY = "fairness|version"
THRESHOLD_KEY = "fairness|suppression-threshold"

WireValue = int | float | list[int] | list[float]


class WireFormatError(ValueError):
    """A site's fairness statistics are not in the expected form."""


def encode(stats: SiteStatistics) -> dict[str, WireValue]:
    """The flat dict a site sends; refuses statistics that were not suppressed."""
    if not stats.is_suppressed:
        raise ValueError(
            f"statistics of site {stats.site_id!r} were not suppressed: "
            "call fairness.suppression.suppress before sending them"
        )
    wire: dict[str, WireValue] = {VERSION_KEY: WIRE_VERSION, THRESHOLD_KEY: int(stats.suppression_threshold)}
    for name, edges in stats.score_bin_edges.items():
        wire[f"{PREFIX}bins|{name}"] = [float(e) for e in edges]
    for group, cell in stats.cells.items():
        base = f"{PREFIX}cell|{group.key}|"
        wire[base + "cases"] = int(cell.cases)
        for name, sums in cell.metrics.items():
            wire[f"{base}metric|{name}|count"] = int(sums.count)
            wire[f"{base}metric|{name}|sum"] = float(sums.total)
            wire[f"{base}metric|{name}|sum-of-squares"] = float(sums.total_of_squares)
        for (name, side), call_side in cell.calls.items():
            wire[f"{base}call|{name}|{side}|cases"] = int(call_side.cases)
            wire[f"{base}call|{name}|{side}|called-positive"] = int(call_side.called_positive)
            if call_side.score_histogram:
                wire[f"{base}call|{name}|{side}|histogram"] = [int(v) for v in call_side.score_histogram]
    for item in stats.withheld:
        wire[f"{PREFIX}withheld|{item.group.key}|{item.item.key}"] = 1
    return wire


def decode(wire: Mapping[str, object], site_id: str) -> SiteStatistics:
    """A site's statistics from its flat dict; keys not starting with ``fairness|`` are ignored."""
    problems = _Problems(site_id)
    ours = {k: v for k, v in wire.items() if isinstance(k, str) and k.startswith(PREFIX)}
    version = ours.pop(VERSION_KEY, None)
    if version is None:
        problems.fail(VERSION_KEY, "missing: these are not fairness statistics")
    if version != WIRE_VERSION or isinstance(version, bool):
        problems.fail(VERSION_KEY, f"is {version!r}; this server reads version {WIRE_VERSION}")
    threshold = _integer(ours.pop(THRESHOLD_KEY, None), THRESHOLD_KEY, problems, minimum=1)

    edges: dict[str, tuple[float, ...]] = {}
    cases: dict[Group, int] = {}
    metric_fields: dict[tuple[Group, str], dict[str, object]] = defaultdict(dict)
    call_fields: dict[tuple[Group, str, str], dict[str, object]] = defaultdict(dict)
    withheld: list[WithheldItem] = []
    for key, value in ours.items():
        parts = key[len(PREFIX):].split("|")
        kind = parts[0]
        if kind == "bins" and len(parts) == 2:
            edges[parts[1]] = _bin_edges(value, key, problems)
        elif kind == "withheld" and len(parts) >= 3:
            if value != 1 or isinstance(value, bool):
                problems.fail(key, f"is {value!r}, expected 1")
            try:
                withheld.append(WithheldItem(_group(parts[1], key, problems), Item.from_key("|".join(parts[2:]))))
            except ValueError as error:
                problems.fail(key, str(error))
        elif kind == "cell" and len(parts) >= 3:
            group = _group(parts[1], key, problems)
            rest = parts[2:]
            if rest == ["cases"]:
                cases[group] = _integer(value, key, problems)
            elif len(rest) == 3 and rest[0] == "metric" and rest[2] in ("count", "sum", "sum-of-squares"):
                metric_fields[(group, rest[1])][rest[2]] = (key, value)
            elif len(rest) == 4 and rest[0] == "call" and rest[2] in SIDES and rest[3] in (
                "cases", "called-positive", "histogram"
            ):
                call_fields[(group, rest[1], rest[2])][rest[3]] = (key, value)
            else:
                problems.fail(key, "not a known figure of a group")
        else:
            problems.fail(key, "not a known fairness key")

    metrics: dict[Group, dict[str, MetricSums]] = defaultdict(dict)
    for (group, name), fields in metric_fields.items():
        where = f"{PREFIX}cell|{group.key}|metric|{name}"
        missing = {"count", "sum", "sum-of-squares"} - set(fields)
        if missing:
            problems.fail(where, f"missing {sorted(missing)}")
        count = _integer(fields["count"][1], fields["count"][0], problems)
        total = _finite(fields["sum"][1], fields["sum"][0], problems)
        squares = _finite(fields["sum-of-squares"][1], fields["sum-of-squares"][0], problems)
        if squares < 0:
            problems.fail(fields["sum-of-squares"][0], "is negative")
        metrics[group][name] = MetricSums(count, total, squares)

    calls: dict[Group, dict[tuple[str, str], CallSide]] = defaultdict(dict)
    for (group, name, side), fields in call_fields.items():
        where = f"{PREFIX}cell|{group.key}|call|{name}|{side}"
        missing = {"cases", "called-positive"} - set(fields)
        if missing:
            problems.fail(where, f"missing {sorted(missing)}")
        side_cases = _integer(fields["cases"][1], fields["cases"][0], problems)
        called = _integer(fields["called-positive"][1], fields["called-positive"][0], problems)
        if called > side_cases:
            problems.fail(fields["called-positive"][0], f"{called} positive calls among {side_cases} cases")
        histogram: tuple[int, ...] = ()
        if "histogram" in fields:
            key, value = fields["histogram"]
            if name not in edges:
                problems.fail(key, f"histogram without bin edges ({PREFIX}bins|{name})")
            histogram = _histogram(value, key, problems)
            if len(histogram) != len(edges[name]) - 1:
                problems.fail(key, f"{len(histogram)} bins, the edges make {len(edges[name]) - 1}")
            if sum(histogram) > side_cases:
                problems.fail(key, f"histogram counts {sum(histogram)} cases, the side has {side_cases}")
        calls[group][(name, side)] = CallSide(side_cases, called, histogram)

    cells: dict[Group, CellStatistics] = {}
    for group in set(metrics) | set(calls):
        if group not in cases:
            problems.fail(f"{PREFIX}cell|{group.key}|cases", "missing for a group that has figures")
    for group, count in cases.items():
        for name, sums in metrics[group].items():
            if sums.count > count:
                problems.fail(f"{PREFIX}cell|{group.key}|metric|{name}|count", f"{sums.count} values, {count} cases")
        for name in {n for n, _ in calls[group]}:
            sides = [calls[group][(name, s)].cases for s in SIDES if (name, s) in calls[group]]
            if sum(sides) > count:
                problems.fail(f"{PREFIX}cell|{group.key}|call|{name}", f"{sum(sides)} cases on its sides, {count} in the group")
        cells[group] = CellStatistics(count, dict(metrics[group]), dict(calls[group]))
    for item in withheld:
        if item.group in cells and (item.item == CASES or cells[item.group].get(item.item) is not None):
            problems.fail(f"{PREFIX}withheld|{item.group.key}|{item.item.key}", "withheld and sent at once")
    return SiteStatistics(
        site_id=site_id,
        cells=dict(sorted(cells.items(), key=lambda kv: (len(kv[0].values), kv[0].key))),
        withheld=tuple(sorted(withheld, key=lambda w: (w.group.key, w.item.key))),
        suppression_threshold=threshold,
        score_bin_edges=edges,
    )


@dataclass(frozen=True)
class PooledStatistics:
    """Several sites summed: each figure over the sites that sent it."""

    statistics: SiteStatistics
    contributors: dict[tuple[Group, Item], tuple[str, ...]]  # (group, figure) → sites summed

    def sites_for(self, group: Group, item: Item) -> tuple[str, ...]:
        return self.contributors.get((group, item), ())


def add_statistics(sites: Sequence[SiteStatistics], site_id: str = "all sites") -> PooledStatistics:
    """Exact sums over sites; a figure withheld at a site is left out of that site's share.

    ``contributors`` says which sites each figure sums, so that a reader can tell a
    consortium figure from a partial one. Score bins must be equal at every site.
    """
    edges: dict[str, tuple[float, ...]] = {}
    for stats in sites:
        for name, these in stats.score_bin_edges.items():
            if edges.setdefault(name, tuple(these)) != tuple(these):
                raise ValueError(f"site {stats.site_id!r}: score bins of {name!r} differ from the other sites'")
    cases: dict[Group, list[int]] = defaultdict(list)
    metric_parts: dict[tuple[Group, str], list[MetricSums]] = defaultdict(list)
    call_parts: dict[tuple[Group, str, str], list[CallSide]] = defaultdict(list)
    contributors: dict[tuple[Group, Item], list[str]] = defaultdict(list)
    for stats in sites:
        for group, cell in stats.cells.items():
            cases[group].append(cell.cases)
            contributors[(group, CASES)].append(stats.site_id)
            for name, sums in cell.metrics.items():
                metric_parts[(group, name)].append(sums)
                contributors[(group, metric_item(name))].append(stats.site_id)
            for (name, side), call_side in cell.calls.items():
                call_parts[(group, name, side)].append(call_side)
                contributors[(group, call_item(name, side))].append(stats.site_id)
    cells = {}
    for group, counts in cases.items():
        metrics = {
            name: MetricSums(
                sum(p.count for p in parts),
                math.fsum(p.total for p in parts),
                math.fsum(p.total_of_squares for p in parts),
            )
            for (g, name), parts in metric_parts.items()
            if g == group
        }
        calls = {}
        for (g, name, side), parts in call_parts.items():
            if g == group:
                total = CallSide(0, 0, tuple(0 for _ in parts[0].score_histogram))
                for part in parts:
                    total = total + part
                calls[(name, side)] = total
        cells[group] = CellStatistics(sum(counts), metrics, calls)
    withheld_everywhere = sorted(
        {(w.group, w.item) for s in sites for w in s.withheld} - set(contributors), key=lambda gi: (gi[0].key, gi[1].key)
    )
    thresholds = {s.suppression_threshold for s in sites if s.suppression_threshold is not None}
    pooled = SiteStatistics(
        site_id=site_id,
        cells=cells,
        withheld=tuple(WithheldItem(g, i) for g, i in withheld_everywhere),
        suppression_threshold=max(thresholds) if thresholds else None,
        score_bin_edges=edges,
    )
    return PooledStatistics(pooled, {k: tuple(v) for k, v in contributors.items()})


class _Problems:
    def __init__(self, site_id: str) -> None:
        self.site_id = site_id

    def fail(self, key: str, message: str):
        raise WireFormatError(f"fairness statistics from site {self.site_id!r}: {key} {message}")


def _group(text: str, key: str, problems: _Problems) -> Group:
    try:
        group = Group.from_key(text)
    except ValueError as error:
        problems.fail(key, str(error))
    unknown = [a for a in group.grouping.attributes if a not in ATTRIBUTE_NAMES]
    if unknown:
        problems.fail(key, f"names unknown attribute(s) {unknown}")
    return group


def _integer(value, key: str, problems: _Problems, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.fail(key, f"is {value!r}, expected a whole number")
    if value < minimum:
        problems.fail(key, f"is {value}, expected {minimum} or more")
    return int(value)


def _finite(value, key: str, problems: _Problems) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        problems.fail(key, f"is {value!r}, expected a finite number")
    return float(value)


def _histogram(value, key: str, problems: _Problems) -> tuple[int, ...]:
    if not isinstance(value, list):
        problems.fail(key, f"is {type(value).__name__}, expected a list of whole numbers")
    return tuple(_integer(v, key, problems) for v in value)


def _bin_edges(value, key: str, problems: _Problems) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) < 2:
        problems.fail(key, "expected a list of at least two bin edges")
    edges = tuple(_finite(v, key, problems) for v in value)
    if any(b <= a for a, b in zip(edges, edges[1:])):
        problems.fail(key, "bin edges must rise strictly")
    return edges
