"""The Flower ClientApp: message in → task call → message out.

Only the weights, the number of examples and aggregate scalars (sums and counts
over the site's cases) leave the site; per-case records stay in the site folder.
With DP-SGD (run config ``dp-sgd``) the site plans the round, checks it against its
own privacy budget (site.toml ``[privacy]``) and either declines with a Flower Error
reply that says why, or trains and records the spend in its ledger (privacy/).

Under a SuperNode every message starts a fresh ClientApp process, and most messages
of a SecAgg+ round are key exchanges that need neither torch nor the task. So this
module imports torch, MONAI and Opacus (through tasks/ and privacy.dp_sgd) only in
the functions that train or evaluate: a key-exchange process starts in under a
second instead of four.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.egress import egress_log_mod
from client.mods import SITE_MODS
from client.site import resolve_site
from fairness.records import write_case_records
from fairness.site import fairness_statistics_to_send
from fairness.suppression import SUPPRESSION_THRESHOLD_KEY
from fairness.wire import MESSAGE_RECORD
from privacy.budget import BUDGET_DECLINED_ERROR_CODE, SitePrivacy, privacy_metrics

if TYPE_CHECKING:
    from privacy.dp_sgd import DpSgdRequest
    from tasks.base import Evaluation, TrainSettings

FAIRNESS_RECORD = MESSAGE_RECORD  # the evaluate reply's suppressed subgroup statistics


def settings_from(config: ConfigRecord) -> TrainSettings:
    from tasks.base import TrainSettings
    from tasks.sampling import DEFAULT_BALANCE_ATTRIBUTE, NO_MITIGATION

    return TrainSettings(
        local_epochs=int(config["local-epochs"]),
        batch_size=int(config["batch-size"]),
        learning_rate=float(config["learning-rate"]),
        proximal_mu=float(config["proximal-mu"]),
        max_steps=int(config["max-local-steps"]),
        seed=int(config["seed"]),
        fairness_mitigation=str(config.get("fairness-mitigation", NO_MITIGATION)),
        balance_attribute=str(config.get("fairness-balance-attribute", DEFAULT_BALANCE_ATTRIBUTE)),
    )


def dp_sgd_request_from(config: ConfigRecord) -> DpSgdRequest | None:
    """The run's DP-SGD settings (server.config's dp-sgd-* keys); None when DP-SGD is off."""
    if not bool(config.get("dp-sgd", False)):
        return None
    from privacy.dp_sgd import DpSgdRequest

    return DpSgdRequest(
        max_grad_norm=float(config["dp-sgd-max-grad-norm"]),
        delta=float(config["dp-sgd-delta"]),
        noise_multiplier=float(config["dp-sgd-noise-multiplier"]),
        target_epsilon=float(config["dp-sgd-target-epsilon"]),
        planned_rounds=int(config["dp-sgd-planned-rounds"]),
        accountant=str(config["dp-sgd-accountant"]),
        grad_sample_mode=str(config["dp-sgd-grad-sample-mode"]),
    )


def evaluation_metrics(evaluation: Evaluation, metric_names: tuple[str, ...]) -> dict[str, float]:
    """Sums and counts of each per-case metric (the consortium mean stays exact).

    Every name is sent, with count 0 where no case defines it, so that all sites'
    replies carry the same keys. The loss travels the same way, weighted by cases.
    A sum over a single case would be that case's value: it is withheld (count 0)
    like an undefined one. These site-wide figures carry no subgroup attribute; the
    subgroup statistics have their own, larger threshold (fairness/suppression.py).
    """
    from tasks.base import MIN_CASES_IN_A_SUM

    metrics: dict[str, float] = {"num-examples": float(evaluation.num_examples)}
    for name in metric_names:
        values = [r.metrics[name] for r in evaluation.records if math.isfinite(r.metrics.get(name, math.nan))]
        if len(values) < MIN_CASES_IN_A_SUM:
            values = []
        key = name.replace("_", "-")
        metrics[f"{key}-sum"] = float(sum(values))
        metrics[f"{key}-count"] = float(len(values))
    loss = float(evaluation.summary.get("loss", math.nan))
    has_loss = math.isfinite(loss) and evaluation.num_examples >= MIN_CASES_IN_A_SUM
    metrics["loss-sum"] = loss * evaluation.num_examples if has_loss else 0.0
    metrics["loss-count"] = float(evaluation.num_examples) if has_loss else 0.0
    return metrics


def make_client_app(simulated_site_dirs: list[Path] | None = None) -> ClientApp:
    def site_dir_of(context: Context) -> Path:
        return resolve_site(context.node_config, simulated_site_dirs).site_dir

    # Outermost: the egress log sees each reply as it leaves; then SecAgg+, client-level
    # DP clipping and the update guard (client/mods.py).
    app = ClientApp(mods=[egress_log_mod(site_dir_of), *SITE_MODS])

    def prepare(msg: Message, context: Context):
        from tasks import get_task
        from tasks.base import pick_device

        config = msg.content["config"]
        site = resolve_site(dict(context.node_config), simulated_site_dirs)
        task = get_task(str(config["task"]))
        model = task.build_model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        return site, task, model, pick_device(str(config["device"]))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        site, task, model, device = prepare(msg, context)
        config = msg.content["config"]
        settings, request = settings_from(config), dp_sgd_request_from(config)
        run_id, server_round = str(msg.metadata.run_id), int(config["server-round"])
        site_privacy = SitePrivacy(site.site_dir, site.site_id, site.privacy_budget)
        if request is None:
            declined = site_privacy.decline_without_dp(run_id, server_round)
        else:
            from privacy.dp_sgd import plan_round

            plan = plan_round(
                request, task.training_patients(site.store), settings.batch_size,
                settings.local_epochs, settings.max_steps,
            )
            declined = site_privacy.decline_over_budget(plan, run_id, server_round)
            settings = replace(settings, privacy=plan)
        if declined is not None:
            return Message(Error(BUDGET_DECLINED_ERROR_CODE, declined), reply_to=msg)
        outcome = task.train(model, site.store, settings, device)
        spend = None if request is None else site_privacy.record_round(plan, outcome.steps, run_id, server_round)
        metrics = MetricRecord(
            {
                "num-examples": outcome.num_examples,
                "train-loss": outcome.mean_loss,
                "train-seconds": outcome.seconds,
                "train-examples-per-second": outcome.examples_per_second,
                **privacy_metrics(spend),
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
        config = msg.content["config"]
        evaluation = task.evaluate(model, site.store, device, site.site_id)
        # Per-case records stay here, for the site's own governance; only suppressed
        # subgroup statistics leave (fairness/site.py).
        write_case_records(site.site_dir, int(config["server-round"]), evaluation.records)
        threshold = max(site.suppression_threshold, int(config.get(SUPPRESSION_THRESHOLD_KEY, 1)))
        fairness = fairness_statistics_to_send(
            evaluation.records, {SUPPRESSION_THRESHOLD_KEY: threshold}, task.name, site.site_id
        )
        reply = RecordDict(
            {
                "metrics": MetricRecord(evaluation_metrics(evaluation, task.metric_names)),
                "site": ConfigRecord({"site-id": site.site_id}),
                # A ConfigRecord, not a second MetricRecord: Flower's strategies aggregate
                # exactly one MetricRecord per reply, and these sums are the audit's alone.
                FAIRNESS_RECORD: ConfigRecord(fairness),
            }
        )
        return Message(content=reply, reply_to=msg)

    return app


app = make_client_app()
