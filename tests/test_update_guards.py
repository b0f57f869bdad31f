"""Update guards: what makes a site's update unfit to aggregate, at the site and at the server."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message

from client.mods import (
    SITE_MODS,
    client_dp_clipping_mod,
    masked_update_mod,
    secure_aggregation_mod,
    update_guard_mod,
)
from privacy.guards import check_update, l2_norm, model_update
from server.failures import concise_reason
from server.federation import screen_updates

RECEIVED = {"conv.weight": np.zeros((4, 3), np.float32), "conv.bias": np.zeros(4, np.float32)}


def test_a_finite_small_update_is_accepted_with_its_norm():
    update = {"conv.weight": np.full((4, 3), 0.5), "conv.bias": np.zeros(4)}
    verdict = check_update(update, max_l2_norm=10.0)
    assert verdict.accepted and verdict.reason == ""
    assert verdict.l2_norm == pytest.approx(math.sqrt(12 * 0.25))


def test_a_nan_update_is_rejected_naming_how_many_values_and_where():
    update = {"conv.weight": np.zeros((4, 3)), "conv.bias": np.array([0.0, np.nan, np.inf, 1.0])}
    verdict = check_update(update, max_l2_norm=0.0)  # no norm bound: non-finite is still refused
    assert not verdict.accepted and math.isnan(verdict.l2_norm)
    assert verdict.reason == ("non-finite update: 2 of 16 values are NaN or infinite, in 1 array(s), first 'conv.bias'")


def test_an_oversized_update_is_rejected_with_its_norm_and_the_bound():
    verdict = check_update({"w": np.full(4, 3.0)}, max_l2_norm=5.0)
    assert not verdict.accepted
    assert verdict.reason == "update L2 norm 6 exceeds max-update-norm 5"


def test_a_zero_bound_means_no_norm_bound():
    assert check_update({"w": np.full(4, 1e6)}, max_l2_norm=0.0).accepted


def test_the_update_is_trained_minus_received_and_must_match_the_model():
    trained = {"conv.weight": np.ones((4, 3), np.float32), "conv.bias": np.ones(4, np.float32)}
    assert l2_norm(model_update(trained, RECEIVED)) == pytest.approx(4.0)
    with pytest.raises(ValueError, match=r"missing conv\.bias"):
        model_update({"conv.weight": trained["conv.weight"]}, RECEIVED)
    with pytest.raises(ValueError, match=r"'conv.bias' has shape \(5,\), expected \(4,\)"):
        model_update({**trained, "conv.bias": np.ones(5)}, RECEIVED)


def reply_from(node_id: int, site_id: str, weights: dict[str, np.ndarray]) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id=f"m{node_id}",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id="i1",
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
            "metrics": MetricRecord({"num-examples": 3}),
            "site": ConfigRecord({"site-id": site_id}),
        }
    )
    return make_message(metadata=metadata, content=content)


def test_the_server_guard_drops_nan_and_oversized_updates_and_logs_why(caplog):
    """Plain aggregation: the server checks each update, whatever the site's mods did."""
    arrays = ArrayRecord({k: Array(v) for k, v in RECEIVED.items()})
    fine = reply_from(1, "site-01", {k: v + 0.01 for k, v in RECEIVED.items()})
    nan = reply_from(2, "site-02", {**RECEIVED, "conv.bias": np.full(4, np.nan, np.float32)})
    huge = reply_from(3, "site-03", {k: v + 100 for k, v in RECEIVED.items()})
    with caplog.at_level(logging.WARNING, logger="cmrfl.server"):
        accepted, failures = screen_updates(7, [fine, nan, huge], arrays, max_update_norm=50.0)
    assert accepted == [fine]
    assert failures == [
        {
            "node_id": 2,
            "phase": "train",
            "site": "site-02",
            "reason": "non-finite update: 4 of 16 values are NaN or infinite, in 1 array(s), first 'conv.bias'",
        },
        {"node_id": 3, "phase": "train", "site": "site-03", "reason": "update L2 norm 400 exceeds max-update-norm 50"},
    ]
    assert "round 7: update of site-02 rejected: non-finite update" in caplog.text
    assert "round 7: update of site-03 rejected: update L2 norm 400" in caplog.text


def test_a_site_raising_is_recorded_in_its_own_words_without_the_runtime_traceback():
    reason = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()"
        '\x1b[39m ...\n  File "x.py", line 1\nflwr.clientapp.client_app.ClientAppException: \n'
        "Exception ClientAppException occurred. Message: update guard: first 'w''>"
    )
    assert concise_reason(reason) == "update guard: first 'w'"
    assert concise_reason("plain reason") == "plain reason"


def test_the_site_guard_sees_the_raw_update_before_dp_clipping_and_secagg_masking():
    """A reply passes the mods from last to first: guard, then clipping, then masking."""
    assert (secure_aggregation_mod, masked_update_mod, client_dp_clipping_mod, update_guard_mod) == SITE_MODS
