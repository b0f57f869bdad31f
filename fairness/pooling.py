"""Several sites' statistics summed exactly: counts stay integers, sums are added with ``math.fsum``.

A figure a site withheld is left out of that site's share, and the sum records which
sites each figure covers, so that a reader can tell a consortium figure from a
partial one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from fairness.statistics import (
    CASES,
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
        {(w.group, w.item) for s in sites for w in s.withheld} - set(contributors),
        key=lambda gi: (gi[0].key, gi[1].key),
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
