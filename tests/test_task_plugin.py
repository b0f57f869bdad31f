"""A task is a plug-in: one defined entirely in this file runs through the whole platform.

``HeartRegion`` outlines the heart (every labelled tissue) in LGE slices with a tiny
network. Nothing outside this file knows it: it is installed the way a consortium ships
its own task, as a distribution whose ``cmrfl.tasks`` entry point names this module, on
the Python path of the ServerApp and of every simulated site (Ray's workers inherit
PYTHONPATH). Two federated rounds then give it the platform's training loop, SecAgg+,
per-round metrics and figures, the fairness audit, a signed model card, and
``cmrfl predict`` with the verified model.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmr.series_kinds import SeriesKind
from cmr.store import CaseStore
from fairness.spec import AuditSpec, MetricInfo
from tasks.base import CaseRecord, Evaluation, ModelDescription, Prediction, Task, TrainingExamples, validation_case_ids

NAME = "heart-region"
SIZE = 32  # slices are resized to SIZE × SIZE: the network is a toy, the platform is not
SITES = 3


def resized(stack: np.ndarray, mode: str) -> torch.Tensor:
    """[slice, row, col] → [slice, 1, SIZE, SIZE]."""
    tensor = torch.as_tensor(np.asarray(stack, dtype=np.float32))[:, None]
    return torch.nn.functional.interpolate(tensor, size=(SIZE, SIZE), mode=mode)


def scaled(image: torch.Tensor) -> torch.Tensor:
    high = torch.quantile(image.flatten(1), 0.99, dim=1).clamp_min(1e-6)
    return (image / high[:, None, None, None]).clamp(0, 1)


def dice(reference: np.ndarray, predicted: np.ndarray) -> float:
    total = reference.sum() + predicted.sum()
    return float("nan") if total == 0 else float(2 * np.logical_and(reference, predicted).sum() / total)


class HeartRegion(Task):
    name: ClassVar[str] = NAME
    description: ClassVar[str] = "Outline the heart in short-axis LGE slices (a plug-in defined in a test)"
    series_kinds: ClassVar[tuple[str, ...]] = (SeriesKind.LGE_STACK,)
    metric_names: ClassVar[tuple[str, ...]] = ("dice_heart", "heart_fraction_error")
    audit_spec: ClassVar[AuditSpec | None] = AuditSpec(
        task_label="heart outlining in LGE",
        metrics=(
            MetricInfo("dice_heart", "Dice of the heart", "", "Overlap of model and reference heart.", True, 0.0, 1.0),
        ),
    )

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 3, padding=1)
        )

    def cases(self, store: CaseStore, validation: bool) -> list[tuple[Any, torch.Tensor, torch.Tensor]]:
        entries = [entry for entry in store.entries() if entry.has_mask]
        chosen = validation_case_ids(entries, 0.25)
        cases = []
        for entry in entries:
            if (entry.case_id in chosen) == validation:
                stored = store.load(entry)
                assert stored.mask is not None  # only entries with a mask were chosen
                image = scaled(resized(stored.image, "bilinear"))
                heart = resized(stored.mask > 0, "nearest")[:, 0].long()
                cases.append((entry, image, heart))
        return cases

    def training_examples(self, store: CaseStore, seed: int) -> TrainingExamples:
        cases = self.cases(store, validation=False)
        pairs = [(image[i], heart[i]) for _, image, heart in cases for i in range(image.shape[0])]
        attributes = [entry.attributes.as_dict() for entry, image, _ in cases for _ in range(image.shape[0])]
        # a list serves DataLoader as a map-style Dataset
        return TrainingExamples(pairs, attributes, f"{len(pairs)} slices of {len(cases)} cases")  # type: ignore[arg-type]

    def patient_examples(self, store: CaseStore, seed: int = 0) -> torch.utils.data.Dataset:
        # One item per case (each phantom patient has one LGE stack): its middle slice.
        middle_slices = [
            (image[image.shape[0] // 2], heart[heart.shape[0] // 2]) for _, image, heart in self.cases(store, False)
        ]
        return middle_slices  # type: ignore[return-value]  # a list serves DataLoader as a map-style Dataset

    def loss(self) -> torch.nn.Module:
        return torch.nn.CrossEntropyLoss()

    @torch.no_grad()
    def heart_of(self, model: torch.nn.Module, image: torch.Tensor, device: torch.device) -> np.ndarray:
        return model.to(device).eval()(image.to(device)).argmax(dim=1).cpu().numpy().astype(bool)

    def evaluate(self, model: torch.nn.Module, store: CaseStore, device: torch.device, site_id: str) -> Evaluation:
        records = []
        for entry, image, heart in self.cases(store, validation=True):
            predicted, reference = self.heart_of(model, image, device), heart.numpy().astype(bool)
            metrics = {
                "dice_heart": dice(reference, predicted),
                "heart_fraction_error": abs(float(predicted.mean() - reference.mean())),
            }
            records.append(CaseRecord(entry.case_id, site_id, entry.attributes, metrics))
        summary = {name: float(np.nanmean([r.metrics[name] for r in records])) for name in self.metric_names}
        return Evaluation(records, summary, len(records))

    def describe_model(self) -> ModelDescription:
        return ModelDescription({"architecture": "two 3x3 convolutions"}, {"modality": "LGE", "size": SIZE})

    def predict(
        self,
        model: torch.nn.Module,
        series_dir: Path,
        out_dir: Path,
        device: torch.device,
        provenance: Mapping[str, Any],
    ) -> Prediction:
        from cmr.series_folder import read_one_series

        image = scaled(resized(read_one_series(series_dir).load_image(), "bilinear"))
        fraction = float(self.heart_of(model, image, device).mean())
        out_dir.mkdir(parents=True, exist_ok=True)
        result = out_dir / "heart.json"
        summary = {"heart_fraction": fraction, "model": dict(provenance)}
        result.write_text(json.dumps(summary))
        return Prediction({"result": result}, summary, (f"Heart: {100 * fraction:.1f} % of the image",))


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution declaring this file's task in the ``cmrfl.tasks`` group, on every process's path."""
    site_packages = tmp_path / "plugin-site-packages"
    dist_info = site_packages / "cmrfl_heart_region-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: cmrfl-heart-region\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[cmrfl.tasks]\n{NAME} = test_task_plugin:HeartRegion\n")
    tests_dir = Path(__file__).resolve().parent
    for folder in (tests_dir, site_packages):
        monkeypatch.syspath_prepend(str(folder))
    paths = [str(site_packages), str(tests_dir), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    importlib.invalidate_caches()


def test_an_installed_task_is_found_by_name_and_nothing_else_knows_it(installed_plugin: None):
    from tasks import get_task, task_names

    assert NAME in task_names()
    assert type(get_task(NAME)).__name__ == "HeartRegion"


@pytest.mark.slow
def test_a_task_defined_in_a_test_file_runs_two_federated_rounds_with_audit_outputs_card_and_predict(
    installed_plugin: None, ingested_sites: list[Path], small_consortium: Path, tmp_path: Path
):
    from cmrfl.cli import app
    from cmrfl.demo_registry import sign_demo_model
    from cmrfl.simulation import run_simulated_federation
    from server.registry.model_files import write_released_model

    sites = []
    for site_dir in ingested_sites:
        copy = tmp_path / "sites" / site_dir.name
        shutil.copytree(site_dir, copy)
        (copy / "site.toml").write_text(f'name = "{site_dir.name}"\n\n[fairness]\nsuppression-threshold = 2\n')
        sites.append(copy)
    run_dir = tmp_path / "run"
    run_simulated_federation(
        sites,
        {
            "task": NAME,
            "num-server-rounds": 2,
            "max-local-steps": 5,
            "learning-rate": 0.01,
            "min-train-sites": SITES,
            "min-available-sites": SITES,
            "run-dir": str(run_dir),
            "resume": False,
            "fairness-suppression-threshold": 2,
        },
    )

    # Run outputs: the task's headline in summary.json and metrics.csv, its default figure.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"] == NAME and summary["rounds"] == 2
    for entry in summary["rounds_detail"]:
        assert entry["failures"] == [] and sorted(entry["train"]["sites"]) == summary["sites"]
    final = summary["final"]["overall"]
    assert 0.0 <= final["dice_heart"] <= 1.0 and final["heart_fraction_error"] >= 0.0
    assert final["cases_evaluated"] >= 2 * SITES
    assert (run_dir / "metrics.csv").read_text().splitlines()[0].endswith("dice_heart,heart_fraction_error,loss")
    assert Path(summary["outputs"]["metrics_plot"]).stat().st_size > 10_000
    assert summary["privacy"]["secure_aggregation"]["enabled"] is True

    # The fairness audit measured the task's own metric.
    report = json.loads(Path(summary["outputs"]["fairness_report_json"]).read_text())
    assert report["rounds"] and "dice_heart" in json.dumps(report)

    # A signed model card in the task's words; a site verifies it and predicts with it.
    site_dir = sites[0]
    key = sign_demo_model(tmp_path / "signing", run_dir, [site_dir], NAME)
    card = json.loads((run_dir / "model-card.json").read_text())
    assert card["task"]["name"] == NAME and card["network"]["architecture"] == "two 3x3 convolutions"
    assert (
        "Dice heart" in (run_dir / "model-card.md").read_text()
        or "dice heart" in (run_dir / "model-card.md").read_text()
    )
    write_released_model(run_dir, NAME, "1", key, site_dir / "models" / NAME / "1", approved_by="consortium")
    series_dir = sorted((small_consortium / "site-01" / "dicom").glob("*/*_LGE_SAX"))[0]  # the exam's LGE stack
    out = tmp_path / "prediction"
    result = CliRunner().invoke(
        app, ["predict", "--site-dir", str(site_dir), "--model", NAME, str(series_dir), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Heart:" in result.output
    written = json.loads((out / "heart.json").read_text())
    assert 0.0 <= written["heart_fraction"] <= 1.0 and written["model"]["version"] == "1"
