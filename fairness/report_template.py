"""The fairness audit report's page: a Jinja2 template, filled by ``fairness.report``.

It lives in a Python module, not a ``.j2`` file, because a deployed ServerApp runs from
Flower's app bundle (FAB), which carries only ``.py``, ``.toml``, ``.md``, ``.yaml`` and
``.json`` files: a template file would be missing exactly where the report is written.
"""

AUDIT_REPORT_HTML = """<!DOCTYPE html>
{# The fairness audit report, filled by fairness/report.py. One self-contained page: styles inline,
    figures as PNG data, no scripts, no links to anything outside it. Paragraphs stay on one line each. -#}
<html lang="en">
<head>
<meta charset="utf-8">
<title>Fairness audit</title>
<style>
body{font-family:Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:2px solid #1f4e79;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef3f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
.box{background:#f6f8fa;border-left:5px solid #1f4e79;padding:.6em 1em;margin:1em 0}
.flag{background:#fdecea;border-left:5px solid #c0392b;padding:.6em 1em;margin:.6em 0}
.ok{background:#eaf6ec;border-left:5px solid #2e7d32;padding:.6em 1em;margin:.6em 0}
tr.flagged td{background:#fdecea}.muted{color:#777}img{max-width:100%}
</style>
</head>
<body>
<h1>Fairness audit of the trained model</h1>
<p>Task: {{ result.task_label or result.task }}. Run folder: <code>{{ run_dir }}</code>. Rounds audited: {{ result.rounds | length }} (final round {{ final.server_round }}). Hospitals (sites): {{ final.sites | join(", ") or "none" }}. Training: {{ training.description }}.</p>

<div class="box"><b>How to read this report.</b> The model was tested at each hospital on patients it was not trained on. Hospitals did not send any patient's data: only totals per group of patients (how many, sums, counts of correct and incorrect calls), and no group smaller than {{ thresholds }} patients. A <i>group</i> is, for example, all women, or all patients scanned at 3 tesla. Each figure comes with a <i>95 % interval</i>: the range of values compatible with the data; with few patients it is wide. A <i>gap</i> is how much worse the worst group does than the best group, or than everyone else. The consortium has set a <i>largest accepted gap</i> for each measure. A gap is <b>flagged</b> only when the data show convincingly that it is larger than that: when even a deliberately cautious interval (widened because many groups are compared at once) lies beyond it. No flag does not prove that the model is fair: with few patients, real gaps can go undetected; the intervals show how much is uncertain. Groups whose attribute was not recorded are shown but never compared.</div>

<h2>1. Summary</h2>
{% for line in summary %}
<div class="{{ line.css }}">{{ line.text }}</div>
{% endfor %}
{% if comparison %}
<h3>Before and after the mitigation</h3>
{% for line in before_after %}
<div class="box">{{ line }}</div>
{% endfor %}
{% endif %}

<h2>2. Each measure by group, all hospitals together</h2>
<p>Final round {{ final.server_round }}. Dots are the estimates, bars their 95 % intervals, the dashed line is all patients together; grey groups have the attribute not recorded, red ones are flagged. n is the number of patients behind the figure. A figure summing fewer hospitals than the others (a hospital withheld that group) says so in the table's last column.</p>
{% for section in measures %}
{% set measure = section.measure %}
<h3>{{ measure.label }}</h3>
<p>{{ measure.explanation }}</p>
{% if not section.rows %}
<p class="muted">No hospital sent this measure.</p>
{% else %}
<p><img alt="{{ measure.label }}" src="{{ section.figure }}"></p>
<details><summary>Table</summary>
<table>
<tr><th>group</th><th>n</th><th>estimate</th><th>95 % interval</th><th>hospitals</th></tr>
{% for estimate in section.rows %}
<tr><td>{{ estimate.label }}</td><td class="num">{{ estimate.n }}</td><td class="num">{{ amount(estimate.value, measure) }}</td><td>{{ interval_text(estimate.low, estimate.high, measure) }}</td><td>{{ "all" if estimate.sites | length == final.sites | length else estimate.sites | join(", ") }}</td></tr>
{% endfor %}
</table>
</details>
{% endif %}
{% endfor %}

<h2>3. Gaps between groups (final round)</h2>
<p>The shortfall is how much worse the worst group does, in the measure's unit (positive: worse). {{ final.comparisons }} comparisons were made in this round, so the interval used for flagging has {{ "%.3f" | format(100 * final.flag_level) }} % confidence instead of 95 %. The ratio is the worst group's value divided by the comparison's.</p>
{% if not gaps %}
<p class="muted">No gap could be computed.</p>
{% else %}
<table>
<tr><th>grouping</th><th>measure</th><th>compared with</th><th>worst group (n)</th><th>comparison (n)</th><th>shortfall</th><th>95 % interval</th><th>interval for flagging</th><th>largest accepted</th><th>ratio (95 % interval)</th><th>flag</th></tr>
{% for gap, measure in gaps %}
<tr class="{{ 'flagged' if gap.flagged else '' }}"><td>{{ gap.grouping_label }}</td><td>{{ measure.label }}</td><td>{{ "best group" if gap.comparison == worst_vs_best else "everyone else" }}</td><td>{{ gap.worst_label }} ({{ gap.worst_n }}): {{ amount(gap.worst_value, measure) }}</td><td>{{ gap.comparator_label }} ({{ gap.comparator_n }}): {{ amount(gap.comparator_value, measure) }}</td><td class="num">{{ amount(gap.shortfall, measure) }}</td><td>{{ interval_text(gap.shortfall_low, gap.shortfall_high, measure) }}</td><td>{{ interval_text(gap.flag_low, gap.flag_high, measure) }}</td><td class="num">{{ amount(gap.tolerance, measure) }}</td><td>{{ ratio_text(gap) }}</td><td>{{ "FLAGGED" if gap.flagged else "no" }}</td></tr>
{% endfor %}
</table>
{% if final.equalised_odds %}
<h3>Equalised odds</h3>
<p>For each grouping, the larger of two gaps between the best and worst group: in sensitivity (missed findings) and in specificity (false alarms). 0 means every group gets the same share of correct calls on both counts. Its interval is approximate; it is flagged when either of its two gaps is.</p>
<table>
<tr><th>grouping</th><th>call</th><th>difference</th><th>approx. 95 % interval</th><th>sensitivity gap</th><th>specificity gap</th><th>largest accepted</th><th>flag</th></tr>
{% for odds in final.equalised_odds %}
<tr class="{{ 'flagged' if odds.flagged else '' }}"><td>{{ odds.grouping_label }}</td><td>{{ odds.call | replace("_", " ") }}</td><td class="num">{{ number(odds.value) }}</td><td>{{ number(odds.low) }} to {{ number(odds.high) }}</td><td class="num">{{ number(odds.sensitivity_gap) }}</td><td class="num">{{ number(odds.specificity_gap) }}</td><td class="num">{{ number(odds.tolerance) }}</td><td>{{ "FLAGGED" if odds.flagged else "no" }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% endif %}

<h2>4. Gaps over the training rounds</h2>
<p>For each grouping, the shortfall of its worst group against everyone else after each round, with 95 % intervals; the dashed red line is the largest accepted gap. The worst group can change from round to round. Only the final round is flagged: earlier rounds show the trend.</p>
{% if trend_figure %}
<p><img alt="gaps over rounds" src="{{ trend_figure }}"></p>
{% else %}
<p class="muted">No gap could be computed in any round.</p>
{% endif %}

<h2>5. Each hospital on its own (final round)</h2>
<p>The groups each hospital sent, with 95 % intervals. Hospitals differ in scanners, protocols and patients, so their figures differ for reasons beyond the model; small groups were withheld (section 6).</p>
{% for site in sites %}
<h3>{{ site.site }}</h3>
{% if not site.figure %}
<p class="muted">This hospital sent no group large enough to show.</p>
{% else %}
<p><img alt="{{ site.site }} panel" src="{{ site.figure }}"></p>
{% if site.rates %}
<p>All of this hospital's patients: {% for rate in site.rates %}{{ rate.label }} {{ rate.amount }} (n={{ rate.n }}){{ "; " if not loop.last else "" }}{% endfor %}.</p>
{% endif %}
{% endif %}
{% endfor %}

<h2>6. What the hospitals withheld, and why</h2>
<div class="box">To protect patients, a hospital sends nothing about a group of fewer than {{ thresholds }} patients (<i>small-cell suppression</i>): with so few, a total could point to one person. It also withholds some larger groups (<i>complementary suppression</i>): otherwise a withheld group could be worked out by subtraction, for example women = all patients − men − sex not recorded. Each hospital checks that no withheld number can be recovered from the ones it sends. A figure within a group (for example the count of missed scars, or the spread of predicted scar burden) is sent when the group is large enough, without a threshold of its own. Which groups were withheld for being small and which only to protect others is not sent.</div>
<table>
<tr><th>hospital</th><th>threshold (patients)</th><th>groups sent</th><th>groups withheld whole</th><th>figures withheld within sent groups</th><th>note</th></tr>
{% for entry in final.suppression %}
<tr><td>{{ entry.site }}</td><td class="num">{{ entry.threshold if entry.threshold is not none else "—" }}</td><td class="num">{{ entry.groups_sent }}</td><td>{{ entry.groups_withheld | length }}: {{ entry.groups_withheld | join("; ") or "—" }}</td><td>{{ entry.figures_withheld | length }}{% if entry.figures_withheld %}<details><summary>list</summary>{{ entry.figures_withheld | join("; ") }}</details>{% endif %}</td><td>{{ entry.note }}</td></tr>
{% endfor %}
</table>

<h2>7. Methods</h2>
<ul>
<li>Means: Student t interval from each group's count, sum and sum of squares. Shares (sensitivity, specificity): Wilson score interval. Area under the ROC (receiver operating characteristic) curve: from histograms of the predicted score over fixed bins, ties within a bin counting one half; Hanley–McNeil standard error.</li>
<li>Gaps: difference of means with Welch's interval (unequal variances); difference of shares with Newcombe's hybrid score interval; difference of areas with a normal interval. Ratios: delta method on the log scale (Katz's for shares). 'Everyone else' is the hospitals' totals minus the group, over the hospitals that sent both, so it is exact.</li>
<li>Groups compared: attribute recorded and at least {{ result.min_cases }} patients with a value. Worst and best are chosen by the estimate.</li>
<li>Flagging: the whole interval beyond the largest accepted gap, at confidence 1 − 0.05/M, with M the number of comparisons the round made (here M = {{ final.comparisons }}: g(g−1)/2 pairs and g group-versus-everyone-else comparisons per grouping and measure, g being the groups compared). This Bonferroni correction keeps the chance of any false flag in the round at or below 5 % when no gap exceeds the tolerance. Only the final round is flagged.</li>
</ul>
{% if comparison %}

<h2>8. Before and after the mitigation, group by group</h2>
<p>Before: <code>{{ comparison.baseline_run_dir }}</code>, {{ comparison.before.description }}. After: this run, {{ comparison.after.description }}. Final rounds of both runs, all hospitals together, audited the same way. The gap is how much worse the worst group does than the best group, in the measure's unit (positive: worse); a negative change means the gap closed.</p>
{% if not changes %}
<p class="muted">No gap could be computed in either run.</p>
{% else %}
<table>
<tr><th>grouping</th><th>measure</th><th>before: worst group, gap (95 % interval)</th><th>after: worst group, gap (95 % interval)</th><th>change in the gap</th><th>largest accepted</th></tr>
{% for change, measure in changes %}
<tr><td>{{ change.grouping_label }}</td><td>{{ measure.label }}</td><td>{{ gap_side(change.before, measure) }}</td><td>{{ gap_side(change.after, measure) }}</td><td class="num">{{ amount(change.change, measure, signed=True) }}</td><td class="num">{{ amount(change.tolerance, measure) }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% for measure, groups in group_changes %}
<details><summary>{{ measure.label }}: each group before and after</summary>
<table>
<tr><th>grouping</th><th>group</th><th>before (n)</th><th>95 % interval</th><th>after (n)</th><th>95 % interval</th><th>change</th></tr>
{% for group in groups %}
<tr><td>{{ group.grouping_label }}</td><td>{{ group.label }}</td><td class="num">{{ amount(group.before, measure) }} ({{ group.n_before }})</td><td>{{ interval_text(group.before_low, group.before_high, measure) }}</td><td class="num">{{ amount(group.after, measure) }} ({{ group.n_after }})</td><td>{{ interval_text(group.after_low, group.after_high, measure) }}</td><td class="num">{{ amount(group.change, measure, signed=True) }}</td></tr>
{% endfor %}
</table>
</details>
{% endfor %}
{% endif %}
</body>
</html>
"""
