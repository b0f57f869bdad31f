"""What a finished (or interrupted) run leaves in its run directory.

``metrics.csv`` (one row per round and site, rewritten after every round),
``summary.json``, ``final_model.pt`` and the task's per-round figures. Which metrics
head the CSV and the summary, and which figures are drawn, is the task's to say
(``Task.headline``, ``Task.plots``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord

from cmrfl.protocol import Metric, wire_name
from server.config import FederationConfig
from tasks.base import RunPlot, Task

CONSORTIUM = "consortium"


def csv_metrics_for(task: Task) -> tuple[str, ...]:
    """metrics.csv's metric columns: the task's headline metrics, then the loss."""
    return tuple(dict.fromkeys((*task.headline.values(), Metric.LOSS.value)))


def _clean(value: Any) -> Any:
    """JSON has no NaN: an undefined metric is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_metrics_csv(run_dir: Path, history: list[dict[str, Any]], metric_names: Sequence[str]) -> Path:
    path = Path(run_dir) / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["round", "site", "train_loss", "cases_evaluated", *metric_names])
        for entry in history:
            rows = {CONSORTIUM: entry["evaluate"]["global"], **entry["evaluate"]["sites"]}
            train = {CONSORTIUM: entry["train"]["global"], **entry["train"]["sites"]}
            for site, metrics in rows.items():
                writer.writerow(
                    [
                        entry["round"],
                        site,
                        _csv_value(train.get(site, {}).get(Metric.TRAIN_LOSS)),
                        int(metrics.get(Metric.NUM_EXAMPLES, 0)),
                        *(_csv_value(metrics.get(wire_name(name))) for name in metric_names),
                    ]
                )
    return path


def _csv_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_final_model(run_dir: Path, arrays: ArrayRecord, config: FederationConfig) -> Path:
    path = Path(run_dir) / "final_model.pt"
    torch.save({"task": config.task, "state_dict": arrays.to_torch_state_dict()}, path)
    return path


def plot_per_round(run_dir: Path, history: list[dict[str, Any]], plot: RunPlot) -> Path:
    """One panel per metric of ``plot``: each site's and the consortium's value, round by round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(run_dir) / plot.file
    rounds = [entry["round"] for entry in history]
    sites = sorted({site for entry in history for site in entry["evaluate"]["sites"]})
    panels = len(plot.panels)
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), sharex=True, squeeze=False)
    for axis, (name, title) in zip(axes[0], plot.panels, strict=True):
        metric = wire_name(name)
        for site in sites:
            values = [e["evaluate"]["sites"].get(site, {}).get(metric, math.nan) for e in history]
            axis.plot(rounds, values, marker="o", label=site)
        consortium = [e["evaluate"]["global"].get(metric, math.nan) for e in history]
        axis.plot(rounds, consortium, color="black", linewidth=2.5, label="all sites")
        axis.set_title(title)
        axis.set_xlabel("round")
        if plot.y_range is not None:
            axis.set_ylim(*plot.y_range)
        axis.grid(alpha=0.3)
    if plot.y_label:
        axes[0][0].set_ylabel(plot.y_label)
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_task_figures(run_dir: Path, history: list[dict[str, Any]], task: Task) -> dict[str, str]:
    """The task's per-round figures, by their names in summary.json's outputs."""
    return {plot.output: str(plot_per_round(run_dir, history, plot)) for plot in task.plots}


def write_summary(
    run_dir: Path,
    config: FederationConfig,
    task: Task,
    history: list[dict[str, Any]],
    outputs: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> Path:
    final = history[-1]["evaluate"] if history else {"global": {}, "sites": {}}

    def headline(metrics: dict[str, float]) -> dict[str, Any]:
        return {
            **{key: metrics.get(wire_name(metric)) for key, metric in task.headline.items()},
            "cases_evaluated": int(metrics.get(Metric.NUM_EXAMPLES, 0)),
        }

    summary = {
        "task": config.task,
        "strategy": config.strategy,
        "rounds": len(history),
        "sites": sorted({s for e in history for s in e["evaluate"]["sites"]}),
        "run_config": config.to_run_config(),
        "final": {
            "overall": headline(final["global"]),
            "per_site": {site: headline(m) for site, m in final["sites"].items()},
        },
        "rounds_detail": history,
        "outputs": outputs,
        **(extra or {}),
    }
    path = Path(run_dir) / "summary.json"
    path.write_text(json.dumps(_clean(summary), indent=2))
    return path
