"""One training round under Flower's SecAgg+, inside our own round loop.

Design. Flower 1.42's ``SecAggPlusWorkflow`` runs the protocol's four stages (setup,
share keys, collect masked vectors, unmask) against a ``LegacyContext`` whose legacy
strategy samples sites (``configure_fit``) and receives the unmasked sum
(``aggregate_fit``). Our loop, checkpoints and DP wrappers use Message-API strategies.
Rather than keep a second, legacy strategy stack for SecAgg+ (two FedAvgs, two DP
wrappers, two places to get weighting and accounting right), SecAgg+ here replaces
only how the weights travel:

1. the Message-API strategy's ``configure_train`` samples the sites and builds the
   instructions (DP wrappers add their clipping norm, FedProx its mu, as usual);
2. a small legacy-facing adapter hands the workflow those sites, and the workflow's
   collect-masked-vectors stage sends each site *our* instruction (not a legacy
   ``FitIns``), so the ClientApp reads the same ``arrays``/``config`` as in a plain round;
3. each site masks its *update* (trained minus received weights; client/mods.py), so
   ``secagg-clipping-range`` bounds update coordinates, not weights, and client-level
   DP clipping (‖update‖₂ ≤ C) keeps every coordinate inside it;
4. the workflow unmasks the weighted mean update, and the adapter's ``aggregate_fit``
   keeps it; the global model plus that mean is the secure aggregate;
5. every site whose masked update is in the sum gets a reply that carries the secure
   aggregate in place of its weights, with its own clear-text metrics; those replies
   go to the Message-API strategy's ``aggregate_train``, so FedAvg's weighted mean of
   identical arrays is the aggregate itself, FedAdam applies its server step to it,
   and the DP wrappers add their noise and account the release, unchanged.

The server never holds an individual site's weights or update: what it receives from
a site is a masked integer vector (and scalars). Robust aggregation (median, trimmed
mean, Krum) needs individual updates and is refused with SecAgg+ (privacy/settings.py).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, FitRes, Parameters, Scalar, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Stage
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from cmrfl.protocol import Record
from privacy.settings import SecureAggregationSettings
from server.failures import failure, replying_node

log = logging.getLogger("cmrfl.server")

STAGES = Stage.all()  # setup, share_keys, collect_masked_vectors, unmask
_LEGACY_RECORD_PREFIX = "fitres."


@dataclass
class SecureTrainingRound:
    """What one SecAgg+ training round produced."""

    replies: list[Message]  # per contributing site: the secure aggregate + its clear metrics
    failures: list[dict[str, Any]]  # sites that dropped out or refused, with stage and reason
    contributors: list[int] = field(default_factory=list)  # node ids whose update is in the sum


def run_secure_training(
    grid: Grid,
    server_round: int,
    instructions: Iterable[Message],
    arrays: ArrayRecord,
    settings: SecureAggregationSettings,
    *,
    uniform_site_weights: bool,
    timeout: float | None,
) -> SecureTrainingRound:
    """Run one training round under SecAgg+ for the sites ``instructions`` address.

    ``instructions`` are a Message-API strategy's ``configure_train`` output; ``arrays``
    the global model they carry. With ``uniform_site_weights`` every site weighs 1
    (client-level DP); otherwise its number of examples.
    """
    by_node = {message.metadata.dst_node_id: message for message in instructions}
    if not by_node:
        return SecureTrainingRound(replies=[], failures=[])
    # One RecordDict per site: the workflow adds each site's own SecAgg+ record to it.
    contents = {node: RecordDict(dict(message.content.items())) for node, message in by_node.items()}
    recorder = _RecordingGrid(grid)
    adapter = _SampledSites(sorted(by_node), grid)
    workflow = _OneRoundSecAggPlus(
        contents,
        num_shares=settings.num_shares,
        reconstruction_threshold=settings.reconstruction_threshold,
        max_weight=1.0 if uniform_site_weights else settings.max_weight,
        clipping_range=settings.clipping_range,
        quantization_range=settings.quantization_range,
        timeout=timeout,
    )
    workflow(cast(Grid, recorder), _legacy_context(adapter, server_round))  # a Grid by duck typing

    failures = recorder.failures()
    for dropped in failures:
        log.warning(
            "round %d: node %d left the secure round at %s: %s",
            server_round,
            dropped["node_id"],
            dropped["stage"],
            dropped["reason"],
        )
    if adapter.mean_update is None:
        log.error(
            "round %d: secure aggregation halted: %d of %d sites left, %d shares needed per site",
            server_round,
            len(failures),
            len(by_node),
            settings.reconstruction_threshold,
        )
        return SecureTrainingRound(replies=[], failures=failures)

    aggregate = _apply_update(arrays, adapter.mean_update)
    arrays_key = next(iter(next(iter(by_node.values())).content.array_records), Record.ARRAYS.value)
    collected = recorder.stage(Stage.COLLECT_MASKED_VECTORS)
    replies = [
        _carrying_aggregate(reply, arrays_key, aggregate)
        for reply in collected
        if not reply.has_error() and reply.metadata.src_node_id in adapter.contributors
    ]
    log.info(
        "round %d: secure aggregate of %d site updates (%d dropped out or refused)",
        server_round,
        len(replies),
        len(failures),
    )
    return SecureTrainingRound(replies=replies, failures=failures, contributors=list(adapter.contributors))


class _OneRoundSecAggPlus(SecAggPlusWorkflow):
    """Flower's workflow, with our Message-API instruction sent in place of FitIns."""

    def __init__(self, contents: dict[int, RecordDict], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._contents = contents

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        proceed = super().setup_stage(grid, context, state)
        state.nid_to_fitins = {node: self._contents[node] for node in state.nid_to_fitins}
        return proceed


class _SampledSites(LegacyStrategy):
    """The legacy face the workflow needs: which sites, and where the sum goes.

    ``configure_fit`` returns the sites the Message-API strategy sampled (their FitIns
    are placeholders: the workflow sends our own instruction instead, see above);
    ``aggregate_fit`` receives the unmasked weighted mean update and keeps it.
    """

    def __init__(self, node_ids: list[int], grid: Grid) -> None:
        self._proxies = [GridClientProxy(node_id, grid, run_id=0) for node_id in node_ids]
        self.mean_update: list[np.ndarray] | None = None
        self.contributors: list[int] = []

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return [(proxy, FitIns(parameters, {})) for proxy in self._proxies]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if results:  # the workflow sets every result's parameters to the unmasked mean
            self.mean_update = parameters_to_ndarrays(results[0][1].parameters)
            self.contributors = sorted(proxy.node_id for proxy, _ in results)
        return None, {}

    # The workflow uses nothing else of a legacy strategy.
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


@dataclass
class _StageExchange:
    sent_to: list[int]
    replies: list[Message]
    sent: list[Message] = field(default_factory=list)  # to name a node the SuperLink answered for


class _RecordingGrid:
    """Passes everything to the real grid; keeps each stage's replies for the round."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.stages: list[_StageExchange] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.stages.append(_StageExchange([m.metadata.dst_node_id for m in messages], replies, messages))
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def stage(self, name: str) -> list[Message]:
        index = STAGES.index(name)
        return self.stages[index].replies if index < len(self.stages) else []

    def failures(self) -> list[dict[str, Any]]:
        failures = []
        for name, exchange in zip(STAGES, self.stages, strict=False):  # fewer if halted
            answered = set()
            for reply in exchange.replies:
                node_id = replying_node(reply, exchange.sent)
                answered.add(node_id)
                if reply.has_error():
                    failures.append(failure(node_id, "train", reply.error.reason, stage=name))
            for node_id in exchange.sent_to:
                if node_id not in answered:
                    failures.append(failure(node_id, "train", "no reply before the timeout", stage=name))
        return failures


def _legacy_context(adapter: LegacyStrategy, server_round: int) -> LegacyContext:
    manager = SimpleClientManager()
    context = LegacyContext(
        Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        strategy=adapter,
        client_manager=manager,
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()  # our instructions carry the model
    return context


def _apply_update(arrays: ArrayRecord, mean_update: list[np.ndarray]) -> ArrayRecord:
    if len(mean_update) != len(arrays):
        raise RuntimeError(f"secure aggregate has {len(mean_update)} arrays, the model {len(arrays)}")
    updated = {}
    for (name, array), delta in zip(arrays.items(), mean_update, strict=True):
        current = array.numpy()
        updated[name] = Array((current.astype(np.float64) + delta.reshape(current.shape)).astype(current.dtype))
    return ArrayRecord(updated)


def _carrying_aggregate(reply: Message, arrays_key: str, aggregate: ArrayRecord) -> Message:
    """The site's reply with the secure aggregate in place of its (masked) update.

    Keeps what the site sent in the clear (metrics, name); drops the SecAgg+ and legacy
    records, which a Message-API strategy would take for a second ArrayRecord/MetricRecord.
    """
    kept = {
        key: record
        for key, record in reply.content.items()
        if key != RECORD_KEY_CONFIGS
        and not key.startswith(_LEGACY_RECORD_PREFIX)
        and not isinstance(record, ArrayRecord)
    }
    carrying = copy.copy(reply)  # the reply as received stays as it was (audit, tests)
    carrying.content = RecordDict({arrays_key: aggregate, **kept})
    return carrying
