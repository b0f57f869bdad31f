"""The fairness audit report of a run: ``RUN_DIR/fairness-audit.html`` and ``RUN_DIR/fairness-audit.json``.

Written for a clinical governance board. The audit comes from ``fairness.audit``, the
words from ``fairness.sentences``, the figures from ``fairness.figures``; the page is
the Jinja2 template of ``fairness/report_template.py`` filled with them: one
self-contained file (figures embedded as PNG, styles inline, no scripts, no links to
anything outside it). The JSON holds the same numbers for machines.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from fairness import figures
from fairness.audit import WORST_VS_BEST, AuditResult, audit_round, audit_run
from fairness.comparison import BeforeAfter, Training, compare_audits
from fairness.report_template import AUDIT_REPORT_HTML
from fairness.run_store import load_run_statistics
from fairness.sentences import (
    amount,
    before_after_sentences,
    gap_side_text,
    interval_text,
    number,
    ratio_text,
    summary_sentences,
    thresholds_text,
)
from fairness.settings import Tolerances
from fairness.spec import AuditSpec

HTML_NAME = "fairness-audit.html"
JSON_NAME = "fairness-audit.json"
REPORT_FORMAT = "cmrfl-fairness-audit"
REPORT_VERSION = 1


def write_audit_report(
    run_dir: Path,
    spec: AuditSpec,
    tolerances: Tolerances | None = None,
    baseline_dir: Path | None = None,
) -> tuple[Path, Path]:
    """Audit every round saved in ``RUN_DIR/fairness`` with ``spec`` and write the HTML and JSON reports.

    ``spec`` is the audit spec of the run's task (the caller looks it up by the task
    name the run store records). The tolerances come from the saved rounds' settings,
    else from ``RUN_DIR/summary.json``'s run config, else the spec's defaults. Raises
    ``fairness.run_store.NoFairnessStatistics`` (naming the folder) if there is nothing to audit.
    With ``baseline_dir`` (a run of the same task, typically trained without the fairness
    mitigation), both reports add a before-and-after section: the baseline's final round
    audited with this run's spec and tolerances, set beside this run's.
    """
    run_dir = Path(run_dir)
    run = load_run_statistics(run_dir)
    settings = {**_summary_run_config(run_dir), **run.last.settings}
    tolerances = tolerances or Tolerances.from_run_config(settings, spec)
    result = audit_run(run, spec, tolerances)
    summary = summary_sentences(result)
    training = Training.from_settings(settings)
    comparison = None
    if baseline_dir is not None:
        comparison = compare_with_baseline(Path(baseline_dir), result, spec, tolerances, training)

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
        document["before_and_after"] = {"summary": before_after_sentences(comparison, result), **comparison.to_dict()}
    json_path = run_dir / JSON_NAME
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
        baseline_audit,
        result.final,
        result.measures,
        baseline_run_dir=baseline_dir,
        before=Training.from_settings(baseline_settings),
        after=training,
    )


def render_html(
    result: AuditResult,
    summary: list[str],
    run_dir: Path,
    training: Training | None = None,
    comparison: BeforeAfter | None = None,
) -> str:
    """The report page: the template filled with the audit, its sentences and its figures."""
    return _template().render(page_data(result, summary, run_dir, training or Training(), comparison))


def page_data(
    result: AuditResult, summary: list[str], run_dir: Path, training: Training, comparison: BeforeAfter | None
) -> dict[str, Any]:
    """Everything the template shows, figures drawn; no HTML here."""
    final = result.final
    flagged_groups = {(g.measure, g.worst_group) for g in result.flags}
    measures = []
    for measure in result.measures:
        rows = [e for e in final.consortium if e.measure == measure.key]
        highlight = {group for key, group in flagged_groups if key == measure.key}
        figure = _data_uri(figures.group_intervals(rows, measure, measure.label, highlight)) if rows else None
        measures.append({"measure": measure, "rows": rows, "figure": figure})
    sites = []
    for site in final.sites:
        estimates = final.per_site.get(site, ())
        rates = [
            {"label": _lower_first(measure.label), "amount": amount(e.value, measure), "n": e.n}
            for e in estimates
            if (measure := result.measure(e.measure)).kind != "mean" and e.group == "all"
        ]
        figure = _data_uri(figures.site_panel(estimates, result.measures, site)) if estimates else None
        sites.append({"site": site, "figure": figure, "rates": rates})
    gaps = sorted(final.gaps, key=lambda g: (not g.flagged, g.grouping, g.measure, g.comparison))
    data: dict[str, Any] = {
        "result": result,
        "final": final,
        "run_dir": str(run_dir),
        "training": training,
        "thresholds": thresholds_text(result),
        "summary": [{"css": _summary_css(n, result), "text": line} for n, line in enumerate(summary)],
        "measures": measures,
        "gaps": [(gap, result.measure(gap.measure)) for gap in gaps],
        "worst_vs_best": WORST_VS_BEST,
        "trend_figure": (_data_uri(figures.gaps_over_rounds(result)) if any(r.gaps for r in result.rounds) else None),
        "sites": sites,
        "comparison": comparison,
    }
    if comparison is not None:
        data["before_after"] = before_after_sentences(comparison, result)
        data["changes"] = [(change, result.measure(change.measure)) for change in comparison.gaps]
        data["group_changes"] = [
            (measure, groups)
            for measure in result.measures
            if (groups := [g for g in comparison.groups if g.measure == measure.key])
        ]
    return data


def _summary_css(position: int, result: AuditResult) -> str:
    """The first line states the verdict; the flagged gaps' sentences follow it."""
    if result.flags and 0 < position <= len(result.flags):
        return "flag"
    return "ok" if position == 0 and not result.flags else "box"


@cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.DictLoader({"audit-report.html": AUDIT_REPORT_HTML}),
        autoescape=True,  # every name and label from the sites is escaped
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the report, never shows blank
    )
    environment.globals.update(
        amount=amount,
        interval_text=interval_text,
        number=number,
        ratio_text=ratio_text,
        gap_side=gap_side_text,
    )
    return environment.get_template("audit-report.html")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _summary_run_config(run_dir: Path) -> Mapping[str, Any]:
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("run_config", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def _lower_first(label: str) -> str:
    """ "Sensitivity for …" inside a sentence; abbreviations such as ROC keep their capitals."""
    return label[:1].lower() + label[1:]
