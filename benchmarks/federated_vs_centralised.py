"""Federated (FedAvg) vs centralised (pooled data) vs local-only training.

Same synthetic sites, same network, same number of passes over each site's
training cases (R rounds × 1 local epoch = R epochs). Every model is evaluated
on every site's validation cases. Also: the wall time of the federated run
against centralised training of the same work; the ratio is the platform's
overhead (Flower messaging, Ray actors, per-round evaluation at every site).

    .venv/bin/python benchmarks/federated_vs_centralised.py [--sites 3 --cases 24 --rounds 20]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import make_sites, save
from cmr.store import CaseStore
from cmrfl.simulation import run_simulated_federation
from tasks import get_task
from tasks.base import TrainSettings

METRICS = ("dice_myocardium", "dice_scar", "scar_burden_abs_error")


def pool_sites(site_dirs: list[Path], pooled_dir: Path) -> CaseStore:
    """All sites' cases in one store: what centralised training would see."""
    pooled = CaseStore(pooled_dir)
    for site_dir in site_dirs:
        for case in CaseStore(site_dir):
            entry = case.entry
            pooled.put(
                entry.case_id,
                case.image,
                case.mask,
                (entry.row_spacing_mm, entry.column_spacing_mm, entry.slice_spacing_mm),
                entry.attributes,
                entry.case_labels,
            )
    return pooled


def evaluate_everywhere(task, model, site_dirs: list[Path]) -> dict[str, dict[str, float]]:
    device = torch.device("cpu")
    per_site = {}
    all_records = []
    for site_dir in site_dirs:
        evaluation = task.evaluate(model, CaseStore(site_dir), device, site_dir.name)
        all_records += evaluation.records
        per_site[site_dir.name] = _means(evaluation.records)
    per_site["all sites"] = _means(all_records)
    return per_site


def _means(records) -> dict[str, float]:
    out = {}
    for name in METRICS:
        values = [r.metrics[name] for r in records if math.isfinite(r.metrics.get(name, math.nan))]
        out[name] = float(np.mean(values)) if values else math.nan
    return out


def train_for(task, store: CaseStore, epochs: int, seed: int, settings: dict) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(seed)
    model = task.build_model()
    started = time.perf_counter()
    task.train(model, store, TrainSettings(local_epochs=epochs, seed=seed, **settings), torch.device("cpu"))
    return model, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    task = get_task("lge")
    settings = {"batch_size": 8, "learning_rate": 0.002}

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        site_dirs = make_sites(root, args.sites, args.cases, args.seed)

        started = time.perf_counter()
        run_dir = root / "federated"
        run_simulated_federation(
            site_dirs,
            {
                "num-server-rounds": args.rounds,
                "min-train-sites": args.sites,
                "min-available-sites": args.sites,
                "seed": args.seed,
                "run-dir": str(run_dir),
                "resume": False,
            },
            flower_log=run_dir / "flower.log",
        )
        federated_seconds = time.perf_counter() - started
        federated_model = task.build_model()
        federated_model.load_state_dict(torch.load(run_dir / "final_model.pt")["state_dict"])

        pooled = pool_sites(site_dirs, root / "pooled")
        centralised_model, centralised_seconds = train_for(task, pooled, args.rounds, args.seed, settings)

        results = {
            "federated": evaluate_everywhere(task, federated_model, site_dirs),
            "centralised": evaluate_everywhere(task, centralised_model, site_dirs),
        }
        for site_dir in site_dirs:
            local_model, _ = train_for(task, CaseStore(site_dir), args.rounds, args.seed, settings)
            results[f"local-only {site_dir.name}"] = evaluate_everywhere(task, local_model, site_dirs)

    print(f"\n{'model':<24}{'evaluated on':<14}" + "".join(f"{m:>24}" for m in METRICS))
    for model_name, per_site in results.items():
        for site, metrics in per_site.items():
            print(f"{model_name:<24}{site:<14}" + "".join(f"{metrics[m]:>24.3f}" for m in METRICS))
    overhead = federated_seconds / centralised_seconds
    print(
        f"\nwall time: federated {federated_seconds:.1f} s, centralised {centralised_seconds:.1f} s "
        f"for the same {args.rounds} epochs → federated/centralised = {overhead:.2f}x"
    )
    save(
        "federated_vs_centralised",
        {
            "settings": vars(args),
            "dice_and_error": results,
            "wall_seconds": {"federated": federated_seconds, "centralised": centralised_seconds},
            "federated_over_centralised_time": overhead,
        },
    )


if __name__ == "__main__":
    main()
