"""The server's round files, the audit report (HTML and JSON) and `cmrfl audit report`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmrfl.cli import app
from fairness.report import write_audit_report
from fairness.run_store import NoFairnessStatistics, load_run_statistics, round_statistics_path, save_round_statistics
from fairness.site import fairness_statistics_to_send
from fairness_fixtures import SPEC, consortium_records

SUPPRESSION_THRESHOLD = 10
RUN_CONFIG = {
    "fairness-suppression-threshold": SUPPRESSION_THRESHOLD,
    "fairness-tolerance-dice-myocardium": 0.05,
    "num-server-rounds": 2,
}


def write_run(run_dir: Path, female_dice_drop: float, rounds=(1, 2)) -> Path:
    """What the server would save: each round, each site's document as the site sent it."""
    for server_round in rounds:
        records = consortium_records(80, seed=server_round, female_dice_drop=female_dice_drop, female_fraction=0.5)
        replies = {site: fairness_statistics_to_send(rs, SPEC, SUPPRESSION_THRESHOLD) for site, rs in records.items()}
        save_round_statistics(
            run_dir, server_round, replies, {"site-04": "no reply this round"}, task="lge", run_config=RUN_CONFIG
        )
    return run_dir


@pytest.fixture(scope="module")
def gapped_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("run-gap"), female_dice_drop=0.2)


@pytest.fixture(scope="module")
def gapped_report(gapped_run):
    html_path, json_path = write_audit_report(gapped_run, SPEC)
    return html_path.read_text(encoding="utf-8"), json.loads(json_path.read_text(encoding="utf-8"))


def test_round_files_keep_each_sites_statistics_settings_and_notes(gapped_run):
    assert round_statistics_path(gapped_run, 2).name == "round-002.json"
    run = load_run_statistics(gapped_run)
    assert list(run.rounds) == [1, 2]
    last = run.last
    assert set(last.sites) == {"site-01", "site-02", "site-03"}
    assert last.notes == {"site-04": "no reply this round"}
    assert last.settings == {"fairness-suppression-threshold": 10, "fairness-tolerance-dice-myocardium": 0.05}
    assert all(stats.suppression_threshold == 10 for stats in last.sites.values())


def test_a_malformed_site_document_is_kept_out_and_recorded(tmp_path):
    good = fairness_statistics_to_send(consortium_records(40, 1)["site-01"], SPEC)
    newer = good.replace('"version":2', '"version":7')
    save_round_statistics(tmp_path, 1, {"site-01": good, "site-02": newer}, task="lge")
    last = load_run_statistics(tmp_path).last
    assert set(last.sites) == {"site-01"}
    assert "version" in last.rejected["site-02"] and last.task == "lge"


def test_the_report_is_self_contained_html(gapped_report):
    text, _ = gapped_report
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://|<script|<link|@import|src=['\"](?!data:)", text)
    assert text.count("data:image/png;base64,") >= 3


def test_the_report_states_the_flag_in_words_with_units_and_explains_itself(gapped_report):
    text, _ = gapped_report
    assert "How to read this report" in text
    assert "FLAGGED" in text and "so this is flagged" in text
    assert "By sex, female" in text
    # the measure keeps its own capitals inside the sentence, and no article is guessed for it
    assert re.search(r"By sex, female \(n=\d+\) against male \(n=\d+\) — Dice similarity of the myocardium: ", text)
    assert "percentage points" in text
    assert "complementary suppression" in text and "fewer than 10 patients" in text
    assert "no reply this round" in text
    words = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    for acronym in ("AUROC", " CI ", "EOD", "TPR", "FPR"):
        assert acronym not in words


def test_the_json_holds_the_same_numbers_as_the_page(gapped_report):
    text, document = gapped_report
    flags = [g for g in document["rounds"][-1]["gaps"] if g["flagged"]]
    assert flags and any(g["worst_group"] == "sex=female" for g in flags)
    assert text.count("<td>FLAGGED</td>") == len(flags) + sum(
        o["flagged"] for o in document["rounds"][-1]["equalised_odds"]
    )
    assert document["summary"][0].startswith(f"{len(flags)} gap")
    women = next(g for g in flags if g["worst_group"] == "sex=female" and g["measure"] == "dice_myocardium")
    assert f"{women['shortfall']:.3f}" in text
    assert [r["server_round"] for r in document["rounds"]] == [1, 2]


def test_without_a_gap_the_summary_says_nothing_was_flagged(tmp_path):
    html_path, json_path = write_audit_report(write_run(tmp_path, female_dice_drop=0.0, rounds=(1,)), SPEC)
    assert "No gap was flagged" in json.loads(json_path.read_text())["summary"][0]
    assert "No gap was flagged" in html_path.read_text()


def test_a_run_folder_without_statistics_is_named_in_the_error(tmp_path):
    with pytest.raises(NoFairnessStatistics, match=re.escape(str(tmp_path))):
        write_audit_report(tmp_path, SPEC)


def test_cmrfl_audit_report_writes_both_files(tmp_path):
    run_dir = write_run(tmp_path / "run", female_dice_drop=0.2, rounds=(1,))
    result = CliRunner().invoke(app, ["audit", "report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "fairness-audit.html").is_file() and (run_dir / "fairness-audit.json").is_file()


def test_cmrfl_audit_report_names_a_folder_without_statistics(tmp_path):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    result = CliRunner().invoke(app, ["audit", "report", str(empty)])
    assert result.exit_code != 0
    assert "empty-run" in result.output and "no fairness statistics" in result.output


@pytest.mark.parametrize("command", [["audit"], ["audit", "report"]])
def test_audit_commands_have_help(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
