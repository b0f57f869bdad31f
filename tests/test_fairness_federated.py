"""The fairness audit inside a federated run: per-case records stay, statistics travel, a report.

What leaves a site is read from the site's own egress log (client/egress.py), written
by the outermost mod as each reply leaves: exactly what crossed the network.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from client.egress import read_egress_log
from cmrfl.simulation import run_simulated_federation
from fairness.records import read_round_records

FAST = {"max-local-steps": 2, "batch-size": 4, "min-train-sites": 3, "min-available-sites": 3}
# Threshold 2 lets real statistics travel from these small sites: the check below
# must then find sums over two or more cases and no single case's value.
LOW_THRESHOLD = 2


def outbound_scalars(entries: list[dict[str, Any]]) -> list[float]:
    numbers: list[float] = []

    def collect(value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            numbers.append(float(value))
        elif isinstance(value, list):
            for item in value:
                collect(item)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, str) and value.startswith("{"):  # a JSON document, such as the fairness one
            collect(json.loads(value))

    for entry in entries:
        for record in entry.get("records", {}).values():
            for value in record.get("values", {}).values():
                collect(value)
    return numbers


def outbound_text(entries: list[dict[str, Any]]) -> str:
    return json.dumps(entries)


def per_case_values(site_dir: Path, server_round: int) -> tuple[set[float], set[str]]:
    """The site's per-case values of every metric that is positive for all its cases, and case ids.

    A sum over two or more positive values exceeds each of them, so any outbound number
    equal to one of these values is that case's own value, not an aggregate. (A metric
    that is 0 for some cases, such as the scar burden of a case without scar, is left
    out: a sum over a group in which all but one case are 0 equals that one case's
    value, which is why groups below the suppression threshold are withheld.)
    """
    records = read_round_records(site_dir, server_round)
    values: set[float] = set()
    for name in {name for record in records for name in record.metrics}:
        per_case = [record.metrics.get(name) for record in records]
        finite = [v for v in per_case if v is not None and math.isfinite(v)]
        if finite and all(v > 0 for v in finite):
            values |= {round(float(v), 9) for v in finite if v != 1.0}  # 1.0 may be a count
    return values, {record.case_id for record in records}


def leaked(values: set[float], scalars: list[float]) -> set[float]:
    return {v for v in values if any(math.isclose(v, s, rel_tol=0, abs_tol=1e-9) for s in scalars)}


def test_the_leak_check_finds_a_per_case_value_when_one_is_sent():
    entries = [{"records": {"metrics": {"values": {"dice-sum": 1.7, "smuggled": [0.1, 0.8123456]}}}}]
    assert leaked({0.8123456, 0.42}, outbound_scalars(entries)) == {0.8123456}
    inside_a_document = [{"records": {"fairness": {"values": {"document": '{"cells": [{"sum": 0.42}]}'}}}}]
    assert leaked({0.8123456, 0.42}, outbound_scalars(inside_a_document)) == {0.42}


@pytest.fixture
def sites_reporting_small_groups(ingested_sites: list[Path], tmp_path: Path) -> list[Path]:
    copies = []
    for site_dir in ingested_sites:
        copy = tmp_path / "sites" / site_dir.name
        shutil.copytree(site_dir, copy, ignore=shutil.ignore_patterns("egress"))  # this run's log only
        (copy / "site.toml").write_text(
            f'name = "{site_dir.name}"\n\n[fairness]\nsuppression-threshold = {LOW_THRESHOLD}\n'
        )
        copies.append(copy)
    return copies


@pytest.mark.slow
def test_sites_send_subgroup_statistics_never_a_case_and_the_run_ends_with_an_audit_report(
    sites_reporting_small_groups: list[Path], tmp_path: Path
):
    run_dir = tmp_path / "run"
    run_simulated_federation(
        sites_reporting_small_groups,
        {
            **FAST,
            "num-server-rounds": 1,
            "run-dir": str(run_dir),
            "resume": False,
            "fairness-suppression-threshold": LOW_THRESHOLD,
        },
    )
    sent_any_statistics = False
    for site_dir in sites_reporting_small_groups:
        values, case_ids = per_case_values(site_dir, 1)
        assert case_ids, f"{site_dir}: no per-case records kept at the site"
        entries = read_egress_log(site_dir)
        assert {e["message_type"] for e in entries} == {"train", "evaluate"}
        text = outbound_text(entries)
        assert not [c for c in case_ids if c in text], "a case id left the site"
        assert not leaked(values, outbound_scalars(entries)), "a single case's metric left the site"
        evaluate = next(e for e in entries if e["message_type"] == "evaluate")
        document = json.loads(evaluate["records"]["fairness"]["values"]["document"])
        counts = [cell["cases"] for cell in document["cells"]]
        assert all(n == 0 or n >= LOW_THRESHOLD for n in counts)  # an empty cell names nobody
        sent_any_statistics |= bool(counts)
    assert sent_any_statistics, "no site sent a single unsuppressed cell: the check above proved nothing"

    stored = json.loads((run_dir / "fairness" / "round-001.json").read_text())
    assert sorted(stored["sites"]) == [d.name for d in sites_reporting_small_groups]
    summary = json.loads((run_dir / "summary.json").read_text())
    report = Path(summary["outputs"]["fairness_report"])
    assert report.is_file() and "<html" in report.read_text()[:200].lower()
    assert json.loads(Path(summary["outputs"]["fairness_report_json"]).read_text())["rounds"]


def _evaluation(dice_values: list[float]):
    from cmr.attributes import SubgroupAttributes
    from tasks.base import CaseRecord, Evaluation

    records = [
        CaseRecord(f"case-{i}", "site-01", SubgroupAttributes(), {"dice_myocardium": v})
        for i, v in enumerate(dice_values)
    ]
    return Evaluation(records=records, summary={"loss": 0.3}, num_examples=len(records))


def test_a_site_wide_sum_over_a_single_case_is_withheld():
    from client.app import evaluation_metrics

    one = evaluation_metrics(_evaluation([0.8123]), ("dice_myocardium",))
    assert one["dice-myocardium-sum"] == 0.0 and one["dice-myocardium-count"] == 0.0
    assert one["loss-count"] == 0.0 and one["num-examples"] == 1.0
    two = evaluation_metrics(_evaluation([0.8, 0.6]), ("dice_myocardium",))
    assert two["dice-myocardium-sum"] == pytest.approx(1.4) and two["dice-myocardium-count"] == 2.0


def test_a_site_sets_its_own_floor_for_small_groups_and_a_bad_value_names_the_file(tmp_path: Path):
    from client.site import SiteConfig, SiteConfigError

    assert SiteConfig.read(tmp_path).suppression_threshold == 10
    (tmp_path / "site.toml").write_text('name = "x"\n[fairness]\nsuppression-threshold = 20\n')
    assert SiteConfig.read(tmp_path).suppression_threshold == 20
    (tmp_path / "site.toml").write_text("[fairness]\nsuppression-threshold = 0\n")
    with pytest.raises(SiteConfigError, match=r"site\.toml.*suppression-threshold"):
        SiteConfig.read(tmp_path)


@pytest.mark.slow
def test_the_demo_runs_with_dp_sgd_and_secure_aggregation_on(tmp_path: Path):
    from rich.console import Console

    from cmrfl.demo import DemoSettings, run_demo
    from privacy.ledger import PrivacyLedger

    with open(tmp_path / "console.txt", "w") as console_file:
        summary = run_demo(
            DemoSettings(
                sites=3,
                cases_per_site=8,
                rounds=2,
                out=tmp_path / "demo",
                dp_sgd=True,
                target_epsilon=8.0,
                register=False,
            ),
            Console(file=console_file),
        )
    assert summary["privacy"]["secure_aggregation"]["enabled"] is True
    assert all(entry["secure_aggregation"]["sites"] == 3 for entry in summary["rounds_detail"])
    dp = summary["privacy"]["dp_sgd"]
    assert dp["enabled"] and sorted(dp["sites"]) == ["site-01", "site-02", "site-03"]
    for site_dir in summary["demo"]["site_dirs"]:
        trained = [e for e in PrivacyLedger.for_site(Path(site_dir)).entries() if e.outcome == "trained"]
        recorded = dp["sites"][Path(site_dir).name]
        assert [r["steps"] for r in recorded["rounds"]] == [e.steps for e in trained]
        assert recorded["epsilon"] == pytest.approx(trained[-1].epsilon_cumulative)
        assert 0 < recorded["epsilon"] <= 8.0
    assert Path(summary["outputs"]["fairness_report"]).is_file()
    assert "DP-SGD (patient-level)" in (tmp_path / "console.txt").read_text()
