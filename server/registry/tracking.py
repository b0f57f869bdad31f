"""Log a finished federated run to MLflow the way a data scientist reads one.

Parameters are the run config; metrics are logged per round with ``step=round``,
under ``consortium/…`` (the aggregate over sites), ``<site>/…`` (each site's own
validation cases) and ``privacy/…`` (ε spent so far), so the MLflow UI draws one
chart section per group. Summary, metrics table, fairness audit and plots are artifacts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from cmrfl.protocol import Metric as ProtocolMetric
from cmrfl.protocol import wire_name
from server.registry.card import read_summary
from server.registry.signing import WEIGHTS_FILE
from tasks import get_task

EXPERIMENT = "cmrfl-federated-training"
# Always logged beside the task's own outputs (summary.json "outputs": figures, reports)
ARTIFACTS = ("summary.json", "metrics.csv")
# Flower's metric names → names in MLflow (underscores, as in summary.json and metrics.csv);
# the task's headline metrics are added by their summary.json names (evaluate_metrics).
COMMON_EVALUATE_METRICS = {
    ProtocolMetric.LOSS.value: "validation_loss",
    ProtocolMetric.NUM_EXAMPLES.value: "validation_cases",
}
TRAIN_METRICS = {ProtocolMetric.TRAIN_LOSS.value: "train_loss", ProtocolMetric.NUM_EXAMPLES.value: "training_slices"}
MAX_BATCH = 1000  # MLflow's log_batch limit on metrics


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def evaluate_metrics(task_name: str) -> dict[str, str]:
    """History metric → MLflow name: the task's headline figures, the loss and the case count."""
    headline = get_task(task_name).headline
    return {wire_name(metric): key for key, metric in headline.items()} | COMMON_EVALUATE_METRICS


def round_metrics(summary: dict[str, Any], timestamp_ms: int) -> list[Metric]:
    metrics: list[Metric] = []
    evaluated = evaluate_metrics(summary["task"])

    def add(key: str, value: Any, step: int) -> None:
        if _finite(value):
            metrics.append(Metric(key, float(value), timestamp_ms, step))

    for entry in summary["rounds_detail"]:
        step = int(entry["round"])
        evaluate, train = entry.get("evaluate", {}), entry.get("train", {})
        for source, name in evaluated.items():
            add(f"consortium/{name}", evaluate.get("global", {}).get(source), step)
            for site, values in evaluate.get("sites", {}).items():
                add(f"{site}/{name}", values.get(source), step)
        for source, name in TRAIN_METRICS.items():
            add(f"consortium/{name}", train.get("global", {}).get(source), step)
        for site, values in train.get("sites", {}).items():
            for source, name in TRAIN_METRICS.items():
                add(f"{site}/{name}", values.get(source), step)
            if values.get(ProtocolMetric.DP_SGD):
                add(f"privacy/{site}_dp_sgd_epsilon", values.get(ProtocolMetric.DP_EPSILON), step)
        add("privacy/client_level_epsilon", entry.get("client_dp", {}).get("epsilon"), step)
        add("round_seconds", entry.get("seconds"), step)
        add("failed_sites", len(entry.get("failures", [])), step)
    return metrics


def run_params(summary: dict[str, Any]) -> list[Param]:
    params = {f"run_config.{key}": value for key, value in summary.get("run_config", {}).items()}
    params |= {"task": summary["task"], "strategy": summary["strategy"], "sites": ",".join(summary["sites"])}
    return [Param(key, str(value)[:6000]) for key, value in sorted(params.items())]


def run_description(summary: dict[str, Any]) -> str:
    overall = summary["final"].get("overall", {})

    def fmt(value: Any) -> str:
        return f"{value:.3f}" if _finite(value) else "–"

    return (
        f"Federated {summary['task']} training: {summary['rounds']} rounds of {summary['strategy']} over "
        f"{len(summary['sites'])} sites ({', '.join(summary['sites'])}). Final model on the sites' validation "
        f"cases: Dice myocardium {fmt(overall.get('dice_myocardium'))}, Dice scar {fmt(overall.get('dice_scar'))}, "
        f"scar burden error {fmt(overall.get('scar_burden_abs_error_percent'))} % points. Charts: consortium/… is "
        "the aggregate, <site>/… each site's own validation cases, privacy/… the ε spent so far, all by round."
    )


def log_run_dir(
    client: MlflowClient, run_dir: Path, experiment_name: str = EXPERIMENT, run_name: str | None = None
) -> str:
    """Log ``run_dir`` as one MLflow run; returns its run id."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    # MLflow 3's UI opens unknown experiments in its GenAI view; this one is model training.
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
    tags = {
        "mlflow.runName": run_name
        or (
            f"{summary['task']} {summary['strategy']}, {summary['rounds']} rounds "
            f"({run_dir.resolve().parent.name}/{run_dir.resolve().name})"
        ),
        "mlflow.note.content": run_description(summary),
        "cmrfl.task": summary["task"],
        "cmrfl.run_dir": str(run_dir.resolve()),
    }
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    try:
        params = run_params(summary)
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        metrics = round_metrics(summary, run.info.start_time)
        for start in range(0, len(metrics), MAX_BATCH):
            client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH])
        client.log_batch(run_id, tags=[RunTag("cmrfl.privacy", json.dumps(summary.get("privacy", {}))[:5000])])
        outputs = [Path(path).name for path in summary.get("outputs", {}).values()]
        for name in dict.fromkeys((*ARTIFACTS, *outputs)):
            if (run_dir / name).is_file() and name != WEIGHTS_FILE:  # the weights go to the registry, signed
                client.log_artifact(run_id, str(run_dir / name))
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
