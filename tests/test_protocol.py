"""What crosses the network: every exchange survives its own record, and a malformed one is
refused naming the key."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from cmrfl.protocol import (
    EvaluateInstruction,
    EvaluateReply,
    Key,
    ProtocolError,
    Record,
    TrainInstruction,
    TrainReply,
    count_key,
    sum_key,
)
from privacy.dp_sgd_settings import DpSgdRequest
from server.config import FederationConfig
from server.federation import evaluate_config_for, train_config_for
from tasks.settings import TrainSettings


@pytest.mark.parametrize("dp_sgd", [None, DpSgdRequest(target_epsilon=3.0, planned_rounds=7, accountant="prv")])
def test_a_train_instruction_survives_its_record(dp_sgd: DpSgdRequest | None):
    instruction = TrainInstruction(
        task="lge",
        server_round=4,
        device="cpu",
        training=TrainSettings(local_epochs=2, batch_size=5, learning_rate=3e-3, proximal_mu=0.1, max_steps=9, seed=13),
        dp_sgd=dp_sgd,
        extra={"max-update-norm": 50.0},
    )
    assert TrainInstruction.from_record(instruction.to_record()) == instruction


def test_the_servers_instructions_carry_the_run_config_to_the_sites():
    config = FederationConfig.from_run_config(
        {"dp-sgd": True, "dp-sgd-target-epsilon": 3.0, "batch-size": 6, "fairness-suppression-threshold": 12}
    )
    train = TrainInstruction.from_record(train_config_for(config, server_round=2))
    assert train.training == config.training_settings(2) and train.training.seed == config.seed + 2
    assert train.dp_sgd == config.dp_sgd_request() and train.dp_sgd is not None
    assert train.dp_sgd.planned_rounds == config.num_server_rounds
    evaluate = EvaluateInstruction.from_record(evaluate_config_for(config, server_round=2))
    assert evaluate == EvaluateInstruction(config.task, 2, config.device, 12)


def test_replies_survive_their_records():
    arrays = ArrayRecord({"w": Array(np.ones(3, dtype=np.float32))})
    train = TrainReply("site-01", 412, 0.25, 3.5, 117.7, {"dp-sgd": 1.0, "dp-epsilon": 2.5})
    content = train.to_record(arrays)
    assert TrainReply.from_record(content) == train
    assert content.array_records[Record.ARRAYS] is arrays
    evaluate = EvaluateReply("site-02", {"num-examples": 5.0, "dice-scar-sum": 2.5, "dice-scar-count": 4.0}, "{}")
    assert EvaluateReply.from_record(evaluate.to_record()) == evaluate
    without_audit = EvaluateReply("site-02", {"num-examples": 5.0})
    assert EvaluateReply.from_record(without_audit.to_record()).fairness_document is None


def test_per_case_metrics_cross_as_sums_and_counts_in_kebab_case():
    assert (sum_key("scar_burden_abs_error"), count_key("dice_scar")) == (
        "scar-burden-abs-error-sum",
        "dice-scar-count",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop(Key.BATCH_SIZE), "train instruction: no 'batch-size'"),
        (lambda r: r.__setitem__(Key.LEARNING_RATE, "fast"), "learning-rate='fast' is not float"),
        (lambda r: r.pop(Key.DP_SGD_DELTA), "no 'dp-sgd-delta'"),
    ],
)
def test_a_malformed_train_instruction_is_refused_naming_the_key(change, message: str):
    record = TrainInstruction("lge", 1, "cpu", TrainSettings(), DpSgdRequest(target_epsilon=8.0)).to_record()
    change(record)
    with pytest.raises(ProtocolError, match=message):
        TrainInstruction.from_record(record)


def test_a_reply_without_its_site_or_metrics_is_refused():
    content = EvaluateReply("site-01", {"num-examples": 2.0}).to_record()
    del content[Record.SITE]
    with pytest.raises(ProtocolError, match="no 'site' record"):
        EvaluateReply.from_record(content)
    content = TrainReply("site-01", 1, math.nan, 0.0, 0.0).to_record(ArrayRecord())
    del content[Record.METRICS]
    with pytest.raises(ProtocolError, match="no 'metrics' record"):
        TrainReply.from_record(content)


def test_the_protocol_imports_no_training_library():
    """A SecAgg+ key-exchange process decodes its stage without torch (client/app.py)."""
    assert all(isinstance(record, str) for record in (Record.ARRAYS, Key.TASK))
    code = "import sys, cmrfl.protocol; sys.exit('torch' in sys.modules)"
    import subprocess

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    assert ConfigRecord({str(Key.TASK): "lge"})[Key.TASK] == "lge"  # enum keys index records
