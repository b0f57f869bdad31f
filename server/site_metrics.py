"""Turning the scalars that sites send into per-site and consortium metrics.

Sites send sums and counts (``<metric>-sum``, ``<metric>-count``), never means, so
that the consortium mean is exact (a mean of site means would weight a site with
3 validation cases like one with 300) and a metric that is undefined at a site
(no scar case) simply contributes a count of 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from flwr.app import MetricRecord, MetricRecordValues, RecordDict

from cmrfl.protocol import COUNT_SUFFIX, SUM_SUFFIX


def means_from_sums(metrics: Mapping[str, MetricRecordValues]) -> dict[str, float]:
    """``{x-sum, x-count, y, ...}`` → ``{x: mean or NaN, y, ...}``."""
    values = {key: _scalar(key, value) for key, value in metrics.items()}
    means: dict[str, float] = {}
    for key, value in values.items():
        if key.endswith(SUM_SUFFIX):
            name = key[: -len(SUM_SUFFIX)]
            count = values.get(name + COUNT_SUFFIX, 0.0)
            means[name] = value / count if count else math.nan
        elif not key.endswith(COUNT_SUFFIX):
            means[key] = value
    return means


def _scalar(key: str, value: MetricRecordValues) -> float:
    if isinstance(value, list):
        raise TypeError(f"site metric {key!r} is a list; only scalars are aggregated")
    return value


def aggregate_site_metrics(replies: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Consortium metrics: sums and counts add up; other scalars are example-weighted."""
    totals: dict[str, float] = {}
    weighted: dict[str, float] = {}
    total_weight = 0.0
    for reply in replies:
        metrics = next(iter(reply.metric_records.values()))
        weight = float(_scalar(weighted_by_key, metrics[weighted_by_key]))
        total_weight += weight
        for key, value in metrics.items():
            if key.endswith((SUM_SUFFIX, COUNT_SUFFIX)) or key == weighted_by_key:
                totals[key] = totals.get(key, 0.0) + _scalar(key, value)
            elif weight > 0:  # a site with no examples has no say (and may send NaN)
                weighted[key] = weighted.get(key, 0.0) + _scalar(key, value) * weight
    aggregated: dict[str, MetricRecordValues] = (
        {k: v / total_weight for k, v in weighted.items()} if total_weight else {}
    )
    aggregated.update(totals)
    return MetricRecord(aggregated)
