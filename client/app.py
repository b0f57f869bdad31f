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

from flwr.app import ArrayRecord, Context, Error, Message
from flwr.clientapp import ClientApp

from client.egress import egress_log_mod
from client.mods import SITE_MODS
from client.site import resolve_site
from cmrfl.protocol import (
    EvaluateInstruction,
    EvaluateReply,
    Metric,
    Record,
    TrainInstruction,
    TrainReply,
    count_key,
    sum_key,
)
from fairness.records import write_case_records
from fairness.site import fairness_statistics_to_send
from privacy.budget import BUDGET_DECLINED_ERROR_CODE, SitePrivacy, privacy_metrics

if TYPE_CHECKING:
    from tasks.base import Evaluation


def evaluation_metrics(evaluation: Evaluation, metric_names: tuple[str, ...]) -> dict[str, float]:
    """Sums and counts of each per-case metric (the consortium mean stays exact).

    Every name is sent, with count 0 where no case defines it, so that all sites'
    replies carry the same keys. The loss travels the same way, weighted by cases.
    A sum over a single case would be that case's value: it is withheld (count 0)
    like an undefined one. These site-wide figures carry no subgroup attribute; the
    subgroup statistics have their own, larger threshold (fairness/suppression.py).
    """
    from tasks.base import MIN_CASES_IN_A_SUM

    metrics: dict[str, float] = {Metric.NUM_EXAMPLES: float(evaluation.num_examples)}
    for name in metric_names:
        values = [r.metrics[name] for r in evaluation.records if math.isfinite(r.metrics.get(name, math.nan))]
        if len(values) < MIN_CASES_IN_A_SUM:
            values = []
        metrics[sum_key(name)] = float(sum(values))
        metrics[count_key(name)] = float(len(values))
    loss = float(evaluation.summary.get("loss", math.nan))
    has_loss = math.isfinite(loss) and evaluation.num_examples >= MIN_CASES_IN_A_SUM
    metrics[sum_key(Metric.LOSS)] = loss * evaluation.num_examples if has_loss else 0.0
    metrics[count_key(Metric.LOSS)] = float(evaluation.num_examples) if has_loss else 0.0
    return metrics


def make_client_app(simulated_site_dirs: list[Path] | None = None) -> ClientApp:
    def site_dir_of(context: Context) -> Path:
        return resolve_site(context.node_config, simulated_site_dirs).site_dir

    # Outermost: the egress log sees each reply as it leaves; then SecAgg+, client-level
    # DP clipping and the update guard (client/mods.py).
    app = ClientApp(mods=[egress_log_mod(site_dir_of), *SITE_MODS])

    def model_for(task_name: str, msg: Message):
        from tasks import get_task

        task = get_task(task_name)
        model = task.build_model()
        model.load_state_dict(msg.content.array_records[Record.ARRAYS].to_torch_state_dict())
        return task, model

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        from tasks.base import pick_device

        instruction = TrainInstruction.from_record(msg.content.config_records[Record.CONFIG])
        site = resolve_site(dict(context.node_config), simulated_site_dirs)
        task, model = model_for(instruction.task, msg)
        settings, request = instruction.training, instruction.dp_sgd
        run_id, server_round = str(msg.metadata.run_id), instruction.server_round
        site_privacy = SitePrivacy(site.site_dir, site.site_id, site.privacy_budget)
        plan = None
        if request is None:
            declined = site_privacy.decline_without_dp(run_id, server_round)
        else:
            from privacy.dp_sgd import plan_round

            plan = plan_round(
                request,
                task.training_patients(site.store),
                settings.batch_size,
                settings.local_epochs,
                settings.max_steps,
            )
            declined = site_privacy.decline_over_budget(plan, run_id, server_round)
            settings = replace(settings, privacy=plan)
        if declined is not None:
            return Message(Error(BUDGET_DECLINED_ERROR_CODE, declined), reply_to=msg)
        outcome = task.train(model, site.store, settings, pick_device(instruction.device))
        spend = None if plan is None else site_privacy.record_round(plan, outcome.steps, run_id, server_round)
        reply = TrainReply(
            site_id=site.site_id,
            num_examples=outcome.num_examples,
            train_loss=outcome.mean_loss,
            seconds=outcome.seconds,
            examples_per_second=outcome.examples_per_second,
            privacy=privacy_metrics(spend),
        )
        return Message(content=reply.to_record(ArrayRecord(model.to("cpu").state_dict())), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        from tasks.base import pick_device

        instruction = EvaluateInstruction.from_record(msg.content.config_records[Record.CONFIG])
        site = resolve_site(dict(context.node_config), simulated_site_dirs)
        task, model = model_for(instruction.task, msg)
        evaluation = task.evaluate(model, site.store, pick_device(instruction.device), site.site_id)
        # Per-case records stay here, for the site's own governance; only suppressed
        # subgroup statistics leave (fairness/site.py), for a task that declares an audit.
        write_case_records(site.site_dir, instruction.server_round, evaluation.records)
        document = None
        if task.audit_spec is not None:
            threshold = max(site.suppression_threshold, instruction.suppression_threshold)
            document = fairness_statistics_to_send(evaluation.records, task.audit_spec, threshold, site.site_id)
        reply = EvaluateReply(site.site_id, evaluation_metrics(evaluation, task.metric_names), document)
        return Message(content=reply.to_record(), reply_to=msg)

    return app


app = make_client_app()
