"""The audit report's figures, drawn with matplotlib (Agg) and returned as PNG bytes."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from fairness.audit import WORST_VS_REST, AuditResult, GroupEstimate
from fairness.evidence import Measure

RECORDED = "#1f4e79"
NOT_RECORDED = "#9a9a9a"
FLAGGED = "#c0392b"
OVERALL = "#555555"


def axis_label(measure: Measure) -> str:
    unit = f" ({measure.unit})" if measure.unit else " (0 to 1)"
    return measure.label + unit


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def group_intervals(
    estimates: Sequence[GroupEstimate], measure: Measure, title: str, highlight: AbstractSet[str] = frozenset()
) -> bytes:
    """One row per group: the estimate and its 95 % interval; the all-cases value as a dashed line."""
    rows = [e for e in estimates if e.measure == measure.key]
    overall = next((e for e in rows if e.group == "all"), None)
    rows = [e for e in rows if e.group != "all"]
    height = max(2.0, 0.24 * len(rows) + 1.2)
    figure, axis = plt.subplots(figsize=(7.5, height))
    for position, estimate in enumerate(rows):
        colour = FLAGGED if estimate.group in highlight else (RECORDED if estimate.recorded else NOT_RECORDED)
        if math.isfinite(estimate.low) and math.isfinite(estimate.high):
            axis.plot([estimate.low, estimate.high], [position, position], color=colour, linewidth=2)
        axis.plot([estimate.value], [position], "o", color=colour, markersize=5)
    axis.set_yticks(range(len(rows)))
    axis.set_yticklabels([f"{e.label}  (n={e.n})" for e in rows], fontsize=8)
    axis.invert_yaxis()
    if overall is not None:
        label = f"all cases ({overall.value:.{measure.decimals}f})"
        axis.axvline(overall.value, color=OVERALL, linestyle="--", linewidth=1, label=label)
        axis.legend(loc="lower right", fontsize=8)
    if measure.lower_bound is not None and measure.upper_bound is not None and measure.upper_bound <= 1:
        axis.set_xlim(max(measure.lower_bound, axis.get_xlim()[0]), min(measure.upper_bound, axis.get_xlim()[1]))
    axis.set_xlabel(axis_label(measure) + ("; higher is better" if measure.higher_is_better else "; lower is better"))
    axis.set_title(title, fontsize=10)
    axis.grid(axis="x", alpha=0.3)
    return _png(figure)


def gaps_over_rounds(result: AuditResult) -> bytes:
    """Per measure: each grouping's worst-group-vs-everyone-else shortfall per round, 95 % intervals."""
    measures = list(result.measures)
    columns = 2
    rows = math.ceil(len(measures) / columns)
    palette = plt.get_cmap("tab10")
    colours = {name: palette(n % 10) for n, name in enumerate(result.groupings)}
    figure, axes = plt.subplots(rows, columns, figsize=(11, 3.0 * rows + 0.8), squeeze=False)
    legend: dict[str, Any] = {}
    for axis, measure in zip(axes.flat, measures):
        series: dict[str, list[tuple[int, float, float, float]]] = {}
        for audit in result.rounds:
            for gap in audit.gaps:
                if gap.measure == measure.key and gap.comparison == WORST_VS_REST:
                    series.setdefault(gap.grouping, []).append(
                        (audit.server_round, gap.shortfall, gap.shortfall_low, gap.shortfall_high)
                    )
                    legend.setdefault(gap.grouping_label, colours.get(gap.grouping, "black"))
        for number, (grouping, points) in enumerate(sorted(series.items())):
            offset = (number - len(series) / 2) * 0.05
            x = [p[0] + offset for p in points]
            y = [p[1] for p in points]
            low = [p[1] - p[2] if math.isfinite(p[2]) else 0 for p in points]
            high = [p[3] - p[1] if math.isfinite(p[3]) else 0 for p in points]
            axis.errorbar(
                x,
                y,
                yerr=[low, high],
                marker="o",
                markersize=3,
                capsize=2,
                linewidth=1,
                color=colours.get(grouping, "black"),
            )
        axis.axhline(measure.tolerance, color=FLAGGED, linestyle="--", linewidth=1)
        axis.axhline(0, color=OVERALL, linewidth=0.6)
        axis.set_title(measure.label, fontsize=9)
        axis.set_ylabel(f"shortfall ({measure.unit or '0 to 1 scale'})", fontsize=8)
        axis.set_xlabel("round", fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelsize=7)
        if not series:
            axis.text(0.5, 0.5, "no comparison possible", transform=axis.transAxes, ha="center", color=NOT_RECORDED)
    for axis in list(axes.flat)[len(measures) :]:
        axis.axis("off")
    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=label) for label, c in legend.items()]
    handles.append(Line2D([], [], color=FLAGGED, linestyle="--", label="largest accepted gap"))
    figure.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    figure.suptitle(
        "How much worse the worst group does than everyone else, round by round (positive = worse)", fontsize=10
    )
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return _png(figure)


def site_panel(estimates: Sequence[GroupEstimate], measures: Sequence[Measure], site: str) -> bytes:
    """One site's group estimates, one column per continuous metric."""
    chosen = [m for m in measures if m.kind == "mean"] or list(measures)[:3]
    groups = []
    for estimate in estimates:
        if estimate.group != "all" and estimate.measure in {m.key for m in chosen} and estimate.label not in groups:
            groups.append(estimate.label)
    height = max(2.0, 0.24 * len(groups) + 1.2)
    figure, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), height), sharey=True, squeeze=False)
    for axis, measure in zip(axes[0], chosen):
        rows = {e.label: e for e in estimates if e.measure == measure.key}
        for position, label in enumerate(groups):
            row = rows.get(label)
            if row is None:
                continue
            colour = RECORDED if row.recorded else NOT_RECORDED
            if math.isfinite(row.low) and math.isfinite(row.high):
                axis.plot([row.low, row.high], [position, position], color=colour, linewidth=2)
            axis.plot([row.value], [position], "o", color=colour, markersize=4)
        overall = rows.get("all cases")
        if overall is not None:
            axis.axvline(overall.value, color=OVERALL, linestyle="--", linewidth=1)
        axis.set_title(measure.label, fontsize=8)
        axis.set_xlabel(measure.unit or "0 to 1", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(groups)))
    axes[0][0].set_yticklabels(groups, fontsize=7)
    axes[0][0].invert_yaxis()
    figure.suptitle(f"{site}: groups this site sent (dashed: the site's all cases)", fontsize=9)
    figure.tight_layout()
    return _png(figure)
