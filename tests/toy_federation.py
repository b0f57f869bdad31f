"""A toy federation: the real protocol, mods and round loop, with a trivial 'model'.

For measuring and testing what happens to updates (SecAgg+, client-level DP, guards)
without paying for training. Each toy site answers a training instruction with the
weights it received plus a pseudo-random update that is a function of its partition
and the round (so a test can recompute the true update the server must never see),
and an evaluation instruction with a constant loss. It runs behind the same mods as
a real site (client/mods.py), in Flower's simulation runtime.

Test behaviours travel in the train config (``ToyBehaviour``, added by ``ToyGrid``):
a site that sends NaN, one that sends an oversized update, one that drops out
after SecAgg+'s key sharing (its ClientApp fails when asked to train).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

import tasks
from client.mods import SITE_MODS
from cmrfl.protocol import TrainReply, record_float, record_int
from privacy.budget import privacy_metrics
from tasks.base import Task

TOY_ARRAYS = 4  # a toy model is this many arrays of (about) equal size
NO_SITE = -1
TOY_TASK = "toy"  # run config ``task`` of a toy run


class ToyTask(Task):
    """What the ServerApp asks of a toy run's task: the figures at the head of its outputs.

    Toy sites neither train nor segment (the toy ClientApp answers for them); their
    evaluation reports a loss only, so the run's metrics.csv, plot and summary headline
    carry that loss. The server never builds its model: toy runs start from ``toy_model``.
    """

    name: ClassVar[str] = TOY_TASK
    description: ClassVar[str] = "A toy model whose updates are random, for the protocol's tests"
    series_kinds: ClassVar[tuple[str, ...]] = ()
    metric_names: ClassVar[tuple[str, ...]] = ("loss",)

    def _answered_by_the_toy_client_app(self, *_: Any) -> Any:
        raise RuntimeError("toy sites are answered by the toy ClientApp; the task itself never runs")

    build_model = training_examples = patient_examples = loss = evaluate = _answered_by_the_toy_client_app  # type: ignore[assignment]


tasks.register(TOY_TASK, ToyTask)


@dataclass(frozen=True)
class ToyBehaviour:
    update_scale: float = 0.01  # standard deviation of each update coordinate
    nan_site: int = NO_SITE  # partition id that sends NaN
    oversized_site: int = NO_SITE  # partition id whose update is 1000x larger
    dropout_site: int = NO_SITE  # partition id that fails when asked to train

    def as_config(self) -> dict[str, float | int]:
        return {
            "toy-update-scale": self.update_scale,
            "toy-nan-site": self.nan_site,
            "toy-oversized-site": self.oversized_site,
            "toy-dropout-site": self.dropout_site,
        }


def toy_model(num_params: int, seed: int = 0) -> ArrayRecord:
    """``num_params`` float32 weights in ``TOY_ARRAYS`` arrays."""
    rng = np.random.default_rng(seed)
    sizes = [num_params // TOY_ARRAYS] * TOY_ARRAYS
    sizes[-1] += num_params - sum(sizes)
    return ArrayRecord(
        {f"layer{i}.weight": Array(rng.normal(0, 0.1, size).astype(np.float32)) for i, size in enumerate(sizes)}
    )


def toy_num_examples(partition_id: int) -> int:
    return 10 + 7 * partition_id


def toy_update(
    partition_id: int, server_round: int, shapes: dict[str, tuple[int, ...]], scale: float
) -> dict[str, np.ndarray]:
    """The update toy site ``partition_id`` makes in ``server_round`` (float32, like the weights)."""
    rng = np.random.default_rng([partition_id, server_round])
    return {name: (rng.normal(0, scale, shape)).astype(np.float32) for name, shape in shapes.items()}


def make_toy_client_app() -> ClientApp:
    app = ClientApp(mods=list(SITE_MODS))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        config = msg.content.config_records["config"]
        server_round = record_int(config["server-round"])
        if partition == record_int(config.get("toy-dropout-site", NO_SITE)):
            raise RuntimeError(f"toy site {partition} drops out of round {server_round}")
        received = {name: array.numpy() for name, array in msg.content.array_records["arrays"].items()}
        update = toy_update(
            partition,
            server_round,
            {name: a.shape for name, a in received.items()},
            record_float(config.get("toy-update-scale", 0.01)),
        )
        if partition == record_int(config.get("toy-nan-site", NO_SITE)):
            first = next(iter(update))
            update[first][: max(1, update[first].size // 10)] = np.nan
        if partition == record_int(config.get("toy-oversized-site", NO_SITE)):
            update = {name: u * 1000 for name, u in update.items()}
        trained = ArrayRecord({name: Array(received[name] + update[name]) for name in received})
        reply = TrainReply(
            f"toy-{partition:02d}", toy_num_examples(partition), 1.0 / server_round, 0.0, 0.0, privacy_metrics(None)
        )
        return Message(reply.to_record(trained), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        examples = toy_num_examples(partition)
        return Message(
            RecordDict(
                {
                    "metrics": MetricRecord(
                        {"num-examples": examples, "loss-sum": 0.5 * examples, "loss-count": float(examples)}
                    ),
                    "site": ConfigRecord({"site-id": f"toy-{partition:02d}"}),
                }
            ),
            reply_to=msg,
        )

    return app


class ToyGrid:
    """A Grid that adds the toy behaviour keys to every training instruction it sends,
    and keeps every reply the server receives (``received``), exactly as it arrived."""

    def __init__(self, grid: Grid, behaviour: ToyBehaviour) -> None:
        self._grid = grid
        self._extra = behaviour.as_config()
        self.received: list[Message] = []

    def send_and_receive(self, messages, *, timeout: float | None = None):
        messages = list(messages)
        for message in messages:
            if not message.has_error() and "config" in message.content:
                for key, value in self._extra.items():
                    message.content["config"][key] = value
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.received.extend(replies)  # the round loop copies a reply before changing it
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def run_toy_simulation(num_sites: int, server_main: Callable[[Grid, Context], None]) -> None:
    """``server_main(grid, context)`` as the ServerApp's main, ``num_sites`` toy sites."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        server_main(grid, context)

    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.WARNING)  # the per-stage INFO lines would drown the results
    try:
        run_simulation(
            server_app=app,
            client_app=make_toy_client_app(),
            num_supernodes=num_sites,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    finally:
        flwr_logger.setLevel(level)
