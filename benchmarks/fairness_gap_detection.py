"""Does the fairness audit find a known subgroup gap, and stay quiet without one?

Evaluation only. One fixed LGE model (trained once on a separate gap-free
consortium, or loaded with --model) is evaluated at every site of many synthetic
consortia at the demo's size (3 sites × 24 patients), each generated twice with the
same seed: once with women's cases made harder (``SubgroupDifficulty``: thinner
wall, more noise, less scar contrast) and once without. Each site's per-case records
become suppressed statistics through the same calls a site makes
(``fairness.site.fairness_statistics_to_send``), cross the wire format, and are
audited as the server would (``fairness.audit.audit_round``, the final-round flag
rule). Reported per setting:

* detection with the gap: a flagged gap by sex with women the worst group on the
  myocardium Dice, the measure the injected difficulty targets (target ≥ 90 %), and on
  any measure;
* false flags without it: the same flag on the myocardium Dice, where women's natural
  shortfall in the phantom (~0.03–0.04) is below the 0.05 tolerance (target ≤ 5 %); and,
  for information, any flag at all: the phantom has real gaps of its own (scanner
  sites, women's scar Dice), which a flag there rightly reports;
* the women's and men's mean myocardium Dice and the gap, from the per-case records.

Settings: the demo's validation split (what `cmrfl demo` audits, about 18 patients)
and all patients (72 at 3 × 24; a held-out model can be scored on every case), each with the
default suppression threshold (10) and with none (1; as if the sites' statistics
were summed before the server saw them).

    .venv/bin/python benchmarks/fairness_gap_detection.py [--seeds 20 --workers 1 --model PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import save
from cmr.phantom import SubgroupDifficulty
from fairness.audit import audit_round
from fairness.run_store import RoundStatistics
from fairness.settings import Tolerances
from fairness.site import fairness_statistics_to_send
from fairness.wire import statistics_from_document
from tasks.lge.audit import LGE_AUDIT_SPEC

# The generator's own defaults (wall × 0.8, noise up: SNR × 0.7, scar contrast kept). In a
# pilot with the fixed model they lowered women's myocardium Dice by about 0.09 on top of the
# phantom's natural ~0.06 sex gap: about three times the 0.05 tolerance, a gap any clinician
# would call meaningful. --wall-scale 0.7 --snr-scale 0.5 --scar-contrast-scale 0.8 is stronger.
WALL_SCALE = 0.8
SNR_SCALE = 0.7
SCAR_CONTRAST_SCALE = 1.0


def settings_for(sites: int, cases: int) -> dict[str, tuple[str, int]]:
    """(which cases, suppression threshold) by setting name."""
    return {
        "demo validation split, threshold 10": ("validation", 10),
        "demo validation split, no suppression": ("validation", 1),
        f"all {sites * cases} cases, threshold 10": ("all", 10),
        f"all {sites * cases} cases, no suppression": ("all", 1),
    }


def make_sites(root: Path, sites: int, cases: int, seed: int, difficulty: SubgroupDifficulty | None) -> list[Path]:
    from cmr.ingest import ingest_site
    from cmr.phantom import generate_consortium

    hospitals = root / "hospitals"
    generate_consortium(hospitals, n_sites=sites, cases_per_site=cases, seed=seed, subgroup_difficulty=difficulty)
    site_dirs = []
    for hospital in sorted(p for p in hospitals.iterdir() if p.is_dir()):
        site_dir = root / "sites" / hospital.name
        ingest_site(hospital / "dicom", site_dir, hospital / "manifest.csv", hospital / "labels")
        site_dirs.append(site_dir)
    shutil.rmtree(hospitals)
    return site_dirs


def train_model(args, scratch: Path) -> dict:
    """The fixed model: trained on all sites of a gap-free consortium pooled into one store."""
    from cmr.store import CaseStore
    from tasks import get_task
    from tasks.base import TrainSettings

    task = get_task("lge")
    site_dirs = make_sites(scratch / "training", args.sites, args.cases, args.train_seed, None)
    pooled = CaseStore(scratch / "training" / "pooled")
    for site_dir in site_dirs:
        for case in CaseStore(site_dir):
            entry = case.entry
            spacing = (entry.row_spacing_mm, entry.column_spacing_mm, entry.slice_spacing_mm)
            pooled.put(entry.case_id, case.image, case.mask, spacing, entry.attributes, entry.case_labels)
    torch.manual_seed(args.train_seed)
    model = task.build_model()
    outcome = task.train(
        model,
        pooled,
        TrainSettings(local_epochs=args.epochs, batch_size=8, learning_rate=0.002, seed=args.train_seed),
        torch.device("cpu"),
    )
    print(f"trained the fixed model: {outcome.steps} steps, loss {outcome.mean_loss:.3f}, {outcome.seconds:.0f} s")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def evaluate_consortium(job: tuple) -> dict:
    """Generate one consortium, ingest it, score every case with the fixed model."""
    seed, gap, args, state_dict = job
    from cmr.store import CaseStore
    from tasks.base import validation_case_ids
    from tasks.lge import LgeScarSegmentation

    torch.set_num_threads(1 if args.workers > 1 else torch.get_num_threads())
    difficulty = (
        SubgroupDifficulty(
            "sex",
            "female",
            wall_thickness_scale=args.wall_scale,
            snr_scale=args.snr_scale,
            scar_contrast_scale=args.scar_contrast_scale,
        )
        if gap
        else None
    )
    base = LgeScarSegmentation()
    everything = dataclasses.replace(base, validation_fraction=1.0)  # a held-out model: score every case
    model = base.build_model()
    model.load_state_dict(state_dict)
    model.eval()
    with tempfile.TemporaryDirectory() as scratch:
        site_dirs = make_sites(Path(scratch), args.sites, args.cases, args.seed_offset + seed, difficulty)
        by_site = {}
        for site_dir in site_dirs:
            store = CaseStore(site_dir)
            validation = validation_case_ids(store.entries(), base.validation_fraction)
            with torch.no_grad():
                records = everything.evaluate(model, store, torch.device("cpu"), site_dir.name).records
            by_site[site_dir.name] = (records, validation)
    return {"seed": seed, "gap": gap, "sites": by_site}


def audit_outcome(by_site: dict, cases: str, threshold: int, tolerances: Tolerances) -> dict:
    sites = {}
    for site_id, (records, validation) in by_site.items():
        chosen = records if cases == "all" else [r for r in records if r.case_id in validation]
        document = fairness_statistics_to_send(chosen, LGE_AUDIT_SPEC, threshold, site_id)
        sites[site_id] = statistics_from_document(document, site_id)
    audit = audit_round(RoundStatistics(1, sites), LGE_AUDIT_SPEC, tolerances)
    flags = [g for g in audit.gaps if g.flagged]
    women = [g for g in flags if g.grouping == "sex" and g.worst_group == "sex=female"]
    injected = [g for g in women if g.measure == "dice_myocardium"]
    sex_gap = next(
        (
            g
            for g in audit.gaps
            if g.grouping == "sex" and g.measure == "dice_myocardium" and g.comparison == "worst vs rest"
        ),
        None,
    )
    return {
        "any_flag": bool(flags),
        "flag_by_sex": any(g.grouping == "sex" for g in flags),
        "women_flagged": bool(women),  # any measure (scar Dice has a natural sex gap in the phantom)
        "women_flagged_myocardium": bool(injected),  # the measure the injected difficulty targets
        "flags": [
            f"{g.grouping}: {g.worst_group} {g.measure} ({g.comparison}, shortfall {g.shortfall:.3f})" for g in flags
        ],
        "gaps_examined": len(audit.gaps),
        "sex_dice_gap_audited": None
        if sex_gap is None
        else {
            "worst_group": sex_gap.worst_group,
            "worst_value": sex_gap.worst_value,
            "shortfall": sex_gap.shortfall,
            "low": sex_gap.shortfall_low,
            "flag_low": sex_gap.flag_low,
        },
    }


def records_gap(by_site: dict, cases: str) -> dict:
    values: dict[str, list[float]] = {"female": [], "male": []}
    for records, validation in by_site.values():
        for record in records:
            if cases == "all" or record.case_id in validation:
                value = record.metrics["dice_myocardium"]
                if record.attributes.sex in values and math.isfinite(value):
                    values[record.attributes.sex].append(value)
    means = {sex: float(np.mean(v)) if v else math.nan for sex, v in values.items()}
    return {
        "n_female": len(values["female"]),
        "n_male": len(values["male"]),
        "dice_female": means["female"],
        "dice_male": means["male"],
        "dice_gap_male_minus_female": means["male"] - means["female"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="consortia per condition (with and without the gap)")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument(
        "--model", type=Path, help="state dict (.pt; final_model.pt of a run works) instead of training"
    )
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of the fixed model")
    parser.add_argument("--train-seed", type=int, default=1000)
    parser.add_argument("--seed-offset", type=int, default=0, help="first consortium seed")
    parser.add_argument("--wall-scale", type=float, default=WALL_SCALE)
    parser.add_argument("--snr-scale", type=float, default=SNR_SCALE)
    parser.add_argument("--scar-contrast-scale", type=float, default=SCAR_CONTRAST_SCALE)
    parser.add_argument("--workers", type=int, default=1, help="consortia evaluated in parallel")
    parser.add_argument("--save-model", type=Path, help="write the trained fixed model here")
    parser.add_argument("--name", default="fairness_gap_detection", help="results file name")
    args = parser.parse_args()
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch:
        if args.model:
            loaded = torch.load(args.model, map_location="cpu")
            state_dict = loaded.get("state_dict", loaded)
        else:
            state_dict = train_model(args, Path(scratch))
        if args.save_model:
            torch.save({"task": "lge", "state_dict": state_dict}, args.save_model)
    jobs = [(seed, gap, args, state_dict) for seed in range(args.seeds) for gap in (True, False)]
    tolerances = Tolerances.defaults(LGE_AUDIT_SPEC)
    settings = settings_for(args.sites, args.cases)
    outcomes = []

    def collect(result: dict) -> None:
        for setting, (cases, threshold) in settings.items():
            outcomes.append(
                {
                    "seed": result["seed"],
                    "gap": result["gap"],
                    "setting": setting,
                    **audit_outcome(result["sites"], cases, threshold, tolerances),
                    **records_gap(result["sites"], cases),
                }
            )
        print(
            f"  seed {result['seed']:>3} {'gap   ' if result['gap'] else 'no gap'} done "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            for result in pool.map(evaluate_consortium, jobs):
                collect(result)
    else:
        for job in jobs:
            collect(evaluate_consortium(job))

    summary = summarise(outcomes, settings)
    seconds = time.perf_counter() - started
    print(f"\n{len(jobs)} consortia in {seconds:.0f} s")
    save(
        args.name,
        {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "subgroup_difficulty": {
                "attribute": "sex",
                "group": "female",
                "wall_thickness_scale": args.wall_scale,
                "snr_scale": args.snr_scale,
                "scar_contrast_scale": args.scar_contrast_scale,
            },
            "tolerances": tolerances.to_run_config(LGE_AUDIT_SPEC),
            "summary": summary,
            "runs": outcomes,
            "wall_seconds": seconds,
        },
    )


def summarise(outcomes: list[dict], settings: dict) -> dict:
    """Rates per setting, printed as a table."""
    summary = {}
    print(
        f"\n{'setting':<40}{'gap: ♀ flagged (myo / any)':>28}{'no gap: ♀ myo':>15}{'any flag':>10}"
        f"{'Dice ♀ / ♂ (gap)':>26}{'no gap: ♀ / ♂':>18}"
    )
    for setting in settings:
        with_gap = [o for o in outcomes if o["setting"] == setting and o["gap"]]
        without = [o for o in outcomes if o["setting"] == setting and not o["gap"]]
        row = {
            "runs_per_condition": len(with_gap),
            "flag_rate_with_gap_women_myocardium_dice": _rate(with_gap, "women_flagged_myocardium"),
            "flag_rate_with_gap_women": _rate(with_gap, "women_flagged"),
            "flag_rate_with_gap_any": _rate(with_gap, "any_flag"),
            "false_flag_rate_without_gap_women_myocardium_dice": _rate(without, "women_flagged_myocardium"),
            "flag_rate_without_gap_any": _rate(without, "any_flag"),
            "false_flag_rate_without_gap_by_sex": _rate(without, "flag_by_sex"),
            "mean_dice_female_with_gap": _mean(with_gap, "dice_female"),
            "mean_dice_male_with_gap": _mean(with_gap, "dice_male"),
            "mean_dice_gap_with_gap": _mean(with_gap, "dice_gap_male_minus_female"),
            "mean_dice_female_without_gap": _mean(without, "dice_female"),
            "mean_dice_male_without_gap": _mean(without, "dice_male"),
            "mean_dice_gap_without_gap": _mean(without, "dice_gap_male_minus_female"),
            "mean_women_evaluated": _mean(with_gap, "n_female"),
            "mean_men_evaluated": _mean(with_gap, "n_male"),
            "runs_where_sex_could_be_compared": sum(o["sex_dice_gap_audited"] is not None for o in with_gap),
        }
        summary[setting] = row
        print(
            f"{setting:<40}{row['flag_rate_with_gap_women_myocardium_dice']:>20.0%} / "
            f"{row['flag_rate_with_gap_women']:<5.0%}{row['false_flag_rate_without_gap_women_myocardium_dice']:>15.0%}"
            f"{row['flag_rate_without_gap_any']:>10.0%}"
            f"{row['mean_dice_female_with_gap']:>12.3f} / {row['mean_dice_male_with_gap']:.3f} "
            f"({row['mean_dice_gap_with_gap']:+.3f})"
            f"{row['mean_dice_female_without_gap']:>9.3f} / {row['mean_dice_male_without_gap']:.3f}"
        )
    return summary


def _rate(outcomes: list[dict], key: str) -> float:
    return float(np.mean([o[key] for o in outcomes])) if outcomes else math.nan


def _mean(outcomes: list[dict], key: str) -> float:
    values = [o[key] for o in outcomes if o[key] is not None and math.isfinite(o[key])]
    return float(np.mean(values)) if values else math.nan


if __name__ == "__main__":
    main()
