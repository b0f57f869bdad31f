"""One site's reply can neither poison nor stop a run (issue 21, item 3).

End to end: toy sites (tests/toy_federation.py) behind the real mods, the real ServerApp
and round loop, in Flower's simulation runtime; one site's ClientApp is wrapped so that
its replies misbehave *after* its own mods, as a hostile or broken site's would. Every
scenario runs two rounds in one simulation. Then the checks themselves, on single replies.
"""

from __future__ import annotations

import json
import math
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

import server.federation
from cmrfl.protocol import TrainReply, record_int
from privacy.budget import privacy_metrics
from server.app import make_server_app
from server.checkpoint import CheckpointStore
from server.reply_validation import MAX_NUM_EXAMPLES, evaluate_reply_form, reply_problem, train_reply_form
from server.site_identity import SiteIdentities
from toy_federation import TOY_TASK, ToyBehaviour, ToyGrid, make_toy_client_app, toy_model, toy_num_examples, toy_update

NUM_SITES = 3
HOSTILE = 1  # the partition whose replies misbehave
HONEST = [0, 2]
NUM_PARAMS = 400
ROUNDS = 2
BASE = {
    "task": TOY_TASK,
    "num-server-rounds": ROUNDS,
    "min-train-sites": NUM_SITES,
    "min-available-sites": NUM_SITES,
    "secure-aggregation": False,
    "resume": False,
}


def set_metric(key: str, value: float) -> Callable[[RecordDict], None]:
    def act(content: RecordDict) -> None:
        content.metric_records["metrics"][key] = value

    return act


def drop_metric(key: str) -> Callable[[RecordDict], None]:
    def act(content: RecordDict) -> None:
        del content["metrics"][key]

    return act


def drop_record(name: str) -> Callable[[RecordDict], None]:
    def act(content: RecordDict) -> None:
        del content[name]

    return act


def name_site(record: ConfigRecord) -> Callable[[RecordDict], None]:
    def act(content: RecordDict) -> None:
        content["site"] = record

    return act


def change_weights(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[RecordDict], None]:
    def act(content: RecordDict) -> None:
        arrays = content.array_records["arrays"]
        content["arrays"] = ArrayRecord({name: Array(change(array.numpy())) for name, array in arrays.items()})

    return act


def with_nan(values: np.ndarray) -> np.ndarray:
    values = values.copy()
    values[:3] = np.nan
    return values


def impersonate_site_00(content: RecordDict) -> None:
    content["site"] = ConfigRecord({"site-id": "toy-00"})
    metrics = content.metric_records["metrics"]
    if "loss-sum" in metrics:  # its evaluation, with other figures than toy-00's own
        metrics["loss-sum"] = 0.9 * float(cast(float, metrics["num-examples"]))


@dataclass(frozen=True)
class Misbehaviour:
    phase: str  # the replies it spoils: "train", "evaluate" or "both"
    act: Callable[[RecordDict], None]
    reason: str  # a regular expression for the recorded reason
    from_round: int = 1
    run_config: dict[str, Any] | None = None


MISBEHAVIOURS: dict[str, Misbehaviour] = {
    "nan-count": Misbehaviour("train", set_metric("num-examples", math.nan), r"'num-examples' is nan, not a finite"),
    "infinite-count": Misbehaviour("train", set_metric("num-examples", math.inf), r"'num-examples' is inf, not a fin"),
    "negative-count": Misbehaviour("train", set_metric("num-examples", -30), r"num-examples is -30: expected a whole"),
    "zero-count": Misbehaviour("train", set_metric("num-examples", 0), r"num-examples is 0: expected .* from 1 to"),
    "huge-count": Misbehaviour(
        "train", set_metric("num-examples", 10**9), r"num-examples is 1000000000: .* to 10,000,000"
    ),
    "extra-metric-key": Misbehaviour(
        "train", set_metric("bonus", 1.0), r"train metrics do not have the protocol's keys: unexpected bonus$"
    ),
    "missing-metric-key": Misbehaviour(
        "train", drop_metric("train-loss"), r"train metrics do not have the protocol's keys: missing train-loss$"
    ),
    "no-metrics": Misbehaviour(
        "train", drop_record("metrics"), r"train reply must carry one MetricRecord 'metrics'; found none"
    ),
    "no-site-id": Misbehaviour("train", name_site(ConfigRecord({})), r"names no site \(no 'site-id'"),
    "float64-weights": Misbehaviour(
        "train", change_weights(lambda a: a.astype(np.float64)), r"'layer0.weight' are float64\(100,\), expected float3"
    ),
    "nan-weights": Misbehaviour("train", change_weights(with_nan), r"non-finite weights: 12 of 400 values"),
    "impostor": Misbehaviour(
        "both", impersonate_site_00, r"claims site-id 'toy-00', but node \d+ is site 'toy-01' \(by its first reply\)", 2
    ),
    "evaluate-nan-count": Misbehaviour(
        "evaluate", set_metric("num-examples", math.nan), r"'num-examples' is nan, not a finite"
    ),
    "secagg-nan-count": Misbehaviour(
        "train", set_metric("num-examples", math.nan), r"'num-examples' is nan", run_config={"secure-aggregation": True}
    ),
}
OVERFLOW = "overflowing-aggregate"  # an aggregate with infinities (fault injected into the strategy)
compose_strategy = server.federation.compose_strategy  # the real one, which OVERFLOW's patch wraps


@dataclass(frozen=True)
class Hostility(ToyBehaviour):
    """The toy behaviour, plus which misbehaviour the hostile site shows (names travel in the config)."""

    misbehaviour: str = ""

    def as_config(self) -> dict[str, Any]:
        return {**super().as_config(), "hostile-misbehaviour": self.misbehaviour}


def make_hostile_client_app() -> ClientApp:
    """The toy sites; partition ``HOSTILE`` spoils its replies after its own mods have passed them."""
    toy = make_toy_client_app()
    app = ClientApp()

    def spoiled(msg: Message, context: Context) -> Message:
        reply = toy(msg, context)
        config = msg.content.config_records.get("config")
        if (
            reply.has_error()
            or config is None
            or "site" not in reply.content  # a SecAgg+ key exchange, not the site's answer
            or int(context.node_config["partition-id"]) != HOSTILE
        ):
            return reply
        misbehaviour = MISBEHAVIOURS.get(str(config.get("hostile-misbehaviour", "")))
        if (
            misbehaviour is not None
            and misbehaviour.phase in (msg.metadata.message_type, "both")
            and record_int(config["server-round"]) >= misbehaviour.from_round
        ):
            misbehaviour.act(reply.content)
        return reply

    app.train()(spoiled)
    app.evaluate()(spoiled)
    return app


@dataclass
class Run:
    summary: dict[str, Any]
    received: list[Message]
    run_dir: Path

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.summary["rounds_detail"]

    def weights_after(self, server_round: int) -> dict[str, np.ndarray]:
        with np.load(self.run_dir / "checkpoints" / f"round-{server_round:04d}.npz") as saved:
            return {name: saved[name] for name in saved.files}


def overflowing_strategy(config: Any) -> Any:
    """The run's own strategy, whose first aggregate overflows (as an unbounded server step could)."""
    composed = compose_strategy(config)
    aggregate_train = composed.strategy.aggregate_train

    def overflowing(server_round: int, replies: Any) -> Any:
        arrays, metrics = aggregate_train(server_round, replies)
        if server_round == 1 and arrays is not None:
            arrays = ArrayRecord({k: Array(np.full_like(v.numpy(), np.inf)) for k, v in arrays.items()})
        return arrays, metrics

    composed.strategy.aggregate_train = overflowing  # type: ignore[method-assign]
    return composed


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run | str]:
    """Every scenario, and an honest run, through the real ServerApp in one simulation of three toy sites."""
    root = tmp_path_factory.mktemp("hostile-runs")
    results: dict[str, Run | str] = {}
    scenarios: dict[str, dict] = {"honest": {}, OVERFLOW: {}}
    scenarios |= {name: m.run_config or {} for name, m in MISBEHAVIOURS.items()}

    def server_main(grid: Grid, context: Context) -> None:
        for name, overrides in scenarios.items():
            toy_grid = ToyGrid(grid, Hostility(misbehaviour=name))
            run_config = {**BASE, "run-dir": str(root / name), **overrides}
            try:
                with pytest.MonkeyPatch.context() as patch:
                    if name == OVERFLOW:
                        patch.setattr(server.federation, "compose_strategy", overflowing_strategy)
                    app = make_server_app(run_config, initial_arrays=toy_model(NUM_PARAMS))
                    app(cast(Grid, toy_grid), context)  # a Grid by duck typing
                summary = json.loads((root / name / "summary.json").read_text())
                results[name] = Run(summary, toy_grid.received, root / name)
            except Exception:
                results[name] = traceback.format_exc()

    server_app = ServerApp()
    server_app.main()(server_main)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # as cmrfl.simulation: Ray's future default
        run_simulation(
            server_app=server_app,
            client_app=make_hostile_client_app(),
            num_supernodes=NUM_SITES,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    return results


def finished(runs: dict[str, Run | str], name: str) -> Run:
    run = runs[name]
    if isinstance(run, str):
        pytest.fail(f"run {name} stopped:\n{run}")
    return run


def node_of(runs: dict[str, Run | str], site: str) -> int:
    """A site's node id, from the honest run's replies (node ids hold for the whole simulation)."""
    honest = finished(runs, "honest")
    return next(r.metadata.src_node_id for r in honest.received if str(r.content["site"]["site-id"]) == site)


INITIAL = {name: array.numpy() for name, array in toy_model(NUM_PARAMS).items()}


def honest_mean_update(server_round: int) -> dict[str, np.ndarray]:
    shapes = {name: array.shape for name, array in INITIAL.items()}
    updates = [toy_update(p, server_round, shapes, 0.01) for p in HONEST]
    weights = np.array([toy_num_examples(p) for p in HONEST], dtype=np.float64)
    return {name: sum(w * u[name] for w, u in zip(weights, updates, strict=True)) / weights.sum() for name in shapes}


@pytest.mark.parametrize("name", list(MISBEHAVIOURS))
def test_a_spoiled_reply_is_refused_as_its_nodes_failure_and_the_round_goes_on_without_it(runs, name):
    run, misbehaviour = finished(runs, name), MISBEHAVIOURS[name]
    hostile_node = node_of(runs, "toy-01")
    assert [entry["round"] for entry in run.history] == list(range(1, ROUNDS + 1))
    spoiled = ["train", "evaluate"] if misbehaviour.phase == "both" else [misbehaviour.phase]
    for entry in run.history[misbehaviour.from_round - 1 :]:
        refused = [f for f in entry["failures"] if f["node_id"] == hostile_node]
        assert sorted(f["phase"] for f in refused) == sorted(spoiled), entry["failures"]
        assert all(re.search(misbehaviour.reason, f["reason"]) for f in refused), refused
        for phase in spoiled:
            assert sorted(entry[phase]["sites"]) == ["toy-00", "toy-02"]
    if "train" in spoiled:  # the global step is the honest sites' weighted mean update
        server_round = misbehaviour.from_round
        before = run.weights_after(server_round - 1) if server_round > 1 else INITIAL
        secure = bool((misbehaviour.run_config or {}).get("secure-aggregation"))
        for array, after in run.weights_after(server_round).items():
            # Under SecAgg+ the mean is exact up to its quantisation (tests/test_secure_aggregation.py).
            step = after.astype(np.float64) - before[array]
            np.testing.assert_allclose(step, honest_mean_update(server_round)[array], atol=1e-4 if secure else 1e-6)
    final = run.weights_after(ROUNDS)
    assert all(np.isfinite(a).all() and a.dtype == np.float32 for a in final.values())


def test_under_secagg_a_refused_reply_is_a_dropout_and_its_vector_stays_out_of_the_sum(runs):
    run = finished(runs, "secagg-nan-count")
    (refused,) = run.history[0]["failures"]
    assert refused["stage"] == "collect_masked_vectors"
    assert refused["site"] == "toy-01"
    assert run.history[0]["secure_aggregation"] == {"sites": 2, "sampled": 3}


def test_a_node_cannot_file_its_figures_under_another_sites_name(runs):
    run = finished(runs, "impostor")
    hostile, impersonated = node_of(runs, "toy-01"), node_of(runs, "toy-00")
    second = run.history[1]
    assert second["evaluate"]["sites"]["toy-00"]["loss"] == pytest.approx(0.5)  # toy-00's own, not the impostor's 0.9
    refused = [f for f in second["failures"] if f["node_id"] == hostile]
    assert {(f["site"], f["claimed_site"]) for f in refused} == {("toy-01", "toy-00")}
    assert all(f"node {hostile} is site 'toy-01'" in f["reason"] for f in refused)
    assert impersonated not in {f["node_id"] for f in second["failures"]}


def test_a_non_finite_aggregate_is_neither_adopted_nor_checkpointed(runs):
    run = finished(runs, OVERFLOW)
    first, second = run.history
    assert first["aggregation_failure"].startswith("non-finite aggregate: 400 of 400 values are NaN or infinite")
    assert "previous global model was kept" in first["aggregation_failure"]
    assert "aggregation_failure" not in second
    for name, kept in run.weights_after(1).items():
        np.testing.assert_array_equal(kept, INITIAL[name])
    assert all(np.isfinite(a).all() for a in run.weights_after(2).values())


def test_a_checkpoint_of_non_finite_weights_is_refused(tmp_path):
    arrays = ArrayRecord({"w": Array(np.array([0.0, np.nan], np.float32))})
    with pytest.raises(ValueError, match=r"round 3: not checkpointed: non-finite weights: 1 of 2 values"):
        CheckpointStore(tmp_path, "fingerprint").save(3, arrays, [])
    assert not (tmp_path / "checkpoints" / "round-0003.npz").exists()


# --- the checks, on single replies ---------------------------------------------------

MODEL = toy_model(8)
TRAIN = train_reply_form(MODEL, MODEL, adaptive_clipping=False)


def train_reply(num_examples: float = 12, arrays: ArrayRecord = MODEL) -> RecordDict:
    content = TrainReply("site-01", 12, 0.3, 1.0, 12.0, privacy_metrics(None)).to_record(arrays)
    content.metric_records["metrics"]["num-examples"] = num_examples
    return content


@pytest.mark.parametrize(
    ("count", "reason"),
    [
        (math.nan, "metric 'num-examples' is nan, not a finite number"),
        (-math.inf, "metric 'num-examples' is -inf, not a finite number"),
        (-4, "num-examples is -4: expected a whole number from 1 to 10,000,000"),
        (0, "num-examples is 0: expected a whole number from 1 to 10,000,000"),
        (2.5, "num-examples is 2.5: expected a whole number from 1 to 10,000,000"),
        (MAX_NUM_EXAMPLES + 1, "num-examples is 10000001: expected a whole number from 1 to 10,000,000"),
    ],
)
def test_a_train_reply_needs_a_whole_positive_bounded_example_count(count, reason):
    assert reply_problem(train_reply(count), TRAIN) == reason


def test_a_reply_with_the_protocols_form_is_accepted():
    assert reply_problem(train_reply(MAX_NUM_EXAMPLES), TRAIN) is None
    evaluation = RecordDict({"metrics": MetricRecord({"num-examples": 0.0, "loss-sum": 0.0, "loss-count": 0.0})})
    assert reply_problem(evaluation, evaluate_reply_form(["loss"])) is None  # a site may validate on no case


def test_weights_must_be_the_global_models_arrays_and_finite():
    first = next(iter(MODEL))
    renamed = ArrayRecord({("x" if n == first else n): a for n, a in MODEL.items()})
    assert reply_problem(train_reply(arrays=renamed), TRAIN) == (
        f"weights do not match the global model: missing {first}; unexpected x"
    )
    reordered = ArrayRecord(dict(reversed(list(MODEL.items()))))
    assert reply_problem(train_reply(arrays=reordered), TRAIN) == "weights are not in the global model's order"
    reshaped = ArrayRecord({n: Array(a.numpy().reshape(1, -1)) for n, a in MODEL.items()})
    assert reply_problem(train_reply(arrays=reshaped), TRAIN) == (
        f"weights {first!r} are float32(1, 2), expected float32(2,)"
    )
    nan = ArrayRecord({n: Array(np.full_like(a.numpy(), np.nan)) for n, a in MODEL.items()})
    assert reply_problem(train_reply(arrays=nan), TRAIN) == (
        f"non-finite weights: 8 of 8 values are NaN or infinite, in 4 array(s), first {first!r}"
    )


def test_evaluate_metrics_are_the_tasks_sums_and_counts_finite_and_whole():
    form = evaluate_reply_form(["dice_scar"])
    keys = {"num-examples": 4.0, "dice-scar-sum": 3.0, "dice-scar-count": 4.0, "loss-sum": 1.0, "loss-count": 4.0}
    assert reply_problem(RecordDict({"metrics": MetricRecord({**keys, "dice-scar-count": 1.5})}), form) == (
        "metric 'dice-scar-count' is 1.5: expected a whole number from 0 to 10,000,000"
    )
    assert reply_problem(RecordDict({"metrics": MetricRecord({**keys, "dice-scar-sum": math.inf})}), form) == (
        "metric 'dice-scar-sum' is inf, not a finite number"
    )
    del keys["loss-count"]
    assert reply_problem(RecordDict({"metrics": MetricRecord({**keys, "extra": 1.0})}), form) == (
        "evaluate metrics do not have the protocol's keys: missing loss-count; unexpected extra"
    )


@dataclass(frozen=True)
class Registration:  # the two fields the server reads of Flower's NodeInfo
    node_id: int
    name: str


def test_a_registered_name_is_the_site_whatever_the_reply_claims():
    identities = SiteIdentities()
    identities.learn_registrations([Registration(7, "site-a"), Registration(8, "")])
    refused = identities.check_claims({7: "site-b", 8: "site-a"})
    assert refused == {
        7: "claims site-id 'site-b', but node 7 is site 'site-a' (registered with the SuperLink)",
        8: "claims site-id 'site-a', which is node 7's (registered with the SuperLink)",
    }
    assert identities.check_claims({7: "site-a", 8: "site-b"}) == {}
    assert identities.known() == {7: "site-a", 8: "site-b"}


def test_unregistered_nodes_keep_their_first_claim_and_cannot_race_for_a_name():
    identities = SiteIdentities()
    assert identities.check_claims({1: "site-a", 2: "site-x", 3: "site-x"}) == {
        2: "claims site-id 'site-x' in the same exchange as node(s) 3",
        3: "claims site-id 'site-x' in the same exchange as node(s) 2",
    }
    assert identities.check_claims({1: "site-b", 2: "site-a", 3: None}) == {
        1: "claims site-id 'site-b', but node 1 is site 'site-a' (by its first reply)",
        2: "claims site-id 'site-a', which is node 1's (by its first reply)",
        3: "its reply names no site (no 'site-id' in its 'site' record)",
    }
    assert identities.known() == {1: "site-a"}
