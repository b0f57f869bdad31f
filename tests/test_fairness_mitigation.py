"""Fairness mitigation at the sites: group-balanced sampling of training slices, chosen in the run config."""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from monai.data import Dataset

from cmr.store import CaseStore
from cmrfl.protocol import TrainInstruction
from server.config import FederationConfig, RunConfigError
from server.federation import train_config_for
from tasks import get_task
from tasks.base import TrainingExamples, TrainSettings
from tasks.lge.task import LgeScarSegmentation
from tasks.sampling import group_balanced_sampler, group_balanced_weights
from tasks.training import training_loader

CPU = torch.device("cpu")


def drawn_shares(groups: list[str], draws: int = 40_000, seed: int = 0) -> dict[str, float]:
    sampler = group_balanced_sampler(groups, torch.Generator().manual_seed(seed))
    counts: Counter[str] = Counter()
    while sum(counts.values()) < draws:
        counts.update(groups[index] for index in sampler)
    total = sum(counts.values())
    return {group: count / total for group, count in counts.items()}


def test_a_site_with_four_women_to_one_man_draws_them_half_and_half():
    groups = ["female"] * 80 + ["male"] * 20
    shares = drawn_shares(groups)
    assert shares["female"] == pytest.approx(0.5, abs=0.01)
    assert shares["male"] == pytest.approx(0.5, abs=0.01)


def test_every_group_present_gets_an_equal_share_and_an_epoch_keeps_its_length():
    groups = ["White"] * 60 + ["Asian"] * 25 + ["Black"] * 10 + ["Mixed"] * 5
    assert len(group_balanced_sampler(groups)) == len(groups)
    shares = drawn_shares(groups)
    assert all(share == pytest.approx(0.25, abs=0.01) for share in shares.values())


def test_cases_without_the_attribute_recorded_keep_their_natural_share():
    groups = ["female"] * 70 + ["male"] * 20 + ["unknown"] * 10
    weights = group_balanced_weights(groups)
    assert float(weights.sum()) == pytest.approx(1.0)
    shares = drawn_shares(groups)
    assert shares["unknown"] == pytest.approx(0.10, abs=0.01)
    assert shares["female"] == pytest.approx(0.45, abs=0.01) and shares["male"] == pytest.approx(0.45, abs=0.01)


def as_examples(samples: list[dict]) -> TrainingExamples:
    """LGE slice samples as the shared training loop draws them."""
    return TrainingExamples(Dataset(samples), [sample["attributes"] for sample in samples], f"{len(samples)} slices")


def test_the_lge_task_draws_a_sites_training_slices_balanced_by_sex(ingested_sites: list[Path]):
    task = get_task("lge")
    assert isinstance(task, LgeScarSegmentation)
    store = CaseStore(ingested_sites[0])
    training, validation = task.split(store)  # the split is salted per ingest: use every case
    samples = [sample for case in training + validation for sample in case.slice_samples()]
    sexes = [sample["attributes"]["sex"] for sample in samples]
    assert set(sexes) == {"female", "male"}, "the fixture site needs both sexes for this test"
    plain = training_loader(as_examples(samples), TrainSettings(batch_size=4), CPU)
    balanced = training_loader(
        as_examples(samples),
        TrainSettings(batch_size=4, fairness_mitigation="group-balanced", balance_attribute="sex"),
        CPU,
    )
    assert len(balanced) == len(plain)  # the same number of steps per epoch
    drawn: Counter[str] = Counter()
    for _ in range(400):
        drawn.update(sexes[index] for index in balanced.sampler)
    share = drawn["female"] / sum(drawn.values())
    assert share == pytest.approx(0.5, abs=0.03)
    assert sexes.count("female") / len(sexes) != pytest.approx(0.5, abs=0.03), "the site was balanced already"


def test_by_default_a_site_shuffles_every_slice_once_per_epoch_as_before(ingested_sites: list[Path]):
    assert TrainSettings().fairness_mitigation == "none"
    assert FederationConfig().fairness_mitigation == "none"
    task = get_task("lge")
    assert isinstance(task, LgeScarSegmentation)
    training, _ = task.split(CaseStore(ingested_sites[0]))
    samples = [sample for case in training for sample in case.slice_samples()]
    loader = training_loader(as_examples(samples), TrainSettings(seed=3), CPU)
    assert isinstance(loader.sampler, torch.utils.data.RandomSampler)
    assert sorted(loader.sampler) == list(range(len(samples)))
    expected = torch.randperm(len(samples), generator=torch.Generator().manual_seed(3)).tolist()
    assert list(training_loader(as_examples(samples), TrainSettings(seed=3), CPU).sampler) == expected


def test_the_run_config_choice_reaches_the_sites_training_settings():
    config = FederationConfig.from_run_config(
        {"fairness-mitigation": "group-balanced", "fairness-balance-attribute": "ethnicity"}
    )
    settings = TrainInstruction.from_record(train_config_for(config, server_round=1)).training
    assert (settings.fairness_mitigation, settings.balance_attribute) == ("group-balanced", "ethnicity")
    default = TrainInstruction.from_record(train_config_for(FederationConfig(), server_round=1)).training
    assert default.fairness_mitigation == "none"


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        (
            {"fairness-mitigation": "reweighting"},
            "fairness-mitigation='reweighting': choose one of none, group-balanced",
        ),
        (
            {"fairness-mitigation": "group-balanced", "fairness-balance-attribute": "gender"},
            "fairness-balance-attribute='gender': not a subgroup attribute; choose one of sex, age_band, ethnicity",
        ),
        (
            {"fairness-mitigation": "group-balanced", "dp-sgd": True},
            "cannot be combined with dp-sgd=true: DP-SGD samples each patient with the same probability",
        ),
    ],
)
def test_a_bad_mitigation_choice_is_refused_with_the_reason(run_config, message):
    with pytest.raises(RunConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FederationConfig.from_run_config(run_config)


def test_dp_sgd_without_mitigation_is_still_accepted():
    config = FederationConfig.from_run_config({"dp-sgd": True})
    assert config.dp_sgd and config.fairness_mitigation == "none"


def test_a_site_refuses_to_train_group_balanced_under_dp_sgd_even_if_asked():
    from privacy.dp_sgd import DpSgdRequest, plan_round

    plan = plan_round(
        DpSgdRequest(target_epsilon=0.0, noise_multiplier=1.0),
        protected_units=40,
        batch_size=8,
        local_epochs=1,
        max_steps=0,
    )
    with pytest.raises(ValueError, match="privacy accounting"):
        TrainSettings(privacy=plan, fairness_mitigation="group-balanced")


# --------------------------------------------------------------------------------------
# The report: before and after
# --------------------------------------------------------------------------------------
def write_run(run_dir: Path, female_dice_drop: float, mitigation: str) -> Path:
    """What the server saves each round, for a run trained with ``mitigation``."""
    from fairness.run_store import save_round_statistics
    from fairness.site import fairness_statistics_to_send
    from fairness_fixtures import SPEC, consortium_records

    run_config = {
        "fairness-suppression-threshold": 10,
        "fairness-mitigation": mitigation,
        "fairness-balance-attribute": "sex",
    }
    for server_round in (1, 2):
        records = consortium_records(80, seed=server_round, female_dice_drop=female_dice_drop, female_fraction=0.5)
        replies = {site: fairness_statistics_to_send(rs, SPEC) for site, rs in records.items()}
        save_round_statistics(run_dir, server_round, replies, task="lge", run_config=run_config)
    return run_dir


@pytest.fixture(scope="module")
def before_and_after(tmp_path_factory) -> tuple[str, dict]:
    from fairness.report import write_audit_report
    from fairness_fixtures import SPEC

    root = tmp_path_factory.mktemp("mitigation")
    baseline = write_run(root / "run", female_dice_drop=0.2, mitigation="none")
    balanced = write_run(root / "run-balanced", female_dice_drop=0.05, mitigation="group-balanced")
    html_path, json_path = write_audit_report(balanced, SPEC, baseline_dir=baseline)
    return html_path.read_text(encoding="utf-8"), json.loads(json_path.read_text(encoding="utf-8"))


def test_with_a_baseline_the_report_gives_each_groups_measure_and_each_gap_before_and_after(before_and_after):
    _, document = before_and_after
    comparison = document["before_and_after"]
    assert comparison["before"]["mitigation"] == "none" and comparison["after"]["mitigation"] == "group-balanced"
    women = next(g for g in comparison["groups"] if g["group"] == "sex=female" and g["measure"] == "dice_myocardium")
    assert women["before"] == pytest.approx(0.62, abs=0.02) and women["after"] == pytest.approx(0.77, abs=0.02)
    assert women["change"] == pytest.approx(women["after"] - women["before"])
    by_sex = next(g for g in comparison["gaps"] if g["grouping"] == "sex" and g["measure"] == "dice_myocardium")
    assert by_sex["before"]["worst_group"] == by_sex["after"]["worst_group"] == "sex=female"
    assert by_sex["before"]["shortfall"] == pytest.approx(0.2, abs=0.02)
    assert by_sex["after"]["shortfall"] == pytest.approx(0.05, abs=0.02)
    assert by_sex["before"]["flagged"] and not by_sex["after"]["flagged"]
    audited = {g["grouping"] for g in comparison["gaps"]}
    assert {"sex", "age_band", "ethnicity"} <= audited and not any("×" in name for name in audited)


def test_the_before_and_after_is_in_plain_words_on_the_page(before_and_after):
    text, document = before_and_after
    words = document["before_and_after"]["summary"]
    assert words[0].startswith("Before: the run in ") and "group-balanced sampling by sex" in words[0]
    sex_sentence = next(line for line in words if line.startswith("By sex, Dice similarity of the myocardium"))
    assert "the worst group was female" in sex_sentence and "smaller" in sex_sentence
    assert "Flagged before: yes; after: no." in sex_sentence
    assert any(line.startswith("All patients together:") for line in words)
    assert "Before and after the mitigation" in text and "8. Before and after the mitigation, group by group" in text
    assert "Training: group-balanced sampling by sex" in text
    page = html.unescape(text)  # the page escapes what it shows
    for line in words:
        assert line in page


def test_without_a_baseline_the_report_has_no_before_and_after(tmp_path: Path):
    from fairness.report import write_audit_report
    from fairness_fixtures import SPEC

    html_path, json_path = write_audit_report(write_run(tmp_path, female_dice_drop=0.0, mitigation="none"), SPEC)
    assert "before_and_after" not in json.loads(json_path.read_text())
    assert "Before and after" not in html_path.read_text()
    assert "Training: no fairness mitigation" in html_path.read_text()


def test_cmrfl_audit_report_with_a_baseline_and_a_missing_baseline_named(tmp_path: Path):
    from typer.testing import CliRunner

    from cmrfl.cli import app

    baseline = write_run(tmp_path / "run", female_dice_drop=0.2, mitigation="none")
    balanced = write_run(tmp_path / "run-balanced", female_dice_drop=0.05, mitigation="group-balanced")
    result = CliRunner().invoke(app, ["audit", "report", str(balanced), "--baseline", str(baseline)])
    assert result.exit_code == 0, result.output
    assert "before_and_after" in json.loads((balanced / "fairness-audit.json").read_text())
    missing = CliRunner().invoke(app, ["audit", "report", str(balanced), "--baseline", str(tmp_path / "no-such-run")])
    assert missing.exit_code != 0 and "no-such-run" in missing.output


def test_the_demo_refuses_to_compare_the_mitigation_under_dp_sgd():
    from typer.testing import CliRunner

    from cmrfl.cli import app

    result = CliRunner().invoke(app, ["demo", "--compare-mitigation", "--dp-sgd"])
    assert result.exit_code != 0
    assert "cannot be combined with dp-sgd" in " ".join(result.output.split())


@pytest.mark.slow
def test_the_demo_compares_training_without_and_with_group_balanced_sampling(tmp_path: Path):
    from rich.console import Console

    from cmrfl.demo import DemoSettings, run_demo

    console_file = tmp_path / "console.txt"
    with console_file.open("w") as console_stream:
        summary = run_demo(
            DemoSettings(
                sites=3, cases_per_site=8, rounds=1, out=tmp_path / "demo", compare_mitigation=True, register=False
            ),
            Console(file=console_stream, width=200),
        )
    balanced_dir = tmp_path / "demo" / "run-balanced"
    assert summary["compare_mitigation"]["run_dir"] == str(balanced_dir)
    balanced_summary = json.loads((balanced_dir / "summary.json").read_text())
    assert balanced_summary["run_config"]["fairness-mitigation"] == "group-balanced"
    assert summary["run_config"]["fairness-mitigation"] == "none"
    report = json.loads((balanced_dir / "fairness-audit.json").read_text())
    assert report["before_and_after"]["baseline_run_dir"] == str(tmp_path / "demo" / "run")
    assert "Before and after the mitigation" in console_file.read_text()
