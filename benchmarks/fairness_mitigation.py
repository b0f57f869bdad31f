"""Does group-balanced sampling at the sites narrow a known gap against women?

Federated training as `cmrfl demo` runs it (cmrfl.simulation.run_simulated_federation:
FedAvg, SecAgg+, the demo's rounds), at the demo-benchmark size (3 sites × 24 patients),
on consortia generated with women's cases made harder (``SubgroupDifficulty``: thinner
wall, more noise; the same setting as benchmarks/fairness_gap_detection.py). Each
consortium is trained twice from the same initial model on the same sites: with
``fairness-mitigation = none`` and with ``group-balanced`` (by sex).

Measured from each site's per-case records of the final round
(``SITE_DIR/evaluations/round-NNNN.jsonl``: every validation case, no suppression):
women's and men's mean myocardium Dice, the worst group, the gap (men − women; positive:
women worse) and the overall Dice. Because a site validates only about 6 patients, the
final global model of each run is also scored on every patient of one held-out consortium
generated the same way with another seed (``--held-out-cases`` per site, 0 to skip).
The sex mix of each site (the phantom's ``male_fraction`` and the patients and slices
actually drawn) is reported: balancing can only matter as much as the sites are unbalanced.

Two runs differ by chance as well as by their sampling (the balanced sampler draws other
batches). A control (``--control``, on by default) trains the unmitigated run once more
with another run seed; its paired change from ``none`` shows how far the measures move by
chance alone, the yardstick for the mitigation's change.

    .venv/bin/python benchmarks/fairness_mitigation.py [--seeds 4 --rounds 20 --held-out-cases 24 --no-control]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import save
from cmr.phantom import SubgroupDifficulty

# As in benchmarks/fairness_gap_detection.py: the generator's defaults, about three times
# the 0.05 tolerance on women's myocardium Dice on top of the phantom's natural sex gap.
WALL_SCALE = 0.8
SNR_SCALE = 0.7
SCAR_CONTRAST_SCALE = 1.0
MITIGATIONS = ("none", "group-balanced")
# The control: the unmitigated run again with another run seed (initial model and batch
# order), to show how much the measures move between two runs that differ in chance alone.
CONTROL = "none, reseeded"
SEXES = ("female", "male")


def make_sites(
    root: Path, sites: int, cases: int, seed: int, difficulty: SubgroupDifficulty
) -> tuple[list[Path], dict]:
    """Generate and ingest a consortium; (site folders, each site's intended male fraction)."""
    from cmr.ingest import ingest_site
    from cmr.phantom import generate_consortium

    hospitals = root / "hospitals"
    generate_consortium(hospitals, n_sites=sites, cases_per_site=cases, seed=seed, subgroup_difficulty=difficulty)
    spec = json.loads((hospitals / "consortium.json").read_text())
    male_fraction = {s["site_id"]: s["demographics"]["male_fraction"] for s in spec["sites"]}
    site_dirs = []
    for hospital in sorted(p for p in hospitals.iterdir() if p.is_dir()):
        site_dir = root / "sites" / hospital.name
        ingest_site(hospital / "dicom", site_dir, hospital / "manifest.csv", hospital / "labels")
        site_dirs.append(site_dir)
    shutil.rmtree(hospitals)
    return site_dirs, male_fraction


def sex_mix(site_dirs: list[Path], male_fraction: dict) -> dict:
    """Per site: intended male fraction; women and men among training and validation patients;
    women's share of training slices without and with balancing."""
    from cmr.store import CaseStore
    from tasks.lge import LgeScarSegmentation

    task = LgeScarSegmentation()
    mix = {}
    for site_dir in site_dirs:
        store = CaseStore(site_dir)
        training, validation = task.split(store)
        slices = [c.entry.attributes.sex for c in training for _ in c.labelled_slices]
        recorded = [s for s in slices if s in SEXES]
        mix[site_dir.name] = {
            "phantom_male_fraction": male_fraction.get(site_dir.name),
            "training_patients": {sex: sum(c.entry.attributes.sex == sex for c in training) for sex in SEXES},
            "validation_patients": {sex: sum(c.entry.attributes.sex == sex for c in validation) for sex in SEXES},
            "women_share_of_training_slices": recorded.count("female") / len(recorded) if recorded else math.nan,
            "women_share_of_draws_balanced": 0.5 if len(set(recorded)) == 2 else math.nan,
        }
    return mix


def group_summary(records) -> dict:
    """Women's and men's mean myocardium Dice, the worst group, the gap (men − women), overall."""
    values: dict[str, list[float]] = {sex: [] for sex in SEXES}
    everyone = []
    for record in records:
        value = record.metrics.get("dice_myocardium", math.nan)
        if not math.isfinite(value):
            continue
        everyone.append(value)
        if record.attributes.sex in values:
            values[record.attributes.sex].append(value)
    means = {sex: float(np.mean(v)) if v else math.nan for sex, v in values.items()}
    worst = min(SEXES, key=lambda sex: means[sex] if math.isfinite(means[sex]) else math.inf)
    return {
        "n_female": len(values["female"]),
        "n_male": len(values["male"]),
        "dice_female": means["female"],
        "dice_male": means["male"],
        "worst_group": worst,
        "worst_group_dice": min(means.values()),
        "gap_male_minus_female": means["male"] - means["female"],
        "dice_overall": float(np.mean(everyone)) if everyone else math.nan,
        "n_overall": len(everyone),
    }


def train_federation(site_dirs: list[Path], run_dir: Path, mitigation: str, train_seed: int, args) -> float:
    from cmrfl.simulation import run_simulated_federation

    started = time.perf_counter()
    run_simulated_federation(
        site_dirs,
        run_config={
            "num-server-rounds": args.rounds,
            "min-train-sites": len(site_dirs),
            "min-available-sites": len(site_dirs),
            "seed": train_seed,
            "run-dir": str(run_dir),
            "resume": False,
            "fairness-mitigation": mitigation,
            "fairness-balance-attribute": args.attribute,
        },
        flower_log=run_dir / "flower.log",
    )
    return time.perf_counter() - started


def site_records(site_dirs: list[Path], server_round: int) -> list:
    from fairness.records import read_round_records

    return [record for site_dir in site_dirs for record in read_round_records(site_dir, server_round)]


def held_out_records(site_dirs: list[Path], model_path: Path) -> list:
    """Every patient of the held-out consortium, scored with a run's final model."""
    from cmr.store import CaseStore
    from tasks.lge import LgeScarSegmentation

    task = LgeScarSegmentation()
    everything = dataclasses.replace(task, validation_fraction=1.0)
    model = task.build_model()
    model.load_state_dict(torch.load(model_path, map_location="cpu")["state_dict"])
    model.eval()
    records = []
    with torch.no_grad():
        for site_dir in site_dirs:
            records += everything.evaluate(model, CaseStore(site_dir), torch.device("cpu"), site_dir.name).records
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="consortia, each trained without and with balancing")
    parser.add_argument("--seed-offset", type=int, default=0, help="first consortium seed")
    parser.add_argument("--rounds", type=int, default=20, help="federated rounds (the demo's 20)")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--cases", type=int, default=24, help="patients per site")
    parser.add_argument("--train-seed", type=int, default=0, help="run-config seed (initial model, batches)")
    parser.add_argument("--attribute", default="sex", help="fairness-balance-attribute")
    parser.add_argument(
        "--held-out-cases", type=int, default=24, help="patients per site of the held-out consortium (0: none)"
    )
    parser.add_argument("--held-out-seed", type=int, default=5000)
    parser.add_argument("--wall-scale", type=float, default=WALL_SCALE)
    parser.add_argument("--snr-scale", type=float, default=SNR_SCALE)
    parser.add_argument("--scar-contrast-scale", type=float, default=SCAR_CONTRAST_SCALE)
    parser.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also rerun without mitigation under another run seed (chance alone)",
    )
    parser.add_argument("--name", default="fairness_mitigation", help="results file name")
    args = parser.parse_args()
    difficulty = SubgroupDifficulty(
        "sex",
        "female",
        wall_thickness_scale=args.wall_scale,
        snr_scale=args.snr_scale,
        scar_contrast_scale=args.scar_contrast_scale,
    )
    started = time.perf_counter()
    runs, consortia = [], {}
    with tempfile.TemporaryDirectory(prefix="fairness-mitigation-") as scratch_name:
        scratch = Path(scratch_name)
        held_out_sites: list[Path] = []
        if args.held_out_cases:
            held_out_sites, _ = make_sites(
                scratch / "held-out", args.sites, args.held_out_cases, args.held_out_seed, difficulty
            )
        for seed in range(args.seed_offset, args.seed_offset + args.seeds):
            generated = time.perf_counter()
            site_dirs, male_fraction = make_sites(scratch / f"seed-{seed}", args.sites, args.cases, seed, difficulty)
            consortia[seed] = sex_mix(site_dirs, male_fraction)
            print(
                f"seed {seed}: sites generated and ingested in {time.perf_counter() - generated:.0f} s; "
                + "; ".join(
                    f"{site} ♀/♂ training {m['training_patients']['female']}/{m['training_patients']['male']}"
                    f" validation {m['validation_patients']['female']}/{m['validation_patients']['male']}"
                    for site, m in consortia[seed].items()
                ),
                flush=True,
            )
            for condition, mitigation, train_seed in conditions(args):
                root = scratch / f"seed-{seed}" / condition.replace(", ", "-")
                copies = []
                for site_dir in site_dirs:  # the same sites, a clean folder for each run
                    copies.append(root / "sites" / site_dir.name)
                    shutil.copytree(site_dir, copies[-1])
                run_dir = root / "run"
                seconds = train_federation(copies, run_dir, mitigation, train_seed, args)
                row = {
                    "seed": seed,
                    "mitigation": condition,
                    "train_seed": train_seed,
                    "train_seconds": round(seconds, 1),
                    "validation": group_summary(site_records(copies, args.rounds)),
                }
                if held_out_sites:
                    row["held_out"] = group_summary(held_out_records(held_out_sites, run_dir / "final_model.pt"))
                runs.append(row)
                print(f"  {condition:<15} {seconds:>6.0f} s  " + describe(row), flush=True)
            save(
                args.name,
                {
                    "partial": True,
                    "settings": vars(args),
                    "runs": runs,  # kept if stopped early
                    "sex_mix_by_consortium": {str(k): v for k, v in consortia.items()},
                },
            )
    summary = summarise(runs, bool(held_out_sites), [name for name, _, _ in conditions(args)])
    seconds = time.perf_counter() - started
    print(f"\n{len(runs)} federated runs in {seconds:.0f} s")
    save(
        args.name,
        {
            "settings": vars(args),
            "subgroup_difficulty": dataclasses.asdict(difficulty),
            "sex_mix_by_consortium": {str(k): v for k, v in consortia.items()},
            "summary": summary,
            "runs": runs,
            "wall_seconds": round(seconds, 1),
        },
    )


def conditions(args) -> list[tuple[str, str, int]]:
    """(name, fairness-mitigation, run seed) of each run on one consortium."""
    runs = [(mitigation, mitigation, args.train_seed) for mitigation in MITIGATIONS]
    if args.control:
        runs.append((CONTROL, "none", args.train_seed + 1))
    return runs


def describe(row: dict) -> str:
    parts = []
    for where in ("validation", "held_out"):
        if where in row:
            s = row[where]
            parts.append(
                f"{where}: ♀ {s['dice_female']:.3f} (n={s['n_female']}) ♂ {s['dice_male']:.3f} "
                f"(n={s['n_male']}) gap {s['gap_male_minus_female']:+.3f} all {s['dice_overall']:.3f}"
            )
    return " | ".join(parts)


KEYS = ("dice_female", "dice_male", "gap_male_minus_female", "worst_group_dice", "dice_overall")


def summarise(runs: list[dict], held_out: bool, names: list[str]) -> dict:
    """Means over seeds per condition, and the paired change from ``none`` per seed: of
    group-balanced (the mitigation) and of the reseeded control (chance alone)."""
    summary: dict[str, dict[str, Any]] = {}
    wheres = ("validation", "held_out") if held_out else ("validation",)
    print(
        f"\n{'cases scored':<22}{'mitigation':<20}{'Dice ♀':>8}{'Dice ♂':>8}{'gap ♂−♀':>9}"
        f"{'worst (group)':>18}{'Dice all':>9}{'n ♀/♂':>9}"
    )
    for where in wheres:
        summary[where] = {}
        for mitigation in names:
            rows = [r[where] for r in runs if r["mitigation"] == mitigation]
            means: dict[str, Any] = {key: _mean([r[key] for r in rows]) for key in KEYS}
            worst_counts = {sex: sum(r["worst_group"] == sex for r in rows) for sex in SEXES}
            means |= {
                "worst_group_counts": worst_counts,
                "runs": len(rows),
                "mean_n_female": _mean([r["n_female"] for r in rows]),
                "mean_n_male": _mean([r["n_male"] for r in rows]),
            }
            summary[where][mitigation] = means
            worst = "/".join(f"{sex[0]}×{n}" for sex, n in worst_counts.items() if n)
            print(
                f"{where.replace('_', '-'):<22}{mitigation:<20}{means['dice_female']:>8.3f}{means['dice_male']:>8.3f}"
                f"{means['gap_male_minus_female']:>+9.3f}{means['worst_group_dice']:>10.3f} ({worst:<5})"
                f"{means['dice_overall']:>9.3f}{means['mean_n_female']:>5.0f}/{means['mean_n_male']:.0f}"
            )
        for other, key_name, label in (
            ("group-balanced", "paired_change_balanced_minus_none", "Δ balanced"),
            (CONTROL, "paired_change_reseeded_minus_none", "Δ reseeded"),
        ):
            changes = []
            for seed in sorted({r["seed"] for r in runs}):
                pair = {r["mitigation"]: r[where] for r in runs if r["seed"] == seed}
                if "none" in pair and other in pair:
                    changes.append({key: pair[other][key] - pair["none"][key] for key in KEYS} | {"seed": seed})
            if not changes:
                continue
            mean = {key: _mean([c[key] for c in changes]) for key in KEYS}
            summary[where][key_name] = {
                "per_seed": changes,
                "mean": mean,
                "mean_absolute": {key: _mean([abs(c[key]) for c in changes]) for key in KEYS},
                "seeds_where_gap_narrowed": sum(c["gap_male_minus_female"] < 0 for c in changes),
                "seeds_where_women_improved": sum(c["dice_female"] > 0 for c in changes),
                "seeds_where_worst_group_improved": sum(c["worst_group_dice"] > 0 for c in changes),
            }
            print(
                f"{'':<22}{label + ' (paired)':<20}{mean['dice_female']:>+8.3f}{mean['dice_male']:>+8.3f}"
                f"{mean['gap_male_minus_female']:>+9.3f}{mean['worst_group_dice']:>+10.3f}{'':>8}"
                f"{mean['dice_overall']:>+9.3f}   gap narrowed in "
                f"{summary[where][key_name]['seeds_where_gap_narrowed']}/{len(changes)}"
            )
    return summary


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


if __name__ == "__main__":
    main()
