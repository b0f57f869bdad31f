"""The federation's round loop: train, aggregate, evaluate, record, checkpoint.

Flower's ``Strategy.start`` runs rounds 1..N from scratch; resuming after an
interruption needs rounds k+1..N from a checkpoint, and the audit needs each
site's reply, not only the aggregate. So the loop is ours and everything inside
a round (sampling, messages, aggregation) is the strategy's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from server.checkpoint import CheckpointStore, config_fingerprint
from server.config import FederationConfig
from server.site_metrics import means_from_sums
from server.strategies import build_strategy
from tasks import get_task

log = logging.getLogger("cmrfl.server")

SITE_RECORD = "site"  # ConfigRecord key under which a site names itself in replies
METRICS_RECORD = "metrics"
ARRAYS_RECORD = "arrays"

# Called after every completed round with the whole history so far (last = newest).
RoundCallback = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class FederationResult:
    arrays: ArrayRecord
    history: list[dict[str, Any]]
    resumed_from_round: int  # 0 when the run started fresh


def train_config_for(config: FederationConfig, server_round: int) -> ConfigRecord:
    return ConfigRecord(
        {
            "task": config.task,
            "server-round": server_round,
            "local-epochs": config.local_epochs,
            "batch-size": config.batch_size,
            "learning-rate": config.learning_rate,
            "proximal-mu": config.proximal_mu,
            "max-local-steps": config.max_local_steps,
            "seed": config.seed + server_round,
            "device": config.device,
        }
    )


def evaluate_config_for(config: FederationConfig, server_round: int) -> ConfigRecord:
    return ConfigRecord(
        {"task": config.task, "server-round": server_round, "device": config.device}
    )


def initial_arrays(config: FederationConfig) -> ArrayRecord:
    torch.manual_seed(config.seed)
    return ArrayRecord(get_task(config.task).build_model().state_dict())


def run_federation(
    grid: Grid,
    config: FederationConfig,
    on_round_end: RoundCallback | None = None,
) -> FederationResult:
    run_dir = Path(config.run_dir)
    checkpoints = CheckpointStore(
        run_dir,
        config_fingerprint(
            {"task": config.task, "strategy": config.strategy, "seed": config.seed}
        ),
    )
    arrays, history, first_round = initial_arrays(config), [], 1
    resumed_from = 0
    if config.resume and (checkpoint := checkpoints.latest()) is not None:
        arrays, history = checkpoint.arrays, checkpoint.history
        first_round = resumed_from = checkpoint.server_round
        first_round += 1
        log.info("resuming after round %d from %s", resumed_from, checkpoints.directory)
    elif not config.resume:
        checkpoints.clear()

    strategy = build_strategy(config)
    for server_round in range(first_round, config.num_server_rounds + 1):
        started = time.monotonic()
        train_replies = list(
            grid.send_and_receive(
                strategy.configure_train(
                    server_round, arrays, train_config_for(config, server_round), grid
                ),
                timeout=config.round_timeout_s,
            )
        )
        aggregated, train_metrics = strategy.aggregate_train(server_round, train_replies)
        if aggregated is None:
            raise RuntimeError(
                f"round {server_round}: no site returned a usable update "
                f"({describe_failures(train_replies) or 'no replies'})"
            )
        arrays = aggregated
        evaluate_replies = list(
            grid.send_and_receive(
                strategy.configure_evaluate(
                    server_round, arrays, evaluate_config_for(config, server_round), grid
                ),
                timeout=config.round_timeout_s,
            )
        )
        evaluate_metrics = strategy.aggregate_evaluate(server_round, evaluate_replies)
        entry = {
            "round": server_round,
            "seconds": round(time.monotonic() - started, 3),
            "train": {
                "global": means_from_sums(dict(train_metrics or {})),
                "sites": site_metrics(train_replies),
            },
            "evaluate": {
                "global": means_from_sums(dict(evaluate_metrics or {})),
                "sites": site_metrics(evaluate_replies),
            },
            "failures": describe_failures(train_replies + evaluate_replies),
        }
        history.append(entry)
        checkpoints.save(server_round, arrays, history)
        if on_round_end is not None:
            on_round_end(history)
    return FederationResult(arrays=arrays, history=history, resumed_from_round=resumed_from)


def site_metrics(replies: Iterable[Message]) -> dict[str, dict[str, float]]:
    """Per-site metrics from the replies that carry them, keyed by the site's name."""
    per_site: dict[str, dict[str, float]] = {}
    for reply in replies:
        if reply.has_error():
            continue
        content = reply.content
        site_id = str(content[SITE_RECORD]["site-id"]) if SITE_RECORD in content else (
            f"node-{reply.metadata.src_node_id}"
        )
        per_site[site_id] = means_from_sums(dict(content[METRICS_RECORD]))
    return dict(sorted(per_site.items()))


def describe_failures(replies: Iterable[Message]) -> list[dict[str, Any]]:
    return [
        {"node_id": reply.metadata.src_node_id, "reason": reply.error.reason}
        for reply in replies
        if reply.has_error()
    ]
