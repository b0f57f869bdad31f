"""DP-SGD training throughput (slices/s) against non-private training, same network, same data.

One synthetic site, ingested for real; the LGE task trains on it first without DP
(the baseline, with the task's usual mixed precision on CUDA), then with
patient-level DP-SGD under each of Opacus' per-sample-gradient modes that the U-Net
supports ("hooks", "functorch", "ghost" = fast gradient / ghost clipping; "ew",
expanded weights, is probed and reported as unsupported if it fails). DP-SGD trains
in float32. Throughput is slices processed per second of ``task.train`` (one slice
per sampled patient under DP-SGD; Poisson batches vary around ``--batch-size``),
after warm-up steps that are not timed; each figure is the best of ``--repeats``.

    .venv/bin/python benchmarks/dp_sgd_throughput.py [--device cpu|cuda] [--steps 20 --batch-size 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import make_sites, save
from cmr.store import CaseStore
from privacy.dp_sgd import GRAD_SAMPLE_MODES, DpSgdRequest, plan_round
from tasks import get_task
from tasks.base import TrainSettings, pick_device

warnings.filterwarnings("ignore", message="Full backward hook is firing")
warnings.filterwarnings("ignore", message="Secure RNG turned off")


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def slices_per_second(store: CaseStore, device: torch.device, settings: TrainSettings, repeats: int) -> float:
    task = get_task("lge")
    best = 0.0
    for _ in range(repeats):
        model = task.build_model()
        _synchronise(device)
        started = time.perf_counter()
        outcome = task.train(model, store, settings, device)
        _synchronise(device)
        best = max(best, outcome.num_examples_seen / (time.perf_counter() - started))
    return best


def probe_expanded_weights(device: torch.device) -> str:
    """Whether Opacus' "ew" mode can run one step of the U-Net (it cannot differentiate conv_transpose2d)."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    model = get_task("lge").build_model().to(device)
    data = TensorDataset(torch.rand(4, 1, 128, 128), torch.randint(0, 3, (4, 128, 128)))
    try:
        module, optimizer, _ = PrivacyEngine().make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(data, 2),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            grad_sample_mode="ew",
        )
        images, labels = next(iter(DataLoader(data, 2)))
        torch.nn.functional.cross_entropy(module(images.to(device)), labels.to(device)).backward()
        optimizer.step()
    except Exception as failure:
        return f"unsupported: {type(failure).__name__}: {failure}"
    return "ran"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="slices (non-private) / expected patients (DP)")
    parser.add_argument("--cases", type=int, default=48, help="patients at the synthetic site")
    parser.add_argument("--modes", default=",".join(GRAD_SAMPLE_MODES))
    args = parser.parse_args()
    device = pick_device(args.device)
    modes = [m for m in args.modes.split(",") if m]

    with tempfile.TemporaryDirectory() as scratch:
        store = CaseStore(make_sites(Path(scratch), 1, args.cases, seed=0)[0])
        task = get_task("lge")
        patients = task.training_patients(store)

        def dp_settings(mode: str, steps: int) -> TrainSettings:
            request = DpSgdRequest(noise_multiplier=1.0, target_epsilon=0.0, grad_sample_mode=mode)
            plan = plan_round(request, patients, args.batch_size, local_epochs=10_000, max_steps=steps)
            return TrainSettings(batch_size=args.batch_size, privacy=plan)

        plain = TrainSettings(batch_size=args.batch_size, max_steps=args.steps, local_epochs=10_000)
        task.train(task.build_model(), store, TrainSettings(batch_size=args.batch_size, max_steps=args.warmup), device)
        figures = {"non-private": slices_per_second(store, device, plain, args.repeats)}
        for mode in modes:
            task.train(task.build_model(), store, dp_settings(mode, args.warmup), device)
            figures[f"dp-sgd/{mode}"] = slices_per_second(store, device, dp_settings(mode, args.steps), args.repeats)
        expanded_weights = probe_expanded_weights(device)

    baseline = figures["non-private"]
    print(
        f"device {device}, {torch.get_num_threads()} threads, {patients} training patients, "
        f"batch {args.batch_size}, {args.steps} steps, best of {args.repeats}"
    )
    for name, rate in figures.items():
        print(f"{name:>20}: {rate:8.1f} slices/s   ({rate / baseline:.2f} × non-private)")
    print(f"{'dp-sgd/ew':>20}: {expanded_weights}")
    save(
        f"dp_sgd_throughput_{device.type}",
        {
            "settings": {**vars(args), "training_patients": patients},
            "slices_per_second": figures,
            "ratio_to_non_private": {name: rate / baseline for name, rate in figures.items()},
            "expanded_weights": expanded_weights,
            "notes": "non-private uses the task's mixed precision on CUDA; DP-SGD runs in float32",
        },
    )


if __name__ == "__main__":
    main()
