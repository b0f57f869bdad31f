"""Secure aggregation (Flower's SecAgg+), update guards and client-level DP, on toy sites.

Toy sites (tests/toy_federation.py) run behind the real site mods, with the real
ServerApp and round loop, in Flower's simulation runtime; their 'training' adds a
known pseudo-random update, so each test can hold what the server received, and
what it computed, against the truth. One simulation runs every scenario below.
"""

from __future__ import annotations

import json
import math
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from flwr.app import Message
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.serverapp import GaussianPrivacyEvent, Grid, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

from server.app import make_server_app
from server.config import FederationConfig, RunConfigError
from toy_federation import (
    TOY_TASK,
    ToyBehaviour,
    ToyGrid,
    run_toy_simulation,
    toy_model,
    toy_num_examples,
    toy_update,
)

NUM_SITES = 5
NUM_PARAMS = 20_000
UPDATE_SCALE = 0.01  # toy update coordinates ~ N(0, 0.01²): norm ≈ 1.4
CLIP = 0.5  # client-level DP clipping norm, below every toy update's norm
BASE = {
    "task": TOY_TASK,
    "num-server-rounds": 1,
    "min-train-sites": NUM_SITES,
    "min-available-sites": NUM_SITES,
    "resume": False,
}
DP_FIXED = {"client-dp": "fixed", "client-dp-clipping-norm": CLIP}
SCENARIOS: dict[str, tuple[dict[str, Any], ToyBehaviour]] = {
    "secagg": ({}, ToyBehaviour()),
    "dropout": ({}, ToyBehaviour(dropout_site=2)),
    # Two of five sites refused: each site then needs 3 live share-holders of 5.
    "guards-secagg": (
        {"secagg-num-shares": 5, "secagg-reconstruction-threshold": 3},
        ToyBehaviour(nan_site=0, oversized_site=1),
    ),
    "guards-plain": ({"secure-aggregation": False}, ToyBehaviour(nan_site=0, oversized_site=1)),
    "dp-plain": ({**DP_FIXED, "secure-aggregation": False}, ToyBehaviour()),
    "dp-secagg": ({**DP_FIXED, "num-server-rounds": 2}, ToyBehaviour()),
    # Round 1, then (FIRST_RUN below) a resumed run for round 2.
    "dp-resumed": ({**DP_FIXED, "num-server-rounds": 2, "resume": True}, ToyBehaviour()),
    "dp-dropout": (DP_FIXED, ToyBehaviour(dropout_site=2)),
    "dp-adaptive": (
        {
            "client-dp": "adaptive",
            "client-dp-clipping-norm": CLIP,
            "client-dp-clipped-count-stddev": 1.0,
            "num-server-rounds": 2,
        },
        ToyBehaviour(),
    ),
}


FIRST_RUN = {"dp-resumed": {"num-server-rounds": 1, "resume": False}}


@dataclass
class ToyRun:
    config: FederationConfig
    summary: dict[str, Any]
    received: list[Message]  # every reply the server got, as it arrived
    run_dir: Path

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.summary["rounds_detail"]

    def weights_after(self, server_round: int) -> np.ndarray:
        with np.load(self.run_dir / "checkpoints" / f"round-{server_round:04d}.npz") as saved:
            return np.concatenate([saved[name].ravel() for name in INITIAL])


INITIAL = {name: array.numpy() for name, array in toy_model(NUM_PARAMS).items()}
SHAPES = {name: array.shape for name, array in INITIAL.items()}


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ToyRun | str]:
    """Every scenario, through the real ServerApp, in one simulation of five toy sites."""
    root = tmp_path_factory.mktemp("toy-runs")
    runs: dict[str, ToyRun | str] = {}

    def server_main(grid, context) -> None:
        np.random.seed(0)  # the DP wrappers draw their noise from NumPy's global generator
        for name, (overrides, behaviour) in SCENARIOS.items():
            run_config = {**BASE, "run-dir": str(root / name), **overrides}
            toy_grid = ToyGrid(grid, behaviour)  # a Grid by duck typing, hence the casts below
            try:
                if name in FIRST_RUN:
                    make_server_app({**run_config, **FIRST_RUN[name]}, initial_arrays=toy_model(NUM_PARAMS))(
                        cast(Grid, ToyGrid(grid, behaviour)), context
                    )
                make_server_app(run_config, initial_arrays=toy_model(NUM_PARAMS))(cast(Grid, toy_grid), context)
                summary = json.loads((root / name / "summary.json").read_text())
                runs[name] = ToyRun(
                    FederationConfig.from_run_config(run_config), summary, toy_grid.received, root / name
                )
            except Exception:
                runs[name] = traceback.format_exc()

    run_toy_simulation(NUM_SITES, server_main)
    return runs


def scenario(toy_runs: dict[str, ToyRun | str], name: str) -> ToyRun:
    run = toy_runs[name]
    if isinstance(run, str):
        pytest.fail(f"scenario {name} failed:\n{run}")
    return run


def true_update(partition: int, server_round: int = 1) -> np.ndarray:
    update = toy_update(partition, server_round, SHAPES, UPDATE_SCALE)
    return np.concatenate([update[name].ravel() for name in SHAPES]).astype(np.float64)


def weighted_mean_update(partitions: list[int]) -> np.ndarray:
    weights = np.array([toy_num_examples(p) for p in partitions], dtype=np.float64)
    return sum(w * true_update(p) for w, p in zip(weights, partitions, strict=True)) / weights.sum()


def quantisation_bound(config: FederationConfig, partitions: list[int]) -> float:
    """Worst case of SecAgg+'s stochastic rounding on one coordinate of the weighted mean."""
    step = 2 * config.secagg_clipping_range / config.secagg_quantization_range
    ratios = sum(toy_num_examples(p) / config.secagg_max_weight for p in partitions)
    return len(partitions) * step / ratios + 1e-6


def first_round_delta(run: ToyRun) -> np.ndarray:
    initial = np.concatenate([a.ravel() for a in INITIAL.values()])
    return run.weights_after(1).astype(np.float64) - initial


def partition_of(reply: Message) -> int:
    return int(str(reply.content["site"]["site-id"]).removeprefix("toy-"))


def masked_vectors(run: ToyRun) -> dict[int, np.ndarray]:
    """What each site sent in SecAgg+'s collect-masked-vectors stage (the factor dropped)."""
    vectors = {}
    for reply in run.received:
        if reply.has_error() or RECORD_KEY_CONFIGS not in reply.content:
            continue
        record = reply.content[RECORD_KEY_CONFIGS]
        if Key.MASKED_PARAMETERS in record:
            arrays = [bytes_to_ndarray(b) for b in cast(list[bytes], record[Key.MASKED_PARAMETERS])]
            vectors[partition_of(reply)] = np.concatenate([a.ravel() for a in arrays[1:]]).astype(np.float64)
    return vectors


# --- (a) SecAgg+: the server holds masked vectors, and their exact-enough sum ---------


def test_under_secagg_no_reply_carries_weights_or_updates_in_the_clear(toy_runs):
    run = scenario(toy_runs, "secagg")
    assert run.received
    for reply in run.received:
        assert not reply.has_error()
        assert all(len(record) == 0 for record in reply.content.array_records.values())


def test_what_the_server_holds_for_a_site_is_uncorrelated_with_its_update(toy_runs):
    vectors = masked_vectors(scenario(toy_runs, "secagg"))
    assert sorted(vectors) == list(range(NUM_SITES))
    for partition, masked in vectors.items():
        assert masked.size == NUM_PARAMS
        assert abs(np.corrcoef(masked, true_update(partition))[0, 1]) < 0.05
        # Spread over the whole mask range [0, 2**32), not the quantised range [0, 2**22).
        assert masked.max() > 2**31


def test_the_secure_aggregate_is_the_weighted_mean_of_true_updates_up_to_quantisation(toy_runs):
    run = scenario(toy_runs, "secagg")
    everyone = list(range(NUM_SITES))
    bound = quantisation_bound(run.config, everyone)
    assert bound < 0.01 * UPDATE_SCALE
    error = np.abs(first_round_delta(run) - weighted_mean_update(everyone))
    assert error.max() <= bound


def test_sites_scalar_metrics_still_arrive_in_the_clear_under_secagg(toy_runs):
    run = scenario(toy_runs, "secagg")
    sites = run.history[0]["train"]["sites"]
    assert {site: m["num-examples"] for site, m in sites.items()} == {
        f"toy-{p:02d}": toy_num_examples(p) for p in range(NUM_SITES)
    }
    assert run.history[0]["secure_aggregation"] == {"sites": NUM_SITES, "sampled": NUM_SITES}
    assert run.summary["privacy"]["secure_aggregation"]["enabled"] is True


# --- (b) a dropout after key sharing ---------------------------------------------------


def test_a_site_dropping_out_after_sharing_keys_does_not_stop_the_round(toy_runs):
    run = scenario(toy_runs, "dropout")
    (failure,) = run.history[0]["failures"]
    assert failure["stage"] == Stage.COLLECT_MASKED_VECTORS
    assert failure["reason"] == "toy site 2 drops out of round 1"
    shared_keys = {
        reply.metadata.src_node_id
        for reply in run.received
        if not reply.has_error()
        and RECORD_KEY_CONFIGS in reply.content
        and Key.CIPHERTEXT_LIST in reply.content[RECORD_KEY_CONFIGS]
    }
    assert failure["node_id"] in shared_keys  # it had sent its key shares
    survivors = [0, 1, 3, 4]
    assert sorted(run.history[0]["train"]["sites"]) == [f"toy-{p:02d}" for p in survivors]
    error = np.abs(first_round_delta(run) - weighted_mean_update(survivors))
    assert error.max() <= quantisation_bound(run.config, survivors)


# --- (c) guards: NaN and oversized updates -------------------------------------------


@pytest.mark.parametrize("name", ["guards-secagg", "guards-plain"])
def test_nan_and_oversized_updates_are_rejected_with_the_reason_recorded(toy_runs, name):
    run = scenario(toy_runs, name)
    reasons = sorted(f["reason"] for f in run.history[0]["failures"])
    assert len(reasons) == 2
    assert reasons[0] == (
        "update guard: non-finite update: 500 of 20000 values are NaN or infinite, in 1 array(s), first 'layer0.weight'"
    )
    assert reasons[1].startswith("update guard: update L2 norm ")
    assert reasons[1].endswith("exceeds max-update-norm 100")
    survivors = [2, 3, 4]
    assert sorted(run.history[0]["train"]["sites"]) == [f"toy-{p:02d}" for p in survivors]
    error = np.abs(first_round_delta(run) - weighted_mean_update(survivors))
    assert error.max() <= (quantisation_bound(run.config, survivors) if name == "guards-secagg" else 1e-6)


def test_under_secagg_the_guard_runs_at_the_site_before_masking(toy_runs):
    run = scenario(toy_runs, "guards-secagg")
    assert all(f["stage"] == Stage.COLLECT_MASKED_VECTORS for f in run.history[0]["failures"])
    assert sorted(masked_vectors(run)) == [2, 3, 4]  # the refused sites sent no masked vector


# --- (d) client-level DP --------------------------------------------------------------


def clipped(update: np.ndarray, norm: float) -> np.ndarray:
    return update * min(1.0, norm / np.linalg.norm(update))


def test_sites_clip_their_update_to_the_dp_clipping_norm(toy_runs):
    run = scenario(toy_runs, "dp-plain")  # plain: the server sees each clipped update
    initial = np.concatenate([a.ravel() for a in INITIAL.values()]).astype(np.float64)
    train_replies = [r for r in run.received if not r.has_error() and r.content.array_records]
    assert len(train_replies) == NUM_SITES
    for reply in train_replies:
        (arrays,) = reply.content.array_records.values()
        sent = np.concatenate([arrays[name].numpy().ravel() for name in SHAPES]) - initial
        truth = true_update(partition_of(reply))
        assert np.linalg.norm(truth) > 2 * CLIP
        np.testing.assert_allclose(sent, clipped(truth, CLIP), atol=1e-6)


def test_dp_noise_on_the_secure_mean_has_the_calibrated_standard_deviation(toy_runs):
    run = scenario(toy_runs, "dp-secagg")
    uniform_mean = np.mean([clipped(true_update(p), CLIP) for p in range(NUM_SITES)], axis=0)
    noise = first_round_delta(run) - uniform_mean
    expected_std = run.config.client_dp_noise_multiplier * CLIP / NUM_SITES
    assert run.history[0]["client_dp"]["update_noise_std"] == pytest.approx(expected_std)
    assert noise.std() == pytest.approx(expected_std, rel=0.03)
    assert abs(noise.mean()) < 5 * expected_std / math.sqrt(NUM_PARAMS)


@pytest.mark.parametrize("name", ["dp-secagg", "dp-adaptive", "dp-resumed"])
def test_client_level_epsilon_per_round_is_flowers_rdp_accountant(toy_runs, name):
    run = scenario(toy_runs, name)
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=run.config.client_dp_delta,
            population_size=NUM_SITES,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    for entry in run.history:
        accountant.compose(GaussianPrivacyEvent(run.config.client_dp_noise_multiplier, NUM_SITES, NUM_SITES))
        assert entry["client_dp"]["epsilon"] == pytest.approx(
            accountant.get_epsilon(run.config.client_dp_delta), rel=1e-9
        )
        assert entry["client_dp"]["releases"] == entry["round"]
    assert run.history[1]["client_dp"]["epsilon"] > run.history[0]["client_dp"]["epsilon"] > 0


def test_a_resumed_dp_run_continues_the_accounting_of_the_rounds_before(toy_runs):
    run = scenario(toy_runs, "dp-resumed")
    assert run.summary["resumed_from_round"] == 1
    assert run.summary["privacy"]["client_dp"]["rounds"] == 2
    assert (
        run.summary["privacy"]["client_dp"]["epsilon"]
        == scenario(toy_runs, "dp-secagg").summary["privacy"]["client_dp"]["epsilon"]
    )


def test_a_dp_round_missing_a_site_releases_nothing_and_says_why(toy_runs):
    failure = toy_runs["dp-dropout"]
    assert isinstance(failure, str), "the run should have stopped"
    assert "round 1: no usable aggregate from 4 of 5 sampled sites" in failure
    assert "client-level DP calibrates its noise to all 5 sampled sites" in failure
    assert "toy site 2 drops out of round 1" in failure


def test_summary_records_client_level_privacy(toy_runs):
    run = scenario(toy_runs, "dp-secagg")
    recorded = run.summary["privacy"]["client_dp"]
    assert recorded["epsilon"] == run.history[-1]["client_dp"]["epsilon"]
    assert {
        k: recorded[k]
        for k in ("mode", "noise_multiplier", "clipping_norm", "clients_per_round", "population", "rounds", "delta")
    } == {
        "mode": "fixed",
        "noise_multiplier": 1.0,
        "clipping_norm": CLIP,
        "clients_per_round": NUM_SITES,
        "population": NUM_SITES,
        "rounds": 2,
        "delta": 1e-5,
    }


def test_adaptive_clipping_carries_its_norm_from_round_to_round(toy_runs):
    run = scenario(toy_runs, "dp-adaptive")
    first, second = (entry["client_dp"] for entry in run.history)
    assert first["clipping_norm"] == CLIP
    assert second["clipping_norm"] == first["next_clipping_norm"] != CLIP
    # Every toy update is above the norm, so the norm grows towards the median.
    assert first["next_clipping_norm"] > CLIP


# --- run-config refusals ---------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["fedmedian", "fedtrimmedavg", "krum"])
def test_robust_aggregation_with_secagg_is_refused_naming_both_keys(strategy):
    with pytest.raises(
        RunConfigError, match=f"strategy={strategy} needs each site's own update, which secure-aggregation hides"
    ):
        FederationConfig.from_run_config({"strategy": strategy})
    FederationConfig.from_run_config({"strategy": strategy, "secure-aggregation": False})  # fine


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        ({"client-dp": "fixed", "strategy": "fedadam"}, "client-dp=fixed needs a uniform mean of clipped updates"),
        ({"client-dp": "gaussian"}, "client-dp='gaussian': choose one of off, fixed, adaptive"),
        ({"client-dp": "adaptive"}, "client-dp=adaptive: client-dp-noise-multiplier"),
        (
            {"secagg-reconstruction-threshold": 3},
            "secagg-reconstruction-threshold=3: must be at least 2 and below secagg-num-shares",
        ),
        ({"client-dp": "fixed", "client-dp-population": 1}, "2 sites per round but a population of 1"),
    ],
)
def test_unworkable_privacy_settings_are_refused_with_the_key_named(run_config, message):
    with pytest.raises(RunConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FederationConfig.from_run_config(run_config)
