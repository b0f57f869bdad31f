"""The site's Flower mods: SecAgg+, client-level DP clipping, and the update guard.

Mods wrap the ClientApp; the first in ``SITE_MODS`` is the outermost. A training
reply therefore travels from the last to the first:

1. ``update_guard_mod``: refuses a non-finite or oversized update (privacy/guards.py)
   while it is still the site's own, raw update, before anything changes or hides it;
2. ``client_dp_clipping_mod``: Flower's ``fixedclipping_mod`` or ``adaptiveclipping_mod``
   when the server runs client-level DP (it tells the site through the train config);
3. ``masked_update_mod``: under SecAgg+, hands Flower's ``secaggplus_mod`` the update
   (trained minus received weights) in the legacy ``FitRes`` layout it reads, and
   removes the weights from the reply;
4. ``secure_aggregation_mod``: Flower's ``secaggplus_mod`` for rounds the server runs
   under SecAgg+; it quantises and masks the update, and clears every ArrayRecord.

So with SecAgg+ the weights leave the site only masked; the scalar metrics
(number of examples, training loss, ...) and the site's name travel in the clear.
Evaluation messages pass through untouched.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE
from flwr.compat.common import recorddict_compat as compat

from cmrfl.protocol import Key, Metric, Record, record_float, record_int
from privacy.guards import check_update, model_update

log = logging.getLogger("cmrfl.site")

# Node-config key: a site that sets it sends model updates only under SecAgg+.
REQUIRE_SECURE_AGGREGATION = "require-secure-aggregation"


class UpdateNotSent(RuntimeError):
    """The site did not produce an update to mask; SecAgg+ counts it as dropped out."""


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` for the training rounds the server runs under SecAgg+."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    if RECORD_KEY_CONFIGS in msg.content:
        return secaggplus_mod(msg, context, call_next)
    if bool(context.node_config.get(REQUIRE_SECURE_AGGREGATION, False)):
        return _refuse(
            msg,
            "this site sends model updates only under secure aggregation "
            f"(node config {REQUIRE_SECURE_AGGREGATION}); the server asked for a plain round",
        )
    return call_next(msg, context)


def masked_update_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Under SecAgg+: give ``secaggplus_mod`` the site's update to mask, never its weights.

    ``secaggplus_mod`` calls the ClientApp only in its collect-masked-vectors stage, and
    reads the reply through ``recorddict_to_fitres``. This mod strips the SecAgg+ record
    from the instruction (inner mods and the ClientApp see a plain Message-API
    instruction), then turns the Message-API reply into that layout: the update as
    ``fitres.parameters`` and the site's weight as ``fitres.num_examples``.
    """
    if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in msg.content:
        return call_next(msg, context)
    del msg.content[RECORD_KEY_CONFIGS]  # secaggplus_mod already holds its own reference
    received = _arrays(msg.content)
    config = _train_config(msg)

    reply = call_next(msg, context)
    if reply.has_error():
        # secaggplus_mod cannot mask an error; raising makes this site a SecAgg+ dropout
        # and the server receives the reason.
        raise UpdateNotSent(reply.error.reason)

    arrays_key = _single_key(reply.content.array_records, "reply")
    update = model_update(_named(reply.content.array_records[arrays_key]), received)
    metrics = next(iter(reply.content.metric_records.values()))
    weight = 1 if bool(config.get(Key.UNIFORM_SITE_WEIGHTS, False)) else record_int(metrics[Metric.NUM_EXAMPLES])
    _warn_if_quantisation_clips(update, weight, context)
    del reply.content[arrays_key]  # the weights never leave the site under SecAgg+
    fitres = FitRes(
        status=Status(code=Code.OK, message="update handed to SecAgg+"),
        parameters=ndarrays_to_parameters(list(update.values())),
        num_examples=weight,
        metrics={},  # the site's scalars already travel in its own MetricRecord
    )
    for key, record in compat.fitres_to_recorddict(fitres, keep_input=False).items():
        reply.content[key] = record
    return reply


def client_dp_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's client-side clipping mod for the client-level DP mode the server runs."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    mode = str(_train_config(msg).get(Key.CLIENT_DP, "off"))
    if mode == "fixed":
        return fixedclipping_mod(msg, context, call_next)
    if mode == "adaptive":
        return adaptiveclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def update_guard_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Refuse to send an update that is non-finite or larger than ``max-update-norm``."""
    if msg.metadata.message_type != MessageType.TRAIN or not msg.content.array_records:
        return call_next(msg, context)
    received = _arrays(msg.content)
    max_norm = record_float(_train_config(msg).get(Key.MAX_UPDATE_NORM, 0.0))
    reply = call_next(msg, context)
    if reply.has_error() or not reply.content.array_records:
        return reply
    arrays_key = _single_key(reply.content.array_records, "reply")
    trained = _named(reply.content.array_records[arrays_key])
    verdict = check_update(model_update(trained, received), max_norm)
    if not verdict.accepted:
        return _refuse(msg, f"update guard: {verdict.reason}")
    return reply


# Outermost first: see the module docstring for why this order.
SITE_MODS: tuple[Mod, ...] = (
    secure_aggregation_mod,
    masked_update_mod,
    client_dp_clipping_mod,
    update_guard_mod,
)


def _refuse(msg: Message, reason: str) -> Message:
    log.warning("training round %s not sent: %s", msg.metadata.group_id or "?", reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)


def _train_config(msg: Message) -> ConfigRecord:
    records = msg.content.config_records
    if Record.CONFIG in records:
        return records[Record.CONFIG]
    return next(iter(records.values())) if len(records) == 1 else ConfigRecord()


def _arrays(content) -> dict[str, np.ndarray]:
    key = _single_key(content.array_records, "instruction")
    return _named(content.array_records[key])


def _named(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


def _single_key(records, what: str) -> str:
    if len(records) != 1:
        raise ValueError(f"training {what} must carry exactly one ArrayRecord, found {len(records)}")
    return next(iter(records))


def _warn_if_quantisation_clips(update: dict[str, np.ndarray], weight: int, context: Context) -> None:
    """SecAgg+ clips each weighted coordinate to ±clipping range: say so if it bites."""
    state = context.state.config_records.get(RECORD_KEY_STATE)
    if state is None or not state.get("max_weight"):
        return
    ratio = weight / record_float(state["max_weight"])
    limit = record_float(state["clipping_range"])
    clipped = sum(int(np.count_nonzero(np.abs(a) * ratio > limit)) for a in update.values())
    if clipped:
        log.warning(
            "%d update values exceed the SecAgg+ clipping range %.3g (after weighting by "
            "%.3g) and are clipped: raise secagg-clipping-range or secagg-max-weight",
            clipped,
            limit,
            ratio,
        )
