"""Round time under SecAgg+ against plain FedAvg, by number of sites and model size.

Measures the training half of a round (sample, send, receive, aggregate) with toy
sites (tests/toy_federation.py) whose 'training' is a random update of the model's
size, so the time is the aggregation protocol's, not the network's: plain FedAvg
(weights in the clear, the server's update guard) against SecAgg+ (four exchanges,
masking at the sites, unmasking at the server) with the run's default settings
(3 shares, threshold 2), and, for the smaller model, SecAgg+ with every sampled site
holding a share (the classic SecAgg graph), to show how the neighbourhood size drives
the cost. All sites share this machine's cores (Flower's simulation runtime).

    python -m benchmarks.secagg_round_time            # 3, 10, 20 sites; 0.1M and 1M parameters
    python -m benchmarks.secagg_round_time --quick    # 3 and 10 sites, 0.1M only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from benchmarks._common import save
from privacy.settings import PrivacySettings, SecureAggregationSettings, site_instructions
from server.config import FederationConfig
from server.federation import screen_updates
from server.secure_aggregation import run_secure_training

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the toy federation is a test fixture
from toy_federation import run_toy_simulation, toy_model

TIMEOUT_S = 600.0


def full_graph(num_sites: int) -> SecureAggregationSettings:
    """Every sampled site holds a share of every other's secrets (odd share count)."""
    shares = num_sites if num_sites % 2 else num_sites - 1
    shares = max(shares, 3)
    return SecureAggregationSettings(num_shares=shares, reconstruction_threshold=shares // 2 + 1)


def train_half_round(
    grid: Grid,
    server_round: int,
    arrays: ArrayRecord,
    num_sites: int,
    population: int,
    secure: SecureAggregationSettings | None,
) -> float:
    privacy = PrivacySettings.from_run_config(FederationConfig())
    strategy = FedAvg(fraction_train=num_sites / population, min_train_nodes=num_sites, min_available_nodes=population)
    config = ConfigRecord({"server-round": server_round, **site_instructions(privacy)})
    started = time.perf_counter()
    instructions = list(strategy.configure_train(server_round, arrays, config, grid))
    if secure is None:
        replies = list(grid.send_and_receive(instructions, timeout=TIMEOUT_S))
        accepted, failures = screen_updates(server_round, replies, arrays, privacy.max_update_norm)
    else:
        result = run_secure_training(
            grid, server_round, instructions, arrays, secure, uniform_site_weights=False, timeout=TIMEOUT_S
        )
        accepted, failures = result.replies, result.failures
    aggregated, _ = strategy.aggregate_train(server_round, accepted)
    seconds = time.perf_counter() - started
    if aggregated is None or failures or len(accepted) != num_sites:
        raise RuntimeError(f"{num_sites} sites, round {server_round}: {failures or 'no aggregate'}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 10, 20])
    parser.add_argument("--params", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per setting (after one warm-up)")
    parser.add_argument("--quick", action="store_true", help="3 and 10 sites, 0.1M parameters, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.sites, args.params, args.rounds = [3, 10], [100_000], 2
    population = max(args.sites)
    rows: list[dict[str, Any]] = []

    def server_main(grid: Grid, context: Context) -> None:
        server_round = 0
        for num_params in args.params:
            arrays = toy_model(num_params)
            for num_sites in args.sites:
                modes: dict[str, SecureAggregationSettings | None] = {
                    "plain": None,
                    "secagg": SecureAggregationSettings(),
                }
                if num_params == min(args.params) and num_sites > 3:
                    modes["secagg_full_graph"] = full_graph(num_sites)
                row: dict[str, Any] = {"params": num_params, "sites": num_sites}
                for mode, secure in modes.items():
                    times = []
                    for timed in range(args.rounds + 1):
                        server_round += 1
                        seconds = train_half_round(grid, server_round, arrays, num_sites, population, secure)
                        if timed:  # the first is a warm-up
                            times.append(seconds)
                    row[f"{mode}_s"] = round(statistics.median(times), 3)
                row["ratio"] = round(row["secagg_s"] / row["plain_s"], 2)
                if "secagg_full_graph_s" in row:
                    row["ratio_full_graph"] = round(row["secagg_full_graph_s"] / row["plain_s"], 2)
                rows.append(row)
                print(_format(row), flush=True)

    print(f"{'params':>9} {'sites':>5} {'plain s':>8} {'SecAgg+ s':>9} {'ratio':>6} {'full-graph s':>12} {'ratio':>6}")
    started = time.perf_counter()
    run_toy_simulation(population, server_main)
    growth = _growth(rows)
    for line in growth["notes"]:
        print(line)
    save(
        "secagg_round_time",
        {
            "what": "median seconds of the training half of a round (sample, exchange, aggregate), toy sites",
            "secagg_defaults": {"num_shares": 3, "reconstruction_threshold": 2, "quantization_range": 2**22},
            "timed_rounds": args.rounds,
            "population": population,
            "rows": rows,
            "growth": growth,
            "total_seconds": round(time.perf_counter() - started, 1),
        },
    )


def _format(row: dict[str, Any]) -> str:
    full = (
        f"{row['secagg_full_graph_s']:>12.3f} {row['ratio_full_graph']:>6.2f}" if "secagg_full_graph_s" in row else ""
    )
    return (
        f"{row['params']:>9} {row['sites']:>5} {row['plain_s']:>8.3f} {row['secagg_s']:>9.3f} "
        f"{row['ratio']:>6.2f} {full}"
    )


def _growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How each mode's time grows from the fewest to the most sites, per model size."""
    growth: dict[str, Any] = {"notes": []}
    for num_params in sorted({r["params"] for r in rows}):
        by_sites = sorted((r for r in rows if r["params"] == num_params), key=lambda r: r["sites"])
        first, last = by_sites[0], by_sites[-1]
        if first is last:
            continue
        site_factor = last["sites"] / first["sites"]
        entry = {
            "sites": [first["sites"], last["sites"]],
            "plain_time_factor": round(last["plain_s"] / first["plain_s"], 2),
            "secagg_time_factor": round(last["secagg_s"] / first["secagg_s"], 2),
            "ratio": [first["ratio"], last["ratio"]],
        }
        growth[str(num_params)] = entry
        growth["notes"].append(
            f"{num_params} params, {first['sites']}→{last['sites']} sites (x{site_factor:.1f}): plain x"
            f"{entry['plain_time_factor']}, SecAgg+ x{entry['secagg_time_factor']}, ratio "
            f"{first['ratio']}→{last['ratio']}"
        )
    return growth


if __name__ == "__main__":
    main()
