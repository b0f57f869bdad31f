"""Classical MOLLI fit versus the T1-mapping network under increasing motion.

Training (central, through the task's own code): a phantom consortium of mapping
hospitals (``generate_mapping_consortium``: native and post-contrast MOLLI per
examination, breathing and cardiac motion drawn up to ``--train-motion-mm``) is written
as DICOM, ingested into case stores as a site does, and the network of the ``mapping``
task is trained on the union of the sites' stores with its synthetic per-frame motion
augmentation, for ``--steps`` optimiser steps in three equal phases of falling
learning rate.

Held out: other examinations (``simulate_mapping_case`` with seeds no training case
uses; 1.5 T and 3 T, both sexes, heart rates 50-100 bpm), each rendered at every motion
amplitude in ``MOTION_LEVELS_MM`` with the same anatomy and noise seed, so that only the
motion differs. Each native and post-contrast series is mapped by the vectorised
three-parameter fit with Look-Locker correction (``cmr.fitting.fit_t1``) and by the
network, and scored against the true T1 maps by the task's own per-study measures
(``tasks.mapping.metrics.study_metrics``): myocardial T1 mean absolute error (per pixel)
and bias (ROI mean), blood T1 error, post-contrast myocardial error, ECV error.

Timing: seconds per map on this machine's CPU, fit and network (one 96 × 96 series).

    python -m benchmarks.mapping_motion                 # ~5 min on 2 busy cores
    python -m benchmarks.mapping_motion --quick         # a smoke run
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import machine, save
from cmr.fitting import fit_t1
from cmr.ingest import ingest_site
from cmr.phantom.anatomy import TISSUE_TO_LABEL
from cmr.phantom.mapping import simulate_mapping_case
from cmr.phantom.mapping_consortium import generate_mapping_consortium, reference_t1_ms
from cmr.store import CaseStore
from tasks.base import TrainSettings
from tasks.mapping import MotionRobustT1Mapping
from tasks.mapping.metrics import study_metrics

MOTION_LEVELS_MM = (0.0, 2.0, 4.0, 6.0)
LEARNING_RATES = (2e-3, 1e-3, 5e-4)
HELD_OUT_SEED_BASE = 900_000_000  # far from any consortium case seed
MEASURES = (
    "myocardial_t1_abs_error_ms",
    "myocardial_t1_bias_ms",
    "blood_t1_abs_error_ms",
    "post_myocardial_t1_abs_error_ms",
    "ecv_abs_error_percent",
)


def train_network(
    root: Path, sites: int, cases_per_site: int, train_motion_mm: float, steps: int, batch_size: int, seed: int
):
    hospitals = root / "hospitals"
    generate_mapping_consortium(hospitals, sites, cases_per_site, seed, max_motion_mm=train_motion_mm)
    stores = []
    for hospital in sorted(p for p in hospitals.iterdir() if p.is_dir()):
        site_dir = root / "sites" / hospital.name
        report = ingest_site(hospital / "dicom", site_dir, hospital / "manifest.csv", hospital / "labels")
        if report.rejections:
            raise RuntimeError(f"{hospital}: ingest rejected {report.rejections[:3]}")
        stores.append(CaseStore(site_dir))
    task = MotionRobustT1Mapping()
    task.validation_fraction = 0.0  # central training on everything; the held-out set is separate
    torch.manual_seed(seed)
    model = task.build_model()
    # One pooled store: every site's series, as central training would see them.
    pooled = CaseStore(root / "pooled")
    for store in stores:
        for stored in store:
            pooled.put(
                stored.entry.case_id,
                stored.image,
                None,
                (stored.entry.row_spacing_mm, stored.entry.column_spacing_mm, stored.entry.slice_spacing_mm),
                stored.entry.attributes,
                stored.entry.case_labels,
                extra_arrays=stored.arrays,
            )
    started = time.perf_counter()
    phases = []
    for phase, learning_rate in enumerate(LEARNING_RATES):  # a step-down schedule, one task.train call per rate
        settings = TrainSettings(
            batch_size=batch_size,
            local_epochs=10_000,
            max_steps=steps // len(LEARNING_RATES),
            learning_rate=learning_rate,
            seed=seed + phase,
        )
        outcome = task.train(model, pooled, settings, torch.device("cpu"))
        phases.append(
            {
                "learning_rate": learning_rate,
                "steps": outcome.steps,
                "mean_loss_ms": round(outcome.mean_loss * 1000.0, 1),
            }
        )
    return (
        task,
        model,
        {
            "sites": sites,
            "examinations": sites * cases_per_site,
            "series": outcome.num_examples,
            "steps": sum(p["steps"] for p in phases),
            "phases": phases,
            "batch_size": batch_size,
            "loss_weights": {"blood_pool": task.blood_weight, "myocardium": task.myocardium_weight, "elsewhere": 1.0},
            "train_seconds": round(time.perf_counter() - started, 1),
            "train_motion_mm": train_motion_mm,
            "augmentation": {
                "max_motion_mm": task.max_motion_mm,
                "max_rotation_deg": task.max_rotation_deg,
                "motion_probability": task.motion_probability,
            },
        },
    )


def held_out_configurations(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(12345)
    return [
        {
            "seed": HELD_OUT_SEED_BASE + i,
            "field_strength": ("1.5T", "3T")[i % 2],
            "sex": ("F", "M")[(i // 2) % 2],
            "vendor": ("Siemens", "Philips", "GE")[i % 3],
            "heart_rate_bpm": float(rng.uniform(50.0, 100.0)),
        }
        for i in range(n)
    ]


def evaluate(
    task, model, configurations: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, dict[str, float | None]]], float]:
    cpu = torch.device("cpu")
    per_level: dict[str, dict[str, list[dict[str, float]]]] = {}
    failed: dict[str, list[float]] = {"fit": []}
    for motion in MOTION_LEVELS_MM:
        results = per_level.setdefault(f"{motion:g}", {"fit": [], "network": []})
        for configuration in configurations:
            case = simulate_mapping_case(
                configuration["seed"], motion_mm=motion, **{k: v for k, v in configuration.items() if k != "seed"}
            )
            mask = TISSUE_TO_LABEL[case.tissue]
            maps: dict[str, dict[str, tuple]] = {"fit": {}, "network": {}}
            for contrast, frames, times in (
                ("native", case.molli_native, case.inversion_times_native_ms),
                ("post", case.molli_post, case.inversion_times_post_ms),
            ):
                reference = reference_t1_ms(case, contrast)
                fitted = fit_t1(frames, times).t1_ms
                mapped = task.t1_map_ms(model, frames, times, cpu)
                myocardium = np.isin(mask, (2, 3))
                failed["fit"].append(float(np.mean(~np.isfinite(fitted[myocardium]))))
                maps["fit"][contrast] = (fitted, reference, mask)  # failed pixels (NaN) are left out
                maps["network"][contrast] = (mapped, reference, mask)
            for method in ("fit", "network"):
                results[method].append(study_metrics(maps[method]["native"], maps[method]["post"], case.haematocrit))
    table = {
        level: {
            method: {measure: _mean([r[measure] for r in records]) for measure in MEASURES}
            for method, records in methods.items()
        }
        for level, methods in per_level.items()
    }
    return table, round(float(np.mean(failed["fit"])), 4)


def seconds_per_map(task, model, repeats: int) -> dict[str, dict[str, float]]:
    """Median and fastest of ``repeats`` maps of one native series (the fastest is the least
    disturbed by other work on a shared machine)."""
    case = simulate_mapping_case(HELD_OUT_SEED_BASE, motion_mm=2.0)
    frames, times = case.molli_native, case.inversion_times_native_ms
    methods = {
        "fit": lambda: fit_t1(frames, times),
        "network": lambda: task.t1_map_ms(model, frames, times, torch.device("cpu")),
    }
    timing = {}
    for method, run in methods.items():
        run()  # warm-up
        durations = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            durations.append(time.perf_counter() - started)
        timing[method] = {
            "median_s": round(float(np.median(durations)), 4),
            "fastest_s": round(float(np.min(durations)), 4),
        }
    return timing


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return round(float(np.mean(finite)), 2) if finite else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--cases-per-site", type=int, default=16)
    parser.add_argument("--train-motion-mm", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--held-out", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    args = parser.parse_args()
    if args.quick:
        args.cases_per_site, args.steps, args.held_out = 3, 30, 2
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        task, model, training = train_network(
            Path(scratch), args.sites, args.cases_per_site, args.train_motion_mm, args.steps, args.batch_size, args.seed
        )
    table, fit_failed = evaluate(task, model, held_out_configurations(args.held_out))
    repeats = 5 if args.quick else 30
    timing = seconds_per_map(task, model, repeats)

    print(f"\nMyocardial native T1, mean absolute error per pixel (ms), {args.held_out} held-out examinations")
    print(
        f"{'motion (mm)':>12} {'fit':>8} {'network':>8}   {'fit bias':>9} {'net bias':>9}"
        f"   {'ECV fit':>8} {'ECV net':>8}"
    )
    for level, methods in table.items():
        fit, net = methods["fit"], methods["network"]
        print(
            f"{level:>12} {fit['myocardial_t1_abs_error_ms']:>8.1f} {net['myocardial_t1_abs_error_ms']:>8.1f}   "
            f"{fit['myocardial_t1_bias_ms']:>9.1f} {net['myocardial_t1_bias_ms']:>9.1f}   "
            f"{fit['ecv_abs_error_percent']:>8.2f} {net['ecv_abs_error_percent']:>8.2f}"
        )
    print(f"fit: {100 * fit_failed:.1f} % of myocardial pixels without a T1 (left out of its errors)")
    for method, seconds in timing.items():
        print(
            f"{method}: {1000 * seconds['median_s']:.1f} ms per 96×96 map on the CPU ({args.threads} threads), "
            f"median of {repeats}; fastest {1000 * seconds['fastest_s']:.1f} ms"
        )
    result = {
        "benchmark": "mapping_motion",
        "description": "classical MOLLI fit vs T1-mapping network, held-out phantom examinations, motion 0-6 mm",
        "machine": machine(),
        "arguments": vars(args),
        "training": training,
        "held_out_examinations": args.held_out,
        "measures": {
            "myocardial_t1_abs_error_ms": "native T1, mean |map − true T1| over myocardial pixels (ms)",
            "myocardial_t1_bias_ms": "native T1, mean (map − true T1) over the myocardium (ms)",
            "blood_t1_abs_error_ms": "native T1, LV blood pool (ms)",
            "post_myocardial_t1_abs_error_ms": "post-contrast T1, myocardium (ms)",
            "ecv_abs_error_percent": (
                "|ECV from the maps − ECV from the true maps|, remote myocardium (percentage points)"
            ),
        },
        "by_motion_mm": table,
        "seconds_per_map_cpu": timing,
        "fit_failed_myocardial_pixel_fraction": fit_failed,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    save("mapping_motion" if not args.quick else "mapping_motion_quick", result)


if __name__ == "__main__":
    main()
