"""The Flower ClientApp: message in → task call → message out.

Only the weights, the number of examples and aggregate scalars (sums and counts
over the site's cases) leave the site; per-case records stay in the site folder.
"""

from __future__ import annotations

import math
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.site import resolve_site
from tasks import get_task
from tasks.base import Evaluation, TrainSettings, pick_device


def settings_from(config: ConfigRecord) -> TrainSettings:
    return TrainSettings(
        local_epochs=int(config["local-epochs"]),
        batch_size=int(config["batch-size"]),
        learning_rate=float(config["learning-rate"]),
        proximal_mu=float(config["proximal-mu"]),
        max_steps=int(config["max-local-steps"]),
        seed=int(config["seed"]),
    )


def evaluation_metrics(evaluation: Evaluation, metric_names: tuple[str, ...]) -> dict[str, float]:
    """Sums and counts of each per-case metric (the consortium mean stays exact).

    Every name is sent, with count 0 where no case defines it, so that all sites'
    replies carry the same keys. The loss travels the same way, weighted by cases.
    """
    metrics: dict[str, float] = {"num-examples": float(evaluation.num_examples)}
    for name in metric_names:
        values = [r.metrics[name] for r in evaluation.records if math.isfinite(r.metrics.get(name, math.nan))]
        key = name.replace("_", "-")
        metrics[f"{key}-sum"] = float(sum(values))
        metrics[f"{key}-count"] = float(len(values))
    loss = float(evaluation.summary.get("loss", math.nan))
    has_loss = math.isfinite(loss) and evaluation.num_examples > 0
    metrics["loss-sum"] = loss * evaluation.num_examples if has_loss else 0.0
    metrics["loss-count"] = float(evaluation.num_examples) if has_loss else 0.0
    return metrics


def make_client_app(simulated_site_dirs: list[Path] | None = None) -> ClientApp:
    app = ClientApp()

    def prepare(msg: Message, context: Context):
        config = msg.content["config"]
        site = resolve_site(dict(context.node_config), simulated_site_dirs)
        task = get_task(str(config["task"]))
        model = task.build_model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        return site, task, model, pick_device(str(config["device"]))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        site, task, model, device = prepare(msg, context)
        outcome = task.train(model, site.store, settings_from(msg.content["config"]), device)
        metrics = MetricRecord(
            {
                "num-examples": outcome.num_examples,
                "train-loss": outcome.mean_loss,
                "train-seconds": outcome.seconds,
                "train-examples-per-second": outcome.examples_per_second,
            }
        )
        reply = RecordDict(
            {
                "arrays": ArrayRecord(model.to("cpu").state_dict()),
                "metrics": metrics,
                "site": ConfigRecord({"site-id": site.site_id}),
            }
        )
        return Message(content=reply, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        site, task, model, device = prepare(msg, context)
        evaluation = task.evaluate(model, site.store, device, site.site_id)
        reply = RecordDict(
            {
                "metrics": MetricRecord(evaluation_metrics(evaluation, task.metric_names)),
                "site": ConfigRecord({"site-id": site.site_id}),
            }
        )
        return Message(content=reply, reply_to=msg)

    return app


app = make_client_app()
