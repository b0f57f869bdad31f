"""What a finished (or interrupted) run leaves in its run directory.

``metrics.csv`` (one row per round and site, rewritten after every round),
``summary.json``, ``final_model.pt`` and ``dice_per_round.png`` (LGE) or
``metrics_per_round.png`` (a task that names its ``summary_metrics``).

Which metrics head the CSV and the summary is the task's to say: a task with a
``summary_metrics`` attribute gets those; the LGE task, which predates it, keeps the
Dice and scar-burden columns and summary keys that its readers (demo, model card,
registry) use.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord

from server.config import FederationConfig
from tasks import get_task

CSV_METRICS = (
    "dice_myocardium",
    "dice_scar",
    "scar_burden_abs_error",
    "loss",
)
# summary.json key → metric in the round history, for the LGE task
LGE_HEADLINE = {
    "dice_myocardium": "dice-myocardium",
    "dice_scar": "dice-scar",
    "scar_burden_abs_error_percent": "scar-burden-abs-error",
}
CONSORTIUM = "consortium"


def task_summary_metrics(task_name: str) -> tuple[str, ...] | None:
    """The metrics a task puts at the head of its outputs; None for the LGE task's own set."""
    names = getattr(get_task(task_name), "summary_metrics", None)
    return tuple(names) if names is not None else None


def csv_metrics_for(task_name: str) -> tuple[str, ...]:
    names = task_summary_metrics(task_name)
    return CSV_METRICS if names is None else tuple(dict.fromkeys((*names, "loss")))


def headline_metrics_for(task_name: str) -> dict[str, str]:
    names = task_summary_metrics(task_name)
    return dict(LGE_HEADLINE) if names is None else {name: name.replace("_", "-") for name in names}


def _clean(value: Any) -> Any:
    """JSON has no NaN: an undefined metric is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_metrics_csv(run_dir: Path, history: list[dict[str, Any]], metric_names: tuple[str, ...] = CSV_METRICS) -> Path:
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
                        _csv_value(train.get(site, {}).get("train-loss")),
                        int(metrics.get("num-examples", 0)),
                        *(_csv_value(metrics.get(name.replace("_", "-"))) for name in metric_names),
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


def plot_dice_per_round(run_dir: Path, history: list[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(run_dir) / "dice_per_round.png"
    rounds = [entry["round"] for entry in history]
    sites = sorted({site for entry in history for site in entry["evaluate"]["sites"]})
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for axis, metric, title in (
        (axes[0], "dice-myocardium", "Myocardium Dice"),
        (axes[1], "dice-scar", "Scar Dice"),
    ):
        for site in sites:
            values = [e["evaluate"]["sites"].get(site, {}).get(metric, math.nan) for e in history]
            axis.plot(rounds, values, marker="o", label=site)
        consortium = [e["evaluate"]["global"].get(metric, math.nan) for e in history]
        axis.plot(rounds, consortium, color="black", linewidth=2.5, label="all sites")
        axis.set_title(title + " on each site's validation cases")
        axis.set_xlabel("round")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("Dice (0–1, higher is better)")
    axes[1].legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_metrics_per_round(run_dir: Path, history: list[dict[str, Any]], metric_names: tuple[str, ...]) -> Path:
    """Each site's and the consortium's value of up to two metrics, round by round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(run_dir) / "metrics_per_round.png"
    names = metric_names[:2]
    rounds = [entry["round"] for entry in history]
    sites = sorted({site for entry in history for site in entry["evaluate"]["sites"]})
    figure, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), sharex=True, squeeze=False)
    for axis, name in zip(axes[0], names):
        metric = name.replace("_", "-")
        for site in sites:
            values = [e["evaluate"]["sites"].get(site, {}).get(metric, math.nan) for e in history]
            axis.plot(rounds, values, marker="o", label=site)
        consortium = [e["evaluate"]["global"].get(metric, math.nan) for e in history]
        axis.plot(rounds, consortium, color="black", linewidth=2.5, label="all sites")
        axis.set_title(name.replace("_", " ") + " (validation cases)")
        axis.set_xlabel("round")
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_summary(
    run_dir: Path,
    config: FederationConfig,
    history: list[dict[str, Any]],
    outputs: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> Path:
    final = history[-1]["evaluate"] if history else {"global": {}, "sites": {}}
    headline_keys = headline_metrics_for(config.task)

    def headline(metrics: dict[str, float]) -> dict[str, Any]:
        return {
            **{key: metrics.get(metric) for key, metric in headline_keys.items()},
            "cases_evaluated": int(metrics.get("num-examples", 0)),
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
