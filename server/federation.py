"""The federation's round loop: train, aggregate, evaluate, record, checkpoint.

Flower's ``Strategy.start`` runs rounds 1..N from scratch; resuming after an
interruption needs rounds k+1..N from a checkpoint, and the audit needs each
site's reply, not only the aggregate. So the loop is ours and everything inside
a round (sampling, messages, aggregation) is the strategy's.

Privacy in a round (docs/secure-aggregation.md): with ``secure-aggregation`` on, the
training exchange runs under Flower's SecAgg+ (server/secure_aggregation.py) and the
sites' own mods guard, clip and mask their updates (client/mods.py); otherwise the
server guards each update itself (``screen_updates``). With ``client-dp`` on, the
strategy is wrapped in Flower's DP wrapper and each round's client-level ε, from
Flower's RDP accountant, is recorded in the round's history entry.

One site's reply can neither poison nor stop a run: every reply is screened before
aggregation (server/reply_screening.py: its form, and the site its node may speak for),
a refused one is recorded as that node's failure and the round goes on without it; an
aggregate with non-finite values is never adopted nor checkpointed (the round is
recorded as failed and the previous global model kept).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from cmrfl.protocol import EvaluateInstruction, EvaluateReply, Metric, Record, TrainInstruction, site_id_of
from fairness.run_store import clear_round_statistics, save_round_statistics
from privacy.guards import check_update, model_update
from privacy.settings import site_instructions
from server.checkpoint import CheckpointStore, config_fingerprint
from server.config import FederationConfig
from server.failures import describe, failed_replies, failure
from server.reply_screening import ReplyScreen, SecureStageScreen
from server.reply_validation import aggregate_problem, evaluate_reply_form, train_reply_form
from server.secure_aggregation import run_secure_training
from server.site_identity import SiteIdentities
from server.site_metrics import means_from_sums
from server.strategies import ComposedStrategy, compose_strategy
from tasks import get_task

log = logging.getLogger("cmrfl.server")


# Called after every completed round with the whole history so far (last = newest).
RoundCallback = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class FederationResult:
    arrays: ArrayRecord
    history: list[dict[str, Any]]
    resumed_from_round: int  # 0 when the run started fresh
    privacy: dict[str, Any] = field(default_factory=dict)  # SecAgg+, guards, client-level DP


def train_config_for(config: FederationConfig, server_round: int) -> ConfigRecord:
    return TrainInstruction(
        task=config.task,
        server_round=server_round,
        device=config.device,
        training=config.training_settings(server_round),
        dp_sgd=config.dp_sgd_request(),
    ).to_record()


def evaluate_config_for(config: FederationConfig, server_round: int) -> ConfigRecord:
    return EvaluateInstruction(
        task=config.task,
        server_round=server_round,
        device=config.device,
        suppression_threshold=config.fairness_suppression_threshold,
    ).to_record()


def initial_arrays(config: FederationConfig) -> ArrayRecord:
    torch.manual_seed(config.seed)
    return ArrayRecord(get_task(config.task).build_model().state_dict())


def wait_for_sites(grid: Grid, min_available: int, poll_s: float = 1.0) -> None:
    """Block until at least ``min_available`` SuperNodes are connected (as Flower's sampling does)."""
    while (connected := len(list(grid.get_node_ids()))) < min_available:
        log.info("waiting for sites to connect: %d connected, %d required", connected, min_available)
        time.sleep(poll_s)


def run_federation(
    grid: Grid,
    config: FederationConfig,
    on_round_end: RoundCallback | None = None,
    initial: ArrayRecord | None = None,
) -> FederationResult:
    """Rounds ``resume+1 .. num_server_rounds``; ``initial`` replaces the task's fresh model."""
    run_dir = Path(config.run_dir)
    composed = compose_strategy(config)
    privacy = composed.privacy
    checkpoints = CheckpointStore(run_dir, config_fingerprint(fingerprint_settings(config, composed)))
    arrays = initial if initial is not None else initial_arrays(config)
    reference = arrays  # the task's model: names, shapes and dtypes that sites' weights must have
    history: list[dict[str, Any]] = []
    first_round = 1
    resumed_from = 0
    if config.resume and (checkpoint := checkpoints.latest()) is not None:
        arrays, history = checkpoint.arrays, checkpoint.history
        first_round = resumed_from = checkpoint.server_round
        first_round += 1
        log.info("resuming after round %d from %s", resumed_from, checkpoints.directory)
    elif not config.resume:
        checkpoints.clear()
        clear_round_statistics(run_dir)
    if composed.client_dp is not None:
        composed.client_dp.restore(history)  # the accountant's state is the history

    strategy = composed.strategy
    task = get_task(config.task)
    audited = task.audit_spec is not None  # a task that declares a fairness audit
    identities = SiteIdentities()  # node id → site: names a site's records, and one that drops out later
    adaptive_clipping = composed.client_dp is not None and composed.client_dp.settings.mode == "adaptive"
    evaluate_screen = ReplyScreen(identities, evaluate_reply_form(task.metric_names), "evaluate")
    for server_round in range(first_round, config.num_server_rounds + 1):
        started = time.monotonic()
        identities.learn_registrations(grid.get_nodes())
        train_screen = ReplyScreen(
            identities, train_reply_form(reference, arrays, adaptive_clipping=adaptive_clipping), "train"
        )
        train_config = train_config_for(config, server_round)
        for key, value in site_instructions(privacy).items():
            train_config[key] = value
        # Flower's strategies size the sample from the sites connected *before* they wait for
        # min-available-sites, so a round started while a site is still connecting leaves it out.
        wait_for_sites(grid, config.min_available_sites)
        instructions = list(strategy.configure_train(server_round, arrays, train_config, grid))
        clipping_norm = composed.client_dp.clipping_norm if composed.client_dp else None
        if privacy.secure_aggregation.enabled:
            secure = run_secure_training(
                cast(Grid, SecureStageScreen(grid, train_screen, server_round, model_shapes(arrays))),
                server_round,
                instructions,
                arrays,
                privacy.secure_aggregation,
                uniform_site_weights=privacy.uniform_site_weights,
                timeout=config.round_timeout_s,
            )
            accepted, train_failures = secure.replies, secure.failures
        else:
            replies = list(grid.send_and_receive(instructions, timeout=config.round_timeout_s))
            screened, train_failures = train_screen.screen(server_round, replies, sent=instructions)
            accepted, refused_updates = screen_updates(server_round, screened, arrays, privacy.max_update_norm)
            train_failures += refused_updates
        aggregated, train_metrics = strategy.aggregate_train(server_round, weighted_for(composed, accepted))
        if aggregated is None:
            raise RuntimeError(
                f"round {server_round}: no usable aggregate from {len(accepted)} of "
                f"{len(instructions)} sampled sites"
                f"{_why_no_aggregate(composed, accepted, with_site_names(train_failures, identities.known()))}"
            )
        if (aggregation_failure := aggregate_problem(aggregated, arrays)) is None:
            arrays = aggregated
        else:  # the strategy's output, not a site's reply: keep the model of the round before
            log.error("round %d failed: %s; the previous global model is kept", server_round, aggregation_failure)
        evaluate_instructions = list(
            strategy.configure_evaluate(server_round, arrays, evaluate_config_for(config, server_round), grid)
        )
        evaluate_replies = list(grid.send_and_receive(evaluate_instructions, timeout=config.round_timeout_s))
        evaluated, evaluate_failures = evaluate_screen.screen(server_round, evaluate_replies, evaluate_instructions)
        evaluate_metrics = strategy.aggregate_evaluate(server_round, weighted_for(composed, evaluated))
        entry: dict[str, Any] = {
            "round": server_round,
            "seconds": round(time.monotonic() - started, 3),
            "train": {
                "global": means_from_sums(dict(train_metrics or {})),
                "sites": site_metrics(accepted, identities),
            },
            "evaluate": {
                "global": means_from_sums(dict(evaluate_metrics or {})),
                "sites": site_metrics(evaluated, identities),
            },
            "failures": with_site_names(train_failures + evaluate_failures, identities.known()),
        }
        if aggregation_failure is not None:
            entry["aggregation_failure"] = f"{aggregation_failure}; the previous global model was kept"
        if privacy.secure_aggregation.enabled:
            entry["secure_aggregation"] = {"sites": len(accepted), "sampled": len(instructions)}
        if composed.client_dp is not None and clipping_norm is not None:
            client_dp = entry["client_dp"] = composed.client_dp.account_round(clipping_norm)
            log.info(
                "round %d: client-level ε = %.4g at δ = %g after %d releases",
                server_round,
                client_dp["epsilon"],
                client_dp["delta"],
                client_dp["releases"],
            )
        if audited:
            save_fairness_statistics(run_dir, server_round, config, evaluated, identities, evaluate_failures)
        history.append(entry)
        checkpoints.save(server_round, arrays, history)
        if on_round_end is not None:
            on_round_end(history)
    return FederationResult(
        arrays=arrays,
        history=history,
        resumed_from_round=resumed_from,
        privacy={**privacy_summary(composed), "dp_sgd": dp_sgd_summary(config, history)},
    )


def save_fairness_statistics(
    run_dir: Path,
    server_round: int,
    config: FederationConfig,
    replies: list[Message],
    identities: SiteIdentities,
    failures: list[dict[str, Any]],
) -> Path:
    """Each site's suppressed subgroup statistics, as received, into RUN_DIR/fairness/.

    ``replies``: the screened evaluate replies, filed under their node's site;
    ``failures``: the round's evaluate failures, noted under the node's site where known.
    """
    received, notes = {}, {}
    for entry in failures:
        notes[entry.get("site", f"node-{entry['node_id']}")] = f"evaluation failed: {entry['reason']}"
    for reply in replies:
        site = _site_of(reply, identities)
        if (document := EvaluateReply.fairness_document_of(reply.content)) is not None:
            received[site] = document
        else:
            notes[site] = "sent no fairness statistics"
    return save_round_statistics(
        run_dir, server_round, received, notes, task=config.task, run_config=config.to_run_config()
    )


def fingerprint_settings(config: FederationConfig, composed: ComposedStrategy) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption."""
    settings: dict[str, Any] = {"task": config.task, "strategy": config.strategy, "seed": config.seed}
    if config.fairness_mitigation != "none":  # a run is trained with one sampling throughout
        settings["fairness-mitigation"] = [config.fairness_mitigation, config.fairness_balance_attribute]
    if composed.client_dp is not None:  # the accountant resumes from the recorded releases
        dp = composed.client_dp.settings
        settings["client-dp"] = [dp.mode, dp.noise_multiplier, dp.delta, dp.population, dp.clients_per_round]
    return settings


def screen_updates(
    server_round: int,
    replies: list[Message],
    arrays: ArrayRecord,
    max_update_norm: float,
    sent: Iterable[Message] = (),
) -> tuple[list[Message], list[dict[str, Any]]]:
    """Plain aggregation: the server's update guard. Returns (accepted, failures)."""
    received = {name: array.numpy() for name, array in arrays.items()}
    accepted, failures = [], []
    for reply in replies:
        if reply.has_error():
            failures.extend(failed_replies([reply], phase="train", sent=sent))
            continue
        site_id = site_id_of(reply.content) or f"node-{reply.metadata.src_node_id}"  # screened: its node's site
        try:
            (trained,) = reply.content.array_records.values()
            verdict = check_update(model_update({k: v.numpy() for k, v in trained.items()}, received), max_update_norm)
            reason = verdict.reason
        except ValueError as problem:  # not exactly one ArrayRecord, or not this model's arrays
            reason = f"malformed update: {problem}"
        if reason:
            log.warning("round %d: update of %s rejected: %s", server_round, site_id, reason)
            failures.append(failure(reply.metadata.src_node_id, "train", reason, site=site_id))
        else:
            accepted.append(reply)
    return accepted, failures


def weighted_for(composed: ComposedStrategy, replies: list[Message]) -> list[Message]:
    """Under client-level DP every site weighs the same: stamp that weight on the replies.

    Copies: the replies as received (and the per-site metrics taken from them) stay as
    the sites sent them.
    """
    if not composed.privacy.uniform_site_weights:
        return replies
    stamped = []
    for reply in replies:
        if reply.has_error():
            stamped.append(reply)
            continue
        content = RecordDict(dict(reply.content.items()))
        for key, record in reply.content.metric_records.items():
            content[key] = MetricRecord({**dict(record), Metric.SITE_WEIGHT.value: 1.0})
        weighted = copy.copy(reply)
        weighted.content = content
        stamped.append(weighted)
    return stamped


def privacy_summary(composed: ComposedStrategy) -> dict[str, Any]:
    """The run's privacy settings and spend, for summary.json and the model card."""
    secagg = composed.privacy.secure_aggregation
    return {
        "secure_aggregation": {
            "enabled": secagg.enabled,
            "protocol": "SecAgg+ (Flower SecAggPlusWorkflow / secaggplus_mod)",
            "num_shares": secagg.num_shares,
            "reconstruction_threshold": secagg.reconstruction_threshold,
            "clipping_range": secagg.clipping_range,
            "quantization_range": secagg.quantization_range,
            "max_weight": secagg.max_weight,
        },
        "update_guard": {"max_update_norm": composed.privacy.max_update_norm, "non_finite": "rejected"},
        "client_dp": (composed.client_dp.summary() if composed.client_dp is not None else {"mode": "off"}),
    }


def dp_sgd_summary(config: FederationConfig, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per site, every DP-SGD round's q, σ, steps and δ, and the ε spent: enough to recompute it.

    Taken from what each site reported with its update; a round a site declined (over
    budget) appears under that round's ``failures`` in ``rounds_detail``.
    """
    if not config.dp_sgd:
        return {"enabled": False}
    sites: dict[str, dict[str, Any]] = {}
    for entry in history:
        for site, metrics in entry["train"]["sites"].items():
            if metrics.get(Metric.DP_SGD) != 1.0:
                continue
            record = sites.setdefault(site, {"rounds": []})
            record["rounds"].append(
                {
                    "round": entry["round"],
                    "steps": int(metrics[Metric.DP_STEPS]),
                    "sample_rate": metrics[Metric.DP_SAMPLE_RATE],
                    "noise_multiplier": metrics[Metric.DP_NOISE_MULTIPLIER],
                    "delta": metrics[Metric.DP_DELTA],
                    "epsilon_cumulative": metrics[Metric.DP_EPSILON],
                }
            )
            record["epsilon"], record["delta"] = metrics[Metric.DP_EPSILON], metrics[Metric.DP_DELTA]
    return {
        "enabled": True,
        "protected_unit": "patient (all of a patient's slices: one record for Poisson sampling)",
        "sampling": "Poisson",
        "accountant": config.dp_sgd_accountant,
        "max_grad_norm": config.dp_sgd_max_grad_norm,
        "target_epsilon": config.dp_sgd_target_epsilon,
        "noise_multiplier_requested": config.dp_sgd_noise_multiplier,
        "planned_rounds": config.num_server_rounds,
        "sites": dict(sorted(sites.items())),
    }


def _why_no_aggregate(composed: ComposedStrategy, accepted: list[Message], failures: list[dict[str, Any]]) -> str:
    reasons = []
    if composed.client_dp is not None and len(accepted) != composed.privacy.client_dp.clients_per_round:
        reasons.append(
            f"client-level DP calibrates its noise to all {composed.privacy.client_dp.clients_per_round} "
            "sampled sites and releases nothing with fewer"
        )
    reasons += describe(failures)
    return f" ({'; '.join(reasons)})" if reasons else " (no replies)"


def with_site_names(failures: list[dict[str, Any]], sites_by_node: dict[int, str]) -> list[dict[str, Any]]:
    """A node that died sends no name: take the site its node serves (server/site_identity.py)."""
    return [
        {**f, "site": sites_by_node[f["node_id"]]} if "site" not in f and f["node_id"] in sites_by_node else f
        for f in failures
    ]


def _site_of(reply: Message, identities: SiteIdentities) -> str:
    """The site a screened reply's node serves (the server's record, not the reply's word)."""
    return identities.site_of(reply.metadata.src_node_id) or f"node-{reply.metadata.src_node_id}"


def model_shapes(arrays: ArrayRecord) -> list[tuple[int, ...]]:
    return [tuple(array.shape) for array in arrays.values()]


def site_metrics(replies: Iterable[Message], identities: SiteIdentities) -> dict[str, dict[str, float]]:
    """Per-site metrics from screened replies, keyed by the site their node serves."""
    per_site: dict[str, dict[str, float]] = {}
    for reply in replies:
        if reply.has_error():
            continue
        per_site[_site_of(reply, identities)] = means_from_sums(dict(reply.content.metric_records[Record.METRICS]))
    return dict(sorted(per_site.items()))
