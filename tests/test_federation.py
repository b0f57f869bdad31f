"""Federated training on Flower's simulation runtime: rounds, per-site metrics, resume."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from flwr.app import MetricRecord, RecordDict

from cmrfl.simulation import run_simulated_federation
from server.site_metrics import aggregate_site_metrics, means_from_sums
from tasks import get_task

FAST = {"max-local-steps": 4, "batch-size": 4, "min-train-sites": 3, "min-available-sites": 3}


class Interrupted(RuntimeError):
    pass


def test_consortium_means_are_exact_not_means_of_site_means():
    site_a = RecordDict({"m": MetricRecord({"num-examples": 3.0, "dice-sum": 2.7, "dice-count": 3.0})})
    site_b = RecordDict({"m": MetricRecord({"num-examples": 1.0, "dice-sum": 0.1, "dice-count": 1.0})})
    pooled = means_from_sums(dict(aggregate_site_metrics([site_a, site_b], "num-examples")))
    assert pooled["dice"] == pytest.approx((2.7 + 0.1) / 4)


def test_a_metric_undefined_at_every_site_is_nan_not_zero():
    site = RecordDict({"m": MetricRecord({"num-examples": 2.0, "dice-scar-sum": 0.0, "dice-scar-count": 0.0})})
    assert math.isnan(means_from_sums(dict(aggregate_site_metrics([site], "num-examples")))["dice-scar"])


@pytest.mark.slow
def test_two_federated_rounds_run_in_process(ingested_sites: list[Path], tmp_path: Path):
    run_dir = tmp_path / "run"
    run_simulated_federation(ingested_sites, {**FAST, "num-server-rounds": 2, "run-dir": str(run_dir), "resume": False})
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2
    assert summary["sites"] == ["site-01", "site-02", "site-03"]
    # SecAgg+ is on by default: every round's weights were aggregated under it, no site lost.
    assert summary["privacy"]["secure_aggregation"]["enabled"] is True
    for entry in summary["rounds_detail"]:
        assert entry["secure_aggregation"] == {"sites": 3, "sampled": 3}
        assert entry["failures"] == []
        assert sorted(entry["train"]["sites"]) == summary["sites"]  # scalars still per site
    for site in summary["sites"]:
        final = summary["final"]["per_site"][site]
        assert final["cases_evaluated"] > 0
        if final["cases_evaluated"] >= 2:
            assert 0.0 <= final["dice_myocardium"] <= 1.0
        else:  # a site-wide sum over one case would be that case's value: withheld
            assert final["dice_myocardium"] is None
    assert summary["final"]["overall"]["cases_evaluated"] == sum(
        m["cases_evaluated"] for m in summary["final"]["per_site"].values()
    )
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * (3 + 1)  # per round: three sites and the consortium
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("round-*.npz")) == [
        "round-0001.npz",
        "round-0002.npz",
    ]
    saved = torch.load(run_dir / "final_model.pt")
    get_task("lge").build_model().load_state_dict(saved["state_dict"])  # loads: same network
    assert (run_dir / "dice_per_round.png").stat().st_size > 10_000


@pytest.mark.slow
def test_resume_continues_after_the_last_completed_round(ingested_sites: list[Path], tmp_path: Path):
    run_dir = tmp_path / "run"
    config = {**FAST, "num-server-rounds": 3, "run-dir": str(run_dir)}

    def interrupt_after_round_one(history):
        if len(history) == 1:
            raise Interrupted("operator stopped the server")

    with pytest.raises(RuntimeError):  # Interrupted, or Flower's RuntimeError around it
        run_simulated_federation(ingested_sites, {**config, "resume": False}, on_round_end=interrupt_after_round_one)
    assert not (run_dir / "summary.json").exists()
    first_round = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["history"][0]

    rounds_run = []
    run_simulated_federation(
        ingested_sites, {**config, "resume": True}, on_round_end=lambda h: rounds_run.append(h[-1]["round"])
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert rounds_run == [2, 3]  # round 1 was not trained again
    assert summary["resumed_from_round"] == 1
    assert [entry["round"] for entry in summary["rounds_detail"]] == [1, 2, 3]
    kept = summary["rounds_detail"][0]["evaluate"]["global"]["dice-myocardium"]
    assert kept == first_round["evaluate"]["global"]["dice-myocardium"]


@pytest.mark.parametrize(
    ("cores", "sites", "actors", "threads"),
    [(2, 1, 1, 2), (2, 2, 2, 1), (2, 3, 3, 1), (2, 7, 4, 1), (8, 3, 3, 2)],
)
def test_every_site_gets_its_own_actor_up_to_two_per_core_and_a_share_of_the_cores(
    monkeypatch, cores, sites, actors, threads
):
    """Three sites on two cores train at once (no second wave); Ray must fit the actors."""
    from cmrfl import simulation

    monkeypatch.setattr(simulation.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(simulation.torch.cuda, "device_count", lambda: 0)
    config = simulation.backend_config_for(sites)
    per_site = config["client_resources"]["num_cpus"]
    assert config["init_args"]["num_cpus"] == cores
    # Flower's actor pool: int(node CPUs / per-site CPUs); Ray: CPUs in units of 1/10000.
    assert int(cores / per_site) == actors
    assert round(per_site * 10_000) * actors <= cores * 10_000
    assert max(math.floor(per_site), 1) == threads  # Ray's OMP_NUM_THREADS for the actor
