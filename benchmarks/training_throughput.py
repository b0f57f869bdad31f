"""LGE training throughput (slices/s), and evaluation time per case: CPU against CUDA
(mixed precision) when present.

Both are measured in the same run on the same synthetic site, the CPU first as the
baseline. The first steps (warm-up: allocator, cuDNN autotuning, caches) are not timed.

    .venv/bin/python benchmarks/training_throughput.py [--steps 60 --batch-size 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import make_sites, save
from cmr.store import CaseStore
from tasks import get_task
from tasks.base import TrainSettings


def slices_per_second(store: CaseStore, device: torch.device, steps: int, warmup: int, batch_size: int) -> float:
    task = get_task("lge")
    model = task.build_model()
    task.train(model, store, TrainSettings(batch_size=batch_size, max_steps=warmup), device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    outcome = task.train(model, store, TrainSettings(batch_size=batch_size, max_steps=steps, local_epochs=100), device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return outcome.num_examples_seen / (time.perf_counter() - started)


def seconds_per_case(store: CaseStore, device: torch.device) -> float:
    """Scoring the site's validation cases on their original grid (as every round does)."""
    task = get_task("lge")
    model = task.build_model()
    task.evaluate(model, store, device, "benchmark")  # warm-up (and the preprocessing cache)
    started = time.perf_counter()
    evaluation = task.evaluate(model, store, device, "benchmark")
    return (time.perf_counter() - started) / max(evaluation.num_examples, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cases", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        store = CaseStore(make_sites(Path(scratch), 1, args.cases, seed=0)[0])
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        figures = {d.type: slices_per_second(store, d, args.steps, args.warmup, args.batch_size) for d in devices}
        evaluation = {d.type: seconds_per_case(store, d) for d in devices}
    for device, rate in figures.items():
        print(
            f"{device:>5}: {rate:8.1f} slices/s training (batch {args.batch_size}), "
            f"{evaluation[device] * 1000:6.1f} ms a validation case"
        )
    if "cuda" in figures:
        print(
            f"cuda/cpu = {figures['cuda'] / figures['cpu']:.1f}x training, "
            f"{evaluation['cpu'] / evaluation['cuda']:.1f}x evaluation"
        )
    save(
        "training_throughput",
        {"settings": vars(args), "slices_per_second": figures, "evaluation_seconds_per_case": evaluation},
    )


if __name__ == "__main__":
    main()
