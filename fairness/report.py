"""The fairness audit report of a run: ``RUN_DIR/fairness-audit.html`` and ``RUN_DIR/fairness-audit.json``.

Written for a clinical governance board: plain words, units, every abbreviation
spelt out. The HTML is one self-contained file (figures embedded as PNG, styles
inline, no scripts, no links to anything outside it); the JSON holds the same
numbers for machines.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fairness import figures
from fairness.audit import WORST_VS_BEST, AuditResult, Gap, Measure, audit_round, audit_run
from fairness.comparison import BeforeAfter, GapChange, Training, compare_audits
from fairness.run_store import load_run_statistics
from fairness.spec import AuditSpec, Grouping, Tolerances, audit_spec_for
from fairness.suppression import DEFAULT_SUPPRESSION_THRESHOLD

HTML_NAME = "fairness-audit.html"
JSON_NAME = "fairness-audit.json"
REPORT_FORMAT = "cmrfl-fairness-audit"
REPORT_VERSION = 1


def write_audit_report(
    run_dir: Path,
    spec: AuditSpec | None = None,
    tolerances: Tolerances | None = None,
    baseline_dir: Path | None = None,
) -> tuple[Path, Path]:
    """Audit every round saved in ``RUN_DIR/fairness`` and write the HTML and JSON reports.

    The task and the tolerances come from the saved rounds' settings, else from
    ``RUN_DIR/summary.json``'s run config, else the spec's defaults. Raises
    ``fairness.run_store.NoFairnessStatistics`` (naming the folder) if there is nothing to audit.
    With ``baseline_dir`` (a run of the same task, typically trained without the fairness
    mitigation), both reports add a before-and-after section: the baseline's final round
    audited with this run's spec and tolerances, set beside this run's.
    """
    run_dir = Path(run_dir)
    run = load_run_statistics(run_dir)
    spec = spec or audit_spec_for(run.last.task)
    settings = {**_summary_run_config(run_dir), **run.last.settings}
    tolerances = tolerances or Tolerances.from_run_config(settings, spec)
    result = audit_run(run, spec, tolerances)
    summary = summary_sentences(result)
    training = Training.from_settings(settings)
    comparison = None
    if baseline_dir is not None:
        comparison = compare_with_baseline(Path(baseline_dir), result, spec, tolerances, training)

    json_path = run_dir / JSON_NAME
    document = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "run_dir": str(run_dir),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "summary": summary,
        "tolerances": tolerances.to_run_config(spec),
        "training": {**asdict(training), "description": training.description},
        **result.to_dict(),
    }
    if comparison is not None:
        document["before_and_after"] = {
            "summary": before_after_sentences(comparison, result), **comparison.to_dict()
        }
    json_path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    html_path = run_dir / HTML_NAME
    html_path.write_text(render_html(result, summary, run_dir, training, comparison), encoding="utf-8")
    return html_path, json_path


def compare_with_baseline(
    baseline_dir: Path, result: AuditResult, spec: AuditSpec, tolerances: Tolerances, training: Training
) -> BeforeAfter:
    """The baseline run's final round, audited like this run, beside this run's final round."""
    baseline = load_run_statistics(baseline_dir)
    if baseline.last.task != result.task:
        raise ValueError(
            f"baseline {baseline_dir} audits task {baseline.last.task!r}, this run {result.task!r}: "
            "only runs of the same task can be compared"
        )
    baseline_settings = {**_summary_run_config(baseline_dir), **baseline.last.settings}
    baseline_audit = audit_round(baseline.last, spec, tolerances, min_cases=result.min_cases)
    return compare_audits(
        baseline_audit, result.final, result.measures, baseline_run_dir=baseline_dir,
        before=Training.from_settings(baseline_settings), after=training,
    )


# ------------------------------------------------------------------------------------
# Words
# ------------------------------------------------------------------------------------
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
    verdict = (
        f"Even the cautious interval used for flagging ({interval_text(gap.flag_low, gap.flag_high, measure)}) "
        f"lies beyond the largest accepted gap of {amount(gap.tolerance, measure)}, so this is flagged."
        if gap.flagged else
        f"The largest accepted gap is {amount(gap.tolerance, measure)}; the cautious interval used for flagging "
        f"({interval_text(gap.flag_low, gap.flag_high, measure)}) does not lie wholly beyond it, so this is not flagged."
    )
    return (
        f"By {gap.grouping_label}, {gap.worst_label} (n={gap.worst_n}) against {gap.comparator_label} "
        f"(n={gap.comparator_n}) — {measure.label}{better}: {amount(gap.worst_value, measure)} against "
        f"{amount(gap.comparator_value, measure)}, {amount(abs(gap.shortfall), measure)} {direction if gap.shortfall >= 0 else 'better'} "
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
            key=lambda g: g.shortfall / g.tolerance, reverse=True,
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
        for m in means if (c := comparison.overall(m.key)) is not None
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
        return f"{name}: no two groups could be compared in either run (groups withheld by the hospitals or too few patients)."
    if change.before is None or change.after is None:
        missing, present = ("before", change.after) if change.before is None else ("after", change.before)
        return (
            f"{name}: the groups could not be compared {missing} (withheld by the hospitals or too few patients); "
            f"{'after' if missing == 'before' else 'before'}, the worst group was {present.worst_label} at "
            f"{amount(present.worst_value, measure)}, {amount(present.shortfall, measure)} short of {present.best_label}."
        )
    b, a = change.before, change.after
    difference = change.change
    if abs(difference) < 0.5 * 10 ** -measure.decimals:
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


# ------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------
STYLE = """
body{font-family:Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:2px solid #1f4e79;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef3f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
.box{background:#f6f8fa;border-left:5px solid #1f4e79;padding:.6em 1em;margin:1em 0}
.flag{background:#fdecea;border-left:5px solid #c0392b;padding:.6em 1em;margin:.6em 0}
.ok{background:#eaf6ec;border-left:5px solid #2e7d32;padding:.6em 1em;margin:.6em 0}
tr.flagged td{background:#fdecea}.muted{color:#777}img{max-width:100%}
"""


def render_html(
    result: AuditResult,
    summary: list[str],
    run_dir: Path,
    training: Training | None = None,
    comparison: BeforeAfter | None = None,
) -> str:
    final = result.final
    training = training or Training()
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Fairness audit</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Fairness audit of the trained model</h1>",
        f"<p>Task: {_e(result.task_label or result.task)}. Run folder: <code>{_e(str(run_dir))}</code>. "
        f"Rounds audited: {len(result.rounds)} (final round {final.server_round}). "
        f"Hospitals (sites): {_e(', '.join(final.sites)) or 'none'}. "
        f"Training: {_e(training.description)}.</p>",
        _how_to_read(result),
        "<h2>1. Summary</h2>",
    ]
    for number, line in enumerate(summary):
        css = "flag" if result.flags and 0 < number <= len(result.flags) else ("ok" if number == 0 and not result.flags else "box")
        parts.append(f"<div class='{css}'>{_e(line)}</div>")
    if comparison is not None:
        parts.append("<h3>Before and after the mitigation</h3>")
        parts += [f"<div class='box'>{_e(line)}</div>" for line in before_after_sentences(comparison, result)]
    parts += _measures_section(result)
    parts += _gaps_section(result)
    parts += _trend_section(result)
    parts += _sites_section(result)
    parts += _suppression_section(result)
    parts += _methods_section(result)
    if comparison is not None:
        parts += _before_after_section(comparison, result)
    parts.append("</body></html>")
    return "\n".join(parts)


def _before_after_section(comparison: BeforeAfter, result: AuditResult) -> list[str]:
    parts = [
        "<h2>8. Before and after the mitigation, group by group</h2>",
        f"<p>Before: <code>{_e(comparison.baseline_run_dir)}</code>, {_e(comparison.before.description)}. "
        f"After: this run, {_e(comparison.after.description)}. Final rounds of both runs, all hospitals together, "
        "audited the same way. The gap is how much worse the worst group does than the best group, in the "
        "measure's unit (positive: worse); a negative change means the gap closed.</p>",
    ]
    if not comparison.gaps:
        parts.append("<p class='muted'>No gap could be computed in either run.</p>")
    else:
        rows = ["<table><tr><th>grouping</th><th>measure</th><th>before: worst group, gap (95 % interval)</th>"
                "<th>after: worst group, gap (95 % interval)</th><th>change in the gap</th>"
                "<th>largest accepted</th></tr>"]
        for change in comparison.gaps:
            measure = result.measure(change.measure)

            def side(gap) -> str:
                if gap is None:
                    return "not compared"
                flagged = " — FLAGGED" if gap.flagged else ""
                return (f"{gap.worst_label} {amount(gap.worst_value, measure)}; gap {amount(gap.shortfall, measure)} "
                        f"({interval_text(gap.low, gap.high, measure)}){flagged}")

            rows.append(
                f"<tr><td>{_e(change.grouping_label)}</td><td>{_e(measure.label)}</td><td>{_e(side(change.before))}</td>"
                f"<td>{_e(side(change.after))}</td><td class='num'>{_e(amount(change.change, measure, signed=True))}</td>"
                f"<td class='num'>{_e(amount(change.tolerance, measure))}</td></tr>"
            )
        rows.append("</table>")
        parts.append("".join(rows))
    for measure in result.measures:
        groups = [g for g in comparison.groups if g.measure == measure.key]
        if not groups:
            continue
        table = [f"<details><summary>{_e(measure.label)}: each group before and after</summary>"
                 "<table><tr><th>grouping</th><th>group</th><th>before (n)</th><th>95 % interval</th>"
                 "<th>after (n)</th><th>95 % interval</th><th>change</th></tr>"]
        for group in groups:
            table.append(
                f"<tr><td>{_e(group.grouping_label)}</td><td>{_e(group.label)}</td>"
                f"<td class='num'>{_e(amount(group.before, measure))} ({group.n_before})</td>"
                f"<td>{_e(interval_text(group.before_low, group.before_high, measure))}</td>"
                f"<td class='num'>{_e(amount(group.after, measure))} ({group.n_after})</td>"
                f"<td>{_e(interval_text(group.after_low, group.after_high, measure))}</td>"
                f"<td class='num'>{_e(amount(group.change, measure, signed=True))}</td></tr>"
            )
        table.append("</table></details>")
        parts.append("".join(table))
    return parts


def _how_to_read(result: AuditResult) -> str:
    return (
        "<div class='box'><b>How to read this report.</b> The model was tested at each hospital on patients it "
        "was not trained on. Hospitals did not send any patient's data: only totals per group of patients "
        "(how many, sums, counts of correct and incorrect calls), and no group smaller than "
        f"{_thresholds(result)} patients. "
        "A <i>group</i> is, for example, all women, or all patients scanned at 3 tesla. "
        "Each figure comes with a <i>95 % interval</i>: the range of values compatible with the data; "
        "with few patients it is wide. A <i>gap</i> is how much worse the worst group does than the best group, "
        "or than everyone else. The consortium has set a <i>largest accepted gap</i> for each measure. "
        "A gap is <b>flagged</b> only when the data show convincingly that it is larger than that: when even a "
        "deliberately cautious interval (widened because many groups are compared at once) lies beyond it. "
        "No flag does not prove that the model is fair: with few patients, real gaps can go undetected; the "
        "intervals show how much is uncertain. Groups whose attribute was not recorded are shown but never "
        "compared.</div>"
    )


def _thresholds(result: AuditResult) -> str:
    values = result.thresholds or (DEFAULT_SUPPRESSION_THRESHOLD,)
    return " or ".join(str(v) for v in values)


def _measures_section(result: AuditResult) -> list[str]:
    final = result.final
    flagged_groups = {(g.measure, g.worst_group) for g in result.flags}
    parts = [
        "<h2>2. Each measure by group, all hospitals together</h2>",
        f"<p>Final round {final.server_round}. Dots are the estimates, bars their 95 % intervals, the dashed line is "
        "all patients together; grey groups have the attribute not recorded, red ones are flagged. "
        "n is the number of patients behind the figure. A figure summing fewer hospitals than the others "
        "(a hospital withheld that group) says so in the table's last column.</p>",
    ]
    for measure in result.measures:
        rows = [e for e in final.consortium if e.measure == measure.key]
        parts.append(f"<h3>{_e(measure.label)}</h3><p>{_e(measure.explanation)}</p>")
        if not rows:
            parts.append("<p class='muted'>No hospital sent this measure.</p>")
            continue
        highlight = {group for key, group in flagged_groups if key == measure.key}
        parts.append(_img(figures.group_intervals(rows, measure, measure.label, highlight), measure.label))
        table = ["<table><tr><th>group</th><th>n</th><th>estimate</th><th>95 % interval</th><th>hospitals</th></tr>"]
        for estimate in rows:
            sites = "all" if len(estimate.sites) == len(final.sites) else ", ".join(estimate.sites)
            table.append(
                f"<tr><td>{_e(estimate.label)}</td><td class='num'>{estimate.n}</td>"
                f"<td class='num'>{_e(amount(estimate.value, measure))}</td>"
                f"<td>{_e(interval_text(estimate.low, estimate.high, measure))}</td><td>{_e(sites)}</td></tr>"
            )
        table.append("</table>")
        parts.append("<details><summary>Table</summary>" + "".join(table) + "</details>")
    return parts


def _gaps_section(result: AuditResult) -> list[str]:
    final = result.final
    parts = [
        "<h2>3. Gaps between groups (final round)</h2>",
        f"<p>The shortfall is how much worse the worst group does, in the measure's unit (positive: worse). "
        f"{final.comparisons} comparisons were made in this round, so the interval used for flagging has "
        f"{100 * final.flag_level:.3f} % confidence instead of 95 %. The ratio is the worst group's value divided by "
        "the comparison's.</p>",
    ]
    if not final.gaps:
        return parts + ["<p class='muted'>No gap could be computed.</p>"]
    header = (
        "<table><tr><th>grouping</th><th>measure</th><th>compared with</th><th>worst group (n)</th>"
        "<th>comparison (n)</th><th>shortfall</th><th>95 % interval</th><th>interval for flagging</th>"
        "<th>largest accepted</th><th>ratio (95 % interval)</th><th>flag</th></tr>"
    )
    rows = [header]
    for gap in sorted(final.gaps, key=lambda g: (not g.flagged, g.grouping, g.measure, g.comparison)):
        measure = result.measure(gap.measure)
        ratio = "—" if not math.isfinite(gap.ratio) else (
            f"{gap.ratio:.2f} ({gap.ratio_low:.2f} to {gap.ratio_high:.2f})" if math.isfinite(gap.ratio_low)
            else f"{gap.ratio:.2f}"
        )
        rows.append(
            f"<tr class='{'flagged' if gap.flagged else ''}'><td>{_e(gap.grouping_label)}</td><td>{_e(measure.label)}</td>"
            f"<td>{'best group' if gap.comparison == WORST_VS_BEST else 'everyone else'}</td>"
            f"<td>{_e(gap.worst_label)} ({gap.worst_n}): {_e(amount(gap.worst_value, measure))}</td>"
            f"<td>{_e(gap.comparator_label)} ({gap.comparator_n}): {_e(amount(gap.comparator_value, measure))}</td>"
            f"<td class='num'>{_e(amount(gap.shortfall, measure))}</td>"
            f"<td>{_e(interval_text(gap.shortfall_low, gap.shortfall_high, measure))}</td>"
            f"<td>{_e(interval_text(gap.flag_low, gap.flag_high, measure))}</td>"
            f"<td class='num'>{_e(amount(gap.tolerance, measure))}</td><td>{_e(ratio)}</td>"
            f"<td>{'FLAGGED' if gap.flagged else 'no'}</td></tr>"
        )
    rows.append("</table>")
    parts.append("".join(rows))
    if final.equalised_odds:
        parts.append(
            "<h3>Equalised odds</h3><p>For each grouping, the larger of two gaps between the best and worst group: "
            "in sensitivity (missed findings) and in specificity (false alarms). 0 means every group gets the same "
            "share of correct calls on both counts. Its interval is approximate; it is flagged when either of its "
            "two gaps is.</p>"
        )
        table = ["<table><tr><th>grouping</th><th>call</th><th>difference</th><th>approx. 95 % interval</th>"
                 "<th>sensitivity gap</th><th>specificity gap</th><th>largest accepted</th><th>flag</th></tr>"]
        for odds in final.equalised_odds:
            table.append(
                f"<tr class='{'flagged' if odds.flagged else ''}'><td>{_e(odds.grouping_label)}</td><td>{_e(odds.call.replace('_', ' '))}</td>"
                f"<td class='num'>{_f(odds.value)}</td><td>{_f(odds.low)} to {_f(odds.high)}</td>"
                f"<td class='num'>{_f(odds.sensitivity_gap)}</td><td class='num'>{_f(odds.specificity_gap)}</td>"
                f"<td class='num'>{_f(odds.tolerance)}</td><td>{'FLAGGED' if odds.flagged else 'no'}</td></tr>"
            )
        table.append("</table>")
        parts.append("".join(table))
    return parts


def _trend_section(result: AuditResult) -> list[str]:
    parts = [
        "<h2>4. Gaps over the training rounds</h2>",
        "<p>For each grouping, the shortfall of its worst group against everyone else after each round, with 95 % "
        "intervals; the dashed red line is the largest accepted gap. The worst group can change from round to round. "
        "Only the final round is flagged: earlier rounds show the trend.</p>",
    ]
    if len(result.rounds) >= 1 and any(r.gaps for r in result.rounds):
        parts.append(_img(figures.gaps_over_rounds(result), "gaps over rounds"))
    else:
        parts.append("<p class='muted'>No gap could be computed in any round.</p>")
    return parts


def _sites_section(result: AuditResult) -> list[str]:
    final = result.final
    parts = [
        "<h2>5. Each hospital on its own (final round)</h2>",
        "<p>The groups each hospital sent, with 95 % intervals. Hospitals differ in scanners, protocols and patients, "
        "so their figures differ for reasons beyond the model; small groups were withheld (section 6).</p>",
    ]
    for site in final.sites:
        estimates = final.per_site.get(site, ())
        parts.append(f"<h3>{_e(site)}</h3>")
        if not estimates:
            parts.append("<p class='muted'>This hospital sent no group large enough to show.</p>")
            continue
        parts.append(_img(figures.site_panel(estimates, result.measures, site), f"{site} panel"))
        rates = [e for e in estimates if result.measure(e.measure).kind != "mean" and e.group == "all"]
        if rates:
            parts.append("<p>All of this hospital's patients: " + "; ".join(
                f"{_e(result.measure(e.measure).label.lower())} {_e(amount(e.value, result.measure(e.measure)))} (n={e.n})"
                for e in rates
            ) + ".</p>")
    return parts


def _suppression_section(result: AuditResult) -> list[str]:
    final = result.final
    parts = [
        "<h2>6. What the hospitals withheld, and why</h2>",
        f"<div class='box'>To protect patients, a hospital sends nothing about a group of fewer than "
        f"{_thresholds(result)} patients (<i>small-cell suppression</i>): with so few, a total could point to one person. "
        "It also withholds some larger groups (<i>complementary suppression</i>): otherwise a withheld group could be "
        "worked out by subtraction, for example women = all patients − men − sex not recorded. Each hospital checks "
        "that no withheld number can be recovered from the ones it sends. A figure within a group (for example the "
        "count of missed scars, or the spread of predicted scar burden) is sent when the group is large enough, "
        "without a threshold of its own. Which groups were withheld for being small and which only to protect "
        "others is not sent.</div>",
    ]
    table = ["<table><tr><th>hospital</th><th>threshold (patients)</th><th>groups sent</th>"
             "<th>groups withheld whole</th><th>figures withheld within sent groups</th><th>note</th></tr>"]
    for entry in final.suppression:
        table.append(
            f"<tr><td>{_e(entry.site)}</td><td class='num'>{entry.threshold if entry.threshold is not None else '—'}</td>"
            f"<td class='num'>{entry.groups_sent}</td>"
            f"<td>{len(entry.groups_withheld)}: {_e('; '.join(entry.groups_withheld)) or '—'}</td>"
            f"<td>{len(entry.figures_withheld)}" + (
                f"<details><summary>list</summary>{_e('; '.join(entry.figures_withheld))}</details>"
                if entry.figures_withheld else "") +
            f"</td><td>{_e(entry.note)}</td></tr>"
        )
    table.append("</table>")
    parts.append("".join(table))
    return parts


def _methods_section(result: AuditResult) -> list[str]:
    final = result.final
    return [
        "<h2>7. Methods</h2><ul>",
        "<li>Means: Student t interval from each group's count, sum and sum of squares. Shares (sensitivity, "
        "specificity): Wilson score interval. Area under the ROC (receiver operating characteristic) curve: from "
        "histograms of the predicted score over fixed bins, ties within a bin counting one half; Hanley–McNeil "
        "standard error.</li>",
        "<li>Gaps: difference of means with Welch's interval (unequal variances); difference of shares with "
        "Newcombe's hybrid score interval; difference of areas with a normal interval. Ratios: delta method on the "
        "log scale (Katz's for shares). 'Everyone else' is the hospitals' totals minus the group, over the "
        "hospitals that sent both, so it is exact.</li>",
        f"<li>Groups compared: attribute recorded and at least {result.min_cases} patients with a value. Worst and "
        "best are chosen by the estimate.</li>",
        f"<li>Flagging: the whole interval beyond the largest accepted gap, at confidence 1 − 0.05/M, with M the "
        f"number of comparisons the round made (here M = {final.comparisons}: g(g−1)/2 pairs and g group-versus-"
        "everyone-else comparisons per grouping and measure, g being the groups compared). This Bonferroni "
        "correction keeps the chance of any false flag in the round at or below 5 % when no gap exceeds the "
        "tolerance. Only the final round is flagged.</li>",
        "</ul>",
    ]


def _img(png: bytes, alt: str) -> str:
    return f"<p><img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'></p>"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _f(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "—"


def _summary_run_config(run_dir: Path) -> Mapping[str, Any]:
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("run_config", {}))
    except (OSError, ValueError, AttributeError):
        return {}
