"""The T1-mapping task: MOLLI series from DICOM into the case store, the network trained
with synthetic motion in-process and federatedly, per-study records, the fairness audit."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from cmr.ingest import ingest_site
from cmr.mapping_store import NATIVE, POST_CONTRAST, t1_mapping_cases
from cmr.phantom.mapping_consortium import generate_mapping_consortium
from cmr.store import CaseStore
from tasks import get_task
from tasks.base import TrainSettings
from tasks.mapping import MotionRobustT1Mapping
from tasks.mapping.data import network_input, random_frame_motion
from tasks.mapping.inference import predict_t1_map

CPU = torch.device("cpu")
SITES, CASES_PER_SITE = 3, 8


@pytest.fixture(scope="module")
def mapping_hospitals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mapping-hospitals")
    generate_mapping_consortium(out, SITES, CASES_PER_SITE, seed=3, max_motion_mm=4.0)
    return out


@pytest.fixture(scope="module")
def mapping_sites(mapping_hospitals: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("mapping-sites")
    site_dirs = []
    for hospital in sorted(p for p in mapping_hospitals.iterdir() if p.is_dir()):
        site_dir = root / hospital.name
        report = ingest_site(
            hospital / "dicom", site_dir, manifest=hospital / "manifest.csv", labels_dir=hospital / "labels"
        )
        assert report.rejections == [], report.rejections
        site_dirs.append(site_dir)
    return site_dirs


def test_a_site_ingests_each_molli_series_from_dicom_with_its_times_reference_and_pairing(
    mapping_sites: list[Path], mapping_hospitals: Path
):
    truth = json.loads((mapping_hospitals / "consortium.json").read_text())["cases"]
    cases = t1_mapping_cases(CaseStore(mapping_sites[0]))
    assert len(cases) == 2 * CASES_PER_SITE
    assert sorted(c.contrast for c in cases) == [NATIVE] * CASES_PER_SITE + [POST_CONTRAST] * CASES_PER_SITE
    studies = {c.study for c in cases}
    assert len(studies) == CASES_PER_SITE  # native and post of one examination share a study key
    for case in cases:
        assert case.frames.shape[0] == (8 if case.contrast == NATIVE else 9)  # 5(3)3 and 4(1)3(1)2
        assert np.all(np.diff(case.inversion_times_ms) > 0)
        assert case.reference_t1_ms is not None and case.tissue_mask is not None  # phantom sites have both
        assert case.reference_t1_ms.shape == case.frames.shape[1:] == case.tissue_mask.shape
        assert not case.entry.has_mask  # the LGE task never mistakes it for one of its cases
        assert case.entry.attributes.ethnicity != "unknown"  # from the manifest
    site_haematocrits = sorted(round(c["haematocrit"], 4) for c in truth if c["site_id"] == "site-01")
    assert sorted({c.haematocrit for c in cases}) == site_haematocrits
    # Re-ingesting changes nothing.
    hospital = mapping_hospitals / "site-01"
    again = ingest_site(hospital / "dicom", mapping_sites[0], hospital / "manifest.csv", hospital / "labels")
    assert (again.cases_written, again.cases_unchanged) == (0, 2 * CASES_PER_SITE)


def test_a_molli_series_with_a_repeated_inversion_time_is_refused_by_folder_and_reason(
    mapping_hospitals: Path, tmp_path: Path
):
    hospital = tmp_path / "hospital"
    shutil.copytree(mapping_hospitals / "site-02", hospital)
    series_dir = sorted((hospital / "dicom").glob("*/MOLLI_NATIVE"))[0]
    files = sorted(series_dir.glob("*.dcm"))
    first = pydicom.dcmread(files[0])
    broken = pydicom.dcmread(files[1])
    broken.InversionTime = first.InversionTime
    broken.save_as(files[1])
    report = ingest_site(hospital / "dicom", tmp_path / "site", hospital / "manifest.csv", hospital / "labels")
    folder = series_dir.relative_to(hospital / "dicom").as_posix()
    (rejection,) = [r for r in report.rejections if r.kind == "series"]
    assert rejection.path == folder and "duplicates" in rejection.reason and "InversionTime" in rejection.reason
    assert report.cases_written == 2 * CASES_PER_SITE - 1
    # Its labels matched no ingested series, and the manifest row no usable series: both are said.
    assert any(r.kind == "labels" for r in report.rejections)


def test_the_network_input_does_not_depend_on_frame_order_or_signal_scale():
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 1, size=(8, 32, 32)).astype(np.float32)
    times = np.array([120, 1120, 2120, 3120, 4120, 200, 1200, 2200], dtype=np.float64)
    order = rng.permutation(8)
    first = network_input(frames, times, max_frames=11)
    second = network_input(3.7 * frames[order], times[order], max_frames=11)
    assert first.shape == (33, 32, 32)
    torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-5)
    assert torch.all(first[22 + 8 :] == 0)  # absent frames: zero images, zero times
    with pytest.raises(ValueError, match="7 inversion times for 8 frames"):
        network_input(frames, times[:7], max_frames=11)


def test_synthetic_motion_moves_each_frame_on_its_own_and_leaves_the_times_alone():
    image = torch.zeros((33, 48, 48))
    image[:8, 20:28, 20:28] = 1.0
    image[11:19, 20:28, 20:28] = 1.0
    image[22:30] = 0.5
    moved = random_frame_motion(
        image, 8, max_shift_px=4.0, max_rotation_deg=5.0, generator=torch.Generator().manual_seed(1)
    )
    centres = [tuple(float(c) for c in torch.nonzero(moved[k] > 0.5).float().mean(dim=0)) for k in range(8)]
    assert len({(round(r), round(c)) for r, c in centres}) > 1  # frames moved differently
    torch.testing.assert_close(moved[:8], moved[11:19])  # both frame blocks move alike
    torch.testing.assert_close(moved[22:], image[22:])


def test_the_task_trains_and_scores_each_study_with_its_attributes(mapping_sites: list[Path], mapping_hospitals: Path):
    task = MotionRobustT1Mapping()
    store = CaseStore(mapping_sites[0])
    torch.manual_seed(0)
    model = task.build_model()
    before = task.evaluate(model, store, CPU, "site-01")
    outcome = task.train(
        model, store, TrainSettings(batch_size=4, max_steps=60, local_epochs=100, learning_rate=3e-3), CPU
    )
    after = task.evaluate(model, store, CPU, "site-01")
    assert outcome.steps == 60 and math.isfinite(outcome.mean_loss)
    assert after.summary["loss"] < before.summary["loss"]
    assert after.summary["myocardial_t1_abs_error_ms"] < before.summary["myocardial_t1_abs_error_ms"]

    training, validation = task.split(store)
    validation_studies = {s.case.study for s in validation}
    # At least two, so that the site's sums are not withheld as a single case's values.
    assert len(validation_studies) >= 2 and not validation_studies & {s.case.study for s in training}
    assert after.num_examples == len(after.records) == len(validation_studies)
    truth = json.loads((mapping_hospitals / "consortium.json").read_text())["cases"]
    true_ecvs = [100 * c["myocardial_ecv"] for c in truth if c["site_id"] == "site-01"]
    for record in after.records:
        assert set(record.metrics) == set(task.metric_names)
        assert record.attributes.sex in ("female", "male") and record.attributes.vendor != "unknown"
        assert all(math.isfinite(v) for v in record.metrics.values())
        # The ECV of the reference maps is the phantom's ground truth ECV of that examination.
        assert min(abs(record.metrics["ecv_reference_percent"] - e) for e in true_ecvs) < 0.01


def test_dp_sgd_trains_the_mapping_network_over_patients_for_the_planned_steps(mapping_sites: list[Path]):
    from dataclasses import replace

    from privacy.dp_sgd import DpSgdRequest, plan_round

    task = MotionRobustT1Mapping()
    store = CaseStore(mapping_sites[1])
    request = DpSgdRequest(
        max_grad_norm=1.0,
        delta=1e-5,
        noise_multiplier=1.0,
        target_epsilon=0.0,
        planned_rounds=2,
        accountant="rdp",
        grad_sample_mode="hooks",
    )
    settings = TrainSettings(batch_size=2, local_epochs=1, seed=1)
    patients = task.training_patients(store)
    training, _ = task.split(store)
    assert patients == len({s.case.study for s in training})  # one examination per phantom patient
    plan = plan_round(request, patients, settings.batch_size, settings.local_epochs)
    outcome = task.train(task.build_model(), store, replace(settings, privacy=plan), CPU)
    assert outcome.steps == plan.steps > 0


def test_group_balanced_sampling_trains_the_mapping_network(mapping_sites: list[Path]):
    task = MotionRobustT1Mapping()
    settings = TrainSettings(
        batch_size=4, local_epochs=10, max_steps=2, fairness_mitigation="group-balanced", balance_attribute="sex"
    )
    store = CaseStore(mapping_sites[2])
    outcome = task.train(task.build_model(), store, settings, CPU)
    # The split follows the site's salted study pseudonyms, so the training count varies
    # between installations; the balanced sampler draws with replacement whatever it is.
    training, _ = task.split(store)
    assert outcome.num_examples == len(training) > 0
    # An epoch draws as many slices as there are, in batches of 4 (the last one smaller).
    epoch = [4] * (len(training) // 4) + ([len(training) % 4] if len(training) % 4 else [])
    assert outcome.steps == 2 and outcome.num_examples_seen == sum((epoch * 2)[:2])


def test_predict_t1_map_uses_a_saved_model_and_refuses_another_tasks(mapping_sites: list[Path], tmp_path: Path):
    task = MotionRobustT1Mapping()
    model = task.build_model()
    path = tmp_path / "final_model.pt"
    torch.save({"task": "mapping", "state_dict": model.state_dict()}, path)
    case = t1_mapping_cases(CaseStore(mapping_sites[0]))[0]
    frames = case.frames[:, :90, :75]  # any size: padded for the network, cropped back
    t1 = predict_t1_map(path, frames, case.inversion_times_ms)
    assert t1.shape == (90, 75) and t1.dtype == np.float32
    expected = task.t1_map_ms(model, frames, case.inversion_times_ms, CPU)
    np.testing.assert_allclose(t1, expected, rtol=1e-5, atol=1e-3)
    torch.save({"task": "lge", "state_dict": get_task("lge").build_model().state_dict()}, path)
    with pytest.raises(ValueError, match="task 'lge'"):
        predict_t1_map(path, frames, case.inversion_times_ms)


def test_the_mapping_network_trains_federatedly_for_two_rounds_with_a_fairness_audit(
    mapping_sites: list[Path], tmp_path: Path
):
    from cmrfl.simulation import run_simulated_federation

    sites = []
    for site_dir in mapping_sites:
        copy = tmp_path / "sites" / site_dir.name
        shutil.copytree(site_dir, copy)
        (copy / "site.toml").write_text(f'name = "{site_dir.name}"\n\n[fairness]\nsuppression-threshold = 2\n')
        sites.append(copy)
    run_dir = tmp_path / "run"
    run_simulated_federation(
        sites,
        {
            "task": "mapping",
            "num-server-rounds": 2,
            "max-local-steps": 3,
            "batch-size": 4,
            "min-train-sites": SITES,
            "min-available-sites": SITES,
            "run-dir": str(run_dir),
            "resume": False,
            "fairness-suppression-threshold": 2,
        },
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"] == "mapping" and summary["rounds"] == 2
    assert summary["sites"] == ["site-01", "site-02", "site-03"]
    for entry in summary["rounds_detail"]:
        assert entry["failures"] == []
        assert sorted(entry["train"]["sites"]) == summary["sites"]
        assert entry["evaluate"]["global"]["num-examples"] >= 2 * SITES  # every site validates two studies
        assert entry["evaluate"]["global"]["myocardial-t1-abs-error-ms"] > 0
        for site_metrics in entry["evaluate"]["sites"].values():
            assert site_metrics["myocardial-t1-abs-error-ms"] > 0  # no site's sums withheld
    final = summary["final"]["overall"]
    assert final["cases_evaluated"] >= 2 * SITES and final["myocardial_t1_abs_error_ms"] > 0
    assert "dice_myocardium" not in final
    with (run_dir / "metrics.csv").open() as handle:
        header = handle.readline().strip().split(",")
    assert header[4:] == [
        "myocardial_t1_bias_ms",
        "myocardial_t1_abs_error_ms",
        "blood_t1_abs_error_ms",
        "post_myocardial_t1_abs_error_ms",
        "ecv_abs_error_percent",
        "loss",
    ]
    assert Path(summary["outputs"]["metrics_plot"]).stat().st_size > 10_000
    report = json.loads(Path(summary["outputs"]["fairness_report_json"]).read_text())
    assert report["rounds"]
    assert "myocardial_t1_abs_error_ms" in json.dumps(report)
    saved = torch.load(run_dir / "final_model.pt", weights_only=True)
    assert saved["task"] == "mapping"
    case = t1_mapping_cases(CaseStore(mapping_sites[0]))[0]
    t1 = predict_t1_map(run_dir / "final_model.pt", case.frames, case.inversion_times_ms)
    assert t1.shape == case.frames.shape[1:] and np.all(np.isfinite(t1))


def test_phantom_writes_mapping_hospitals_and_site_ingest_stores_them_from_the_command_line(tmp_path: Path):
    from typer.testing import CliRunner

    from cmrfl.cli import app

    runner = CliRunner()
    hospitals = tmp_path / "hospitals"
    result = runner.invoke(
        app,
        [
            "phantom",
            "--task",
            "mapping",
            "--sites",
            "1",
            "--cases-per-site",
            "2",
            "--max-motion-mm",
            "3",
            "--out",
            str(hospitals),
        ],
    )
    assert result.exit_code == 0, result.output
    site = hospitals / "site-01"
    result = runner.invoke(
        app,
        [
            "site",
            "ingest",
            str(site / "dicom"),
            "--site-dir",
            str(tmp_path / "site"),
            "--manifest",
            str(site / "manifest.csv"),
            "--labels",
            str(site / "labels"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "site" / "ingest-report.json").read_text())
    assert report["cases_written"] == 4 and report["rejections"] == []
    assert len(t1_mapping_cases(CaseStore(tmp_path / "site"))) == 4
    assert runner.invoke(app, ["phantom", "--task", "t2", "--out", str(tmp_path / "x")]).exit_code != 0
