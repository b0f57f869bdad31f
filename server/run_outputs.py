"""What a finished (or interrupted) run leaves in its run directory.

``metrics.csv`` (one row per round and site, rewritten after every round),
``summary.json``, ``final_model.pt`` and ``dice_per_round.png``.
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

CSV_METRICS = (
    "dice_myocardium",
    "dice_scar",
    "scar_burden_abs_error",
    "loss",
)
CONSORTIUM = "consortium"


def _clean(value: Any) -> Any:
    """JSON has no NaN: an undefined metric is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_metrics_csv(run_dir: Path, history: list[dict[str, Any]]) -> Path:
    path = Path(run_dir) / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["round", "site", "train_loss", "cases_evaluated", *CSV_METRICS])
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
                        *(_csv_value(metrics.get(name.replace("_", "-"))) for name in CSV_METRICS),
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


def write_summary(
    run_dir: Path,
    config: FederationConfig,
    history: list[dict[str, Any]],
    outputs: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> Path:
    final = history[-1]["evaluate"] if history else {"global": {}, "sites": {}}

    def headline(metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "dice_myocardium": metrics.get("dice-myocardium"),
            "dice_scar": metrics.get("dice-scar"),
            "scar_burden_abs_error_percent": metrics.get("scar-burden-abs-error"),
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
