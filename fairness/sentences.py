"""The audit in plain words: amounts with units, intervals, gaps, the summary, before and after.

Written for a clinical governance board: every figure with its unit, every
abbreviation spelt out. The HTML and JSON reports show these sentences as they are.
"""

from __future__ import annotations

import math

from fairness.audit import AuditResult, Gap
from fairness.comparison import BeforeAfter, GapChange, GapSide
from fairness.evidence import Measure
from fairness.settings import DEFAULT_SUPPRESSION_THRESHOLD
from fairness.spec import Grouping


def amount(value: float, measure: Measure, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "—"
    text = f"{value:+.{measure.decimals}f}" if signed else f"{value:.{measure.decimals}f}"
    return f"{text} {measure.unit}" if measure.unit else text


def interval_text(low: float, high: float, measure: Measure) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "too few values for an interval"
    return f"{amount(low, measure)} to {amount(high, measure)}"


def describe_gap(gap: Gap, measure: Measure) -> str:
    direction = "lower" if measure.higher_is_better else "higher"
    better = "" if measure.higher_is_better else " (lower is better)"
    cautious = interval_text(gap.flag_low, gap.flag_high, measure)
    verdict = (
        f"Even the cautious interval used for flagging ({cautious}) "
        f"lies beyond the largest accepted gap of {amount(gap.tolerance, measure)}, so this is flagged."
        if gap.flagged
        else f"The largest accepted gap is {amount(gap.tolerance, measure)}; the cautious interval used for flagging "
        f"({cautious}) does not lie wholly beyond it, so this is not flagged."
    )
    how_much = f"{amount(abs(gap.shortfall), measure)} {direction if gap.shortfall >= 0 else 'better'}"
    return (
        f"By {gap.grouping_label}, {gap.worst_label} (n={gap.worst_n}) against {gap.comparator_label} "
        f"(n={gap.comparator_n}) — {measure.label}{better}: {amount(gap.worst_value, measure)} against "
        f"{amount(gap.comparator_value, measure)}, {how_much} "
        f"(95 % interval of the shortfall {interval_text(gap.shortfall_low, gap.shortfall_high, measure)}). {verdict}"
    )


def summary_sentences(result: AuditResult) -> list[str]:
    final = result.final
    lines = []
    flags = result.flags
    tested = len(final.gaps)
    if flags:
        lines.append(
            f"{len(flags)} gap{'s' if len(flags) != 1 else ''} flagged in the final round (round "
            f"{final.server_round}), out of {tested} gaps examined."
        )
        lines += [describe_gap(gap, result.measure(gap.measure)) for gap in flags]
    elif tested:
        lines.append(
            f"No gap was flagged in the final round (round {final.server_round}): for none of the {tested} gaps "
            "examined is the model's shortfall for a group clearly beyond the largest accepted gap."
        )
        ranked = sorted(
            (g for g in final.gaps if math.isfinite(g.shortfall) and g.tolerance > 0),
            key=lambda g: g.shortfall / g.tolerance,
            reverse=True,
        )
        if ranked:
            lines.append("The largest gaps seen, for context (not flagged):")
            lines += [describe_gap(gap, result.measure(gap.measure)) for gap in ranked[:3]]
    if not final.gaps:
        lines.append(
            "No group could be compared: every group was withheld by the sites (too few patients) or had fewer "
            f"than {result.min_cases} patients. The audit cannot say whether the model treats groups alike."
        )
    compared = {g.grouping for g in final.gaps}
    not_compared = [Grouping.from_name(name).label for name in result.groupings if name not in compared]
    if not_compared and final.gaps:
        lines.append(
            f"Not compared at all (groups withheld by the hospitals, fewer than {result.min_cases} patients, or only "
            f"one group): {', '.join(not_compared)}."
        )
    return lines


def before_after_sentences(comparison: BeforeAfter, result: AuditResult) -> list[str]:
    """The before-and-after comparison in plain words: what was compared, the balanced
    attribute's gaps, all patients together, and how sure one can be."""
    before, after = comparison.before, comparison.after
    lines = [
        f"Before: the run in {comparison.baseline_run_dir}, trained with {before.description}. "
        f"After: this run, trained with {after.description}. Each model is the one after its final round "
        f"(round {comparison.baseline_round} before, round {comparison.server_round} after), tested at each "
        "hospital on patients it was not trained on."
    ]
    if before == after:
        lines.append(
            "Both runs were trained the same way, so the differences below come from chance (the order of the "
            "training images, the starting point), not from a mitigation."
        )
    focus = after.balance_attribute or before.balance_attribute or "sex"
    label = Grouping((focus,)).label
    means = [m for m in result.measures if m.kind == "mean"]
    for measure in means:
        lines.append(_gap_change_sentence(comparison.gap(focus, measure.key), measure, label))
    overall = [
        f"{m.label} {amount(c.before, m)} before, {amount(c.after, m)} after"
        for m in means
        if (c := comparison.overall(m.key)) is not None
    ]
    if overall:
        lines.append("All patients together: " + "; ".join(overall) + ".")
    lines.append(
        "How sure: each run's figures carry their own 95 % intervals (section 8). Both models were tested on the "
        "same hospitals' patients, so the change itself gets no interval here; read a change smaller than those "
        "intervals as possibly chance. Look at the worst group's own figure as well as the gap: a gap also "
        "closes when the best group gets worse."
    )
    return lines


def _gap_change_sentence(change: GapChange | None, measure: Measure, label: str) -> str:
    name = f"By {label}, {measure.label}"
    if change is None or (change.before is None and change.after is None):
        return (
            f"{name}: no two groups could be compared in either run "
            "(groups withheld by the hospitals or too few patients)."
        )
    b, a = change.before, change.after
    if b is None and a is not None:
        return _one_run_sentence(name, "before", a, measure)
    if a is None and b is not None:
        return _one_run_sentence(name, "after", b, measure)
    if a is None or b is None:  # neither: answered above
        raise ValueError(f"{name}: no gap in either run")
    difference = change.change
    if abs(difference) < 0.5 * 10**-measure.decimals:
        moved = "unchanged"
    else:
        moved = f"{amount(abs(difference), measure)} {'smaller' if difference < 0 else 'larger'}"
    flags = ""
    if b.flagged or a.flagged:
        flags = f" Flagged before: {'yes' if b.flagged else 'no'}; after: {'yes' if a.flagged else 'no'}."
    better = "" if measure.higher_is_better else " (lower is better)"
    return (
        f"{name}{better}: the worst group was {b.worst_label} at {amount(b.worst_value, measure)} before and "
        f"{a.worst_label} at {amount(a.worst_value, measure)} after; the gap to the best group went from "
        f"{amount(b.shortfall, measure)} to {amount(a.shortfall, measure)} ({moved}; largest accepted gap "
        f"{amount(change.tolerance, measure)}).{flags}"
    )


def _one_run_sentence(name: str, missing: str, present: GapSide, measure: Measure) -> str:
    shown = "after" if missing == "before" else "before"
    return (
        f"{name}: the groups could not be compared {missing} (withheld by the hospitals or too few patients); "
        f"{shown}, the worst group was {present.worst_label} at "
        f"{amount(present.worst_value, measure)}, {amount(present.shortfall, measure)} short of "
        f"{present.best_label}."
    )


def number(value: float) -> str:
    """A rate or rate gap (0–1) to three decimals; "—" when undefined."""
    return f"{value:.3f}" if math.isfinite(value) else "—"


def ratio_text(gap: Gap) -> str:
    """Worst ÷ comparator with its 95 % interval, when defined."""
    if not math.isfinite(gap.ratio):
        return "—"
    if not math.isfinite(gap.ratio_low):
        return f"{gap.ratio:.2f}"
    return f"{gap.ratio:.2f} ({gap.ratio_low:.2f} to {gap.ratio_high:.2f})"


def thresholds_text(result: AuditResult) -> str:
    """The sites' small-cell thresholds: "10", or "10 or 20" where sites differ."""
    values = result.thresholds or (DEFAULT_SUPPRESSION_THRESHOLD,)
    return " or ".join(str(v) for v in values)


def gap_side_text(side: GapSide | None, measure: Measure) -> str:
    """One run's worst group and gap, for the before-and-after table."""
    if side is None:
        return "not compared"
    flagged = " — FLAGGED" if side.flagged else ""
    return (
        f"{side.worst_label} {amount(side.worst_value, measure)}; gap {amount(side.shortfall, measure)} "
        f"({interval_text(side.low, side.high, measure)}){flagged}"
    )
