"""DP-SGD: what it costs in Dice, and what it buys against a membership-inference attack.

The demo's synthetic consortium (3 sites, seed 0, as ``cmrfl demo``; 24 cases per
site by default, ``--cases 60`` for the demo's current size) is generated and
ingested once. The federated LGE training of the demo (FedAvg,
SecAgg+, 1 local epoch, 20 rounds, seed 0) then runs once without DP-SGD and once
per target ε with patient-level DP-SGD at every site (``dp-sgd-target-epsilon``:
each site's ε for the whole run, δ = ``dp-sgd-delta``, RDP accountant, the run
config's other ``dp-sgd-*`` defaults). Every run starts from fresh copies of the
ingested site folders, since a site's privacy ledger composes ε over all runs.

(c) Utility: the final global model's consortium Dice (myocardium, scar) and
scar-burden error on the sites' validation cases (``summary.json``), the run's wall
time, and the ε each site actually spent: as it reported it with its last update
(``summary.json`` → ``privacy.dp_sgd``) and recomputed from its privacy ledger.

(d) Membership inference, loss-threshold attack (Yeom et al. 2018): the attacker
scores a case by −(the model's loss on it) and calls high scores "trained on". For
each final model, per-case loss (the task's own evaluation loss, Dice + weighted
cross-entropy over the case's labelled slices on the network grid, no
augmentation) on every site's training cases (members) against non-members: the
sites' validation cases (``tasks.base.validation_case_ids``) and, with
``--extra-cases``, fresh cases from the same sites' distributions (the phantom run
with the same seed and more cases per site: cases with index ≥ ``--cases`` are new
patients of the same scanner, protocol and patient mix; the first ``--cases`` are
dropped before ingest). AUC from MONAI's ``compute_roc_auc`` (0.5: the loss says
nothing about membership) over all member/non-member pairs and over pairs of one
site only (site mix and site difficulty are then not mistaken for membership), each
with a bootstrap 95 % interval (cases resampled within site and group). The attack is
the simplest one, with a global threshold; a stronger attacker (per-case
calibration, shadow models) can only do better, so these AUCs are lower bounds on
leakage, and ε bounds any attacker: AUC ≤ an (ε, δ) limit given in the output.

    .venv/bin/python benchmarks/dp_utility_membership.py [--rounds 20 --epsilons 1,3,8 --cases 24 --extra-cases 8]

Where DP-SGD's utility goes (noise, or its patient sampling, clipping and fewer
steps): ``--noise-multipliers 0.001`` adds runs with an explicit, negligible σ and
``--max-local-steps 3`` gives the run without DP the step count of the DP runs:

    .venv/bin/python benchmarks/dp_utility_membership.py --epsilons "" --noise-multipliers 0.001 \\
        --max-local-steps 3 --name dp_utility_membership_diagnostics
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import make_sites, save
from cmr.store import CaseStore
from cmrfl.simulation import run_simulated_federation
from privacy.ledger import TRAINED, PrivacyLedger
from tasks.lge import LgeScarSegmentation
from tasks.lge.data import PreprocessedCase
from tasks.lge.inference import slice_logits
from tasks.lge.loss import per_slice_segmentation_loss, segmentation_loss

warnings.filterwarnings("ignore", message="Full backward hook is firing")
warnings.filterwarnings("ignore", message="Secure RNG turned off")

NO_DP = "no DP"


# ----------------------------------------------------------------------------- data


def make_fresh_sites(root: Path, n_sites: int, cases: int, extra: int, seed: int) -> list[Path]:
    """``extra`` new patients per site from the same sites' distributions, ingested.

    The phantom draws site specs from (seed, site) and each patient from (seed, site,
    case index): with the same seed and ``cases + extra`` cases per site, the sites are
    the same and cases ``cases …`` are new patients. (Scar types are assigned by site
    quota over the whole list, so the first ``cases`` may differ from the originals:
    they are dropped before ingest, with their manifest rows.)
    """
    from cmr.ingest import ingest_site
    from cmr.phantom import generate_consortium

    hospitals = root / "hospitals"
    spec = generate_consortium(hospitals, n_sites=n_sites, cases_per_site=cases + extra, seed=seed)
    site_dirs = []
    for hospital in sorted(p for p in hospitals.iterdir() if p.is_dir()):
        dropped = {c.series_instance_uid for c in spec.cases if c.site_id == hospital.name and c.case_index < cases}
        for case in spec.cases:
            if case.series_instance_uid in dropped:
                shutil.rmtree(hospitals / case.dicom_dir)
        manifest = hospital / "manifest.csv"
        with manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        with manifest.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if r["series_instance_uid"] not in dropped)
        site_dir = root / "sites" / hospital.name
        ingest_site(hospital / "dicom", site_dir, manifest, hospital / "labels")
        site_dirs.append(site_dir)
    return site_dirs


# ----------------------------------------------------------------------------- federation


def run_config(
    args: argparse.Namespace, run_dir: Path, epsilon: float | None, noise_multiplier: float | None = None
) -> dict[str, Any]:
    """The demo's run config (cmrfl/demo.py), with or without DP-SGD (target ε or explicit σ)."""
    config: dict[str, Any] = {
        "num-server-rounds": args.rounds,
        "strategy": "fedavg",
        "local-epochs": 1,
        "min-train-sites": args.sites,
        "min-available-sites": args.sites,
        "seed": args.seed,
        "run-dir": str(run_dir),
        "resume": False,
        "secure-aggregation": not args.no_secure_aggregation,
        "max-local-steps": args.max_local_steps,
        "dp-sgd": epsilon is not None or noise_multiplier is not None,
    }
    if epsilon is not None:
        config["dp-sgd-target-epsilon"] = float(epsilon)
    elif noise_multiplier is not None:
        config |= {"dp-sgd-target-epsilon": 0.0, "dp-sgd-noise-multiplier": float(noise_multiplier)}
    return config


def failures_of(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"round": entry["round"], **failure}
        for entry in summary.get("rounds_detail", [])
        for failure in entry.get("failures", [])
    ]


def epsilon_spent(summary: dict[str, Any], site_dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """Per site: ε as reported with its updates, and as recomputed from its ledger."""
    dp = (summary.get("privacy") or {}).get("dp_sgd") or {}
    reported = dp.get("sites", {})
    accountant = dp.get("accountant", "rdp")
    out = {}
    for site_dir in site_dirs:
        ledger = PrivacyLedger.for_site(site_dir)
        entries = ledger.entries()
        trained = [e for e in entries if e.outcome == TRAINED]
        site = reported.get(site_dir.name, {})
        delta = site.get("delta") or (trained[-1].delta if trained else None)
        rounds = site.get("rounds", [])
        out[site_dir.name] = {
            "epsilon_reported": site.get("epsilon"),
            "epsilon_ledger": ledger.epsilon(delta, accountant) if trained and delta else 0.0,
            "delta": delta,
            "rounds_trained": len(trained),
            "rounds_declined": len(entries) - len(trained),
            "patients": trained[-1].protected_units if trained else None,
            "sample_rate": rounds[-1]["sample_rate"] if rounds else None,
            "noise_multiplier": rounds[-1]["noise_multiplier"] if rounds else None,
            "steps_per_round": rounds[-1]["steps"] if rounds else None,
        }
    return out


def final_utility(summary: dict[str, Any]) -> dict[str, Any]:
    final = summary["final"]
    last = summary["rounds_detail"][-1] if summary.get("rounds_detail") else {}
    return {
        "overall": final["overall"],
        "per_site": final["per_site"],
        "final_train_loss": (last.get("train", {}).get("global") or {}).get("train-loss"),
        "consortium_dice_myocardium_per_round": [
            entry["evaluate"]["global"].get("dice-myocardium") for entry in summary.get("rounds_detail", [])
        ],
        "rounds_completed": summary["rounds"],
    }


# ----------------------------------------------------------------------------- attack


def case_losses(task, model: torch.nn.Module, cases: list[PreprocessedCase]) -> dict[str, np.ndarray]:
    """Per case: the task's evaluation loss (as in ``task.evaluate``) and the DP-SGD training loss.

    ``evaluation``: ``segmentation_loss`` over the case's labelled slices, exactly the
    per-case loss ``LgeScarSegmentation.evaluate`` averages; ``per_slice``: the loss
    DP-SGD trains on (``PerSliceDiceCELoss``), averaged over the same slices.
    """
    device = torch.device("cpu")
    evaluation_loss = segmentation_loss(task.class_weights)
    per_slice_loss = per_slice_segmentation_loss(task.class_weights)
    evaluation, per_slice = [], []
    for case in cases:
        labelled = list(case.labelled_slices)
        logits = slice_logits(model, case.image.as_tensor(), device)[labelled]
        labels = case.label[labelled, None].long()
        with torch.no_grad():
            evaluation.append(float(evaluation_loss(logits, labels)))
            per_slice.append(float(per_slice_loss(logits, labels)))
    return {"evaluation": np.array(evaluation), "per_slice": np.array(per_slice)}


def roc_auc(member_scores: np.ndarray, non_member_scores: np.ndarray) -> float:
    from monai.metrics import compute_roc_auc

    scores = torch.as_tensor(np.concatenate([member_scores, non_member_scores]), dtype=torch.float64)
    labels = torch.cat([torch.ones(len(member_scores)), torch.zeros(len(non_member_scores))])
    return float(np.asarray(compute_roc_auc(scores, labels)))


def within_site_auc(
    member_scores: np.ndarray, member_sites: np.ndarray, non_member_scores: np.ndarray, non_member_sites: np.ndarray
) -> float:
    """AUC over (member, non-member) pairs of the same site: sites in different proportions
    among members and non-members (and sites of different difficulty) do not count as signal."""
    total, weight = 0.0, 0
    for site in np.unique(member_sites):
        m, n = member_scores[member_sites == site], non_member_scores[non_member_sites == site]
        if len(m) and len(n):
            total += roc_auc(m, n) * len(m) * len(n)
            weight += len(m) * len(n)
    return total / weight if weight else math.nan


def attack(
    members: np.ndarray,
    member_sites: np.ndarray,
    non_members: np.ndarray,
    non_member_sites: np.ndarray,
    bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """Loss-threshold attack, score −loss: AUC (pooled, and within sites), bootstrap 95 % intervals
    (cases resampled within each site and group), and the best threshold's TPR − FPR."""
    member_scores, non_member_scores = -members, -non_members
    auc = roc_auc(member_scores, non_member_scores)
    auc_site = within_site_auc(member_scores, member_sites, non_member_scores, non_member_sites)
    rng = np.random.default_rng(seed)

    def resample(sites: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [rng.choice(np.flatnonzero(sites == s), int((sites == s).sum())) for s in np.unique(sites)]
        )

    pooled, within = [], []
    for _ in range(bootstrap):
        mi, ni = resample(member_sites), resample(non_member_sites)
        pooled.append(roc_auc(member_scores[mi], non_member_scores[ni]))
        within.append(within_site_auc(member_scores[mi], member_sites[mi], non_member_scores[ni], non_member_sites[ni]))

    def interval(values: list[float]) -> list[float] | None:
        return [float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))] if values else None

    thresholds = np.concatenate([member_scores, non_member_scores])
    advantage = max(float(np.mean(member_scores >= t) - np.mean(non_member_scores >= t)) for t in thresholds)
    return {
        "auc": auc,
        "auc_ci95": interval(pooled),
        "auc_within_site": auc_site,
        "auc_within_site_ci95": interval(within),
        "advantage_tpr_minus_fpr": advantage,
        "members": len(members),
        "non_members": len(non_members),
        "members_per_site": {str(k): int(v) for k, v in zip(*np.unique(member_sites, return_counts=True))},
        "non_members_per_site": {str(k): int(v) for k, v in zip(*np.unique(non_member_sites, return_counts=True))},
        "mean_loss_members": float(members.mean()),
        "mean_loss_non_members": float(non_members.mean()),
    }


def auc_bound(epsilon: float, delta: float) -> float:
    """The largest AUC any membership test can reach against an (ε, δ)-DP mechanism.

    (ε, δ)-DP bounds every test's TPR ≤ e^ε FPR + δ and 1 − FPR ≥ e^ε (1 − TPR) − δ
    (Kairouz et al. 2015); the area under the lower envelope of the two lines.
    """
    if not math.isfinite(epsilon) or epsilon > 50:
        return 1.0
    xs = np.linspace(0.0, 1.0, 100_001)
    tpr = np.minimum.reduce([np.exp(epsilon) * xs + delta, 1 - np.exp(-epsilon) * (1 - xs - delta), np.ones_like(xs)])
    tpr = np.clip(tpr, 0.0, 1.0)
    return float(np.sum((tpr[1:] + tpr[:-1]) / 2 * np.diff(xs)))


def membership(
    task, model: torch.nn.Module, site_dirs: list[Path], fresh_dirs: list[Path], bootstrap: int, seed: int
) -> dict[str, Any]:
    """Per-case losses of members and non-members at every site, and the attack on them."""
    groups: dict[str, list[tuple[str, list[PreprocessedCase]]]] = {"members": [], "validation": [], "fresh": []}
    for site_dir in site_dirs:
        training, validation = task.split(CaseStore(site_dir))
        groups["members"].append((site_dir.name, training))
        groups["validation"].append((site_dir.name, validation))
    for fresh_dir in fresh_dirs:  # every fresh case is a non-member, whichever side of the split
        training, validation = task.split(CaseStore(fresh_dir))
        groups["fresh"].append((fresh_dir.name, training + validation))
    losses: dict[str, dict[str, np.ndarray]] = {}
    sites: dict[str, np.ndarray] = {}
    for group, per_site in groups.items():
        computed = [(site, case_losses(task, model, cases)) for site, cases in per_site if cases]
        sites[group] = np.array([site for site, values in computed for _ in values["evaluation"]], dtype=str)
        losses[group] = {
            kind: np.concatenate([values[kind] for _, values in computed]) if computed else np.array([])
            for kind in ("evaluation", "per_slice")
        }
    sites["all"] = np.concatenate([sites["validation"], sites["fresh"]])

    out: dict[str, Any] = {}
    for kind in ("evaluation", "per_slice"):
        non_members = {name: losses[name][kind] for name in ("validation", "fresh")}
        non_members["all"] = np.concatenate([non_members["validation"], non_members["fresh"]])
        out[kind] = {
            name: attack(losses["members"][kind], sites["members"], values, sites[name], bootstrap, seed)
            for name, values in non_members.items()
            if len(values)
        }
    return out


# ----------------------------------------------------------------------------- main


def one_run(
    args: argparse.Namespace,
    task,
    label: str,
    dp: tuple[str, float] | None,
    root: Path,
    site_dirs: list[Path],
    fresh_dirs: list[Path],
) -> dict[str, Any]:
    """One federated run (dp: None, ("epsilon", target ε) or ("sigma", noise multiplier)), then the attack."""
    epsilon = dp[1] if dp and dp[0] == "epsilon" else None
    sigma = dp[1] if dp and dp[0] == "sigma" else None
    tag = "no-dp" if dp is None else f"{dp[0]}-{dp[1]:g}"
    copies = [Path(shutil.copytree(d, root / "runs" / tag / "sites" / d.name)) for d in site_dirs]
    run_dir = root / "runs" / tag / "run"
    config = run_config(args, run_dir, epsilon, sigma)
    print(f"[{time.strftime('%H:%M:%S')}] {label}: federated training, {args.rounds} rounds …", flush=True)
    started = time.perf_counter()
    result: dict[str, Any] = {"target_epsilon": epsilon, "noise_multiplier": sigma, "run_config": config}
    try:
        run_simulated_federation(copies, config, flower_log=run_dir / "flower.log")
    except Exception as failure:
        result["error"] = f"{type(failure).__name__}: {failure}"
        result["traceback"] = traceback.format_exc()
    result["wall_seconds"] = time.perf_counter() - started
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        result.setdefault("error", "no summary.json written")
        log = run_dir / "flower.log"
        result["flower_log_tail"] = log.read_text()[-4000:] if log.is_file() else None
        print(f"  FAILED: {result['error']}", flush=True)
        return result
    summary = json.loads(summary_path.read_text())
    result["failures"] = failures_of(summary)
    result["utility"] = final_utility(summary)
    if summary["rounds"] != args.rounds:
        result.setdefault("error", f"only {summary['rounds']} of {args.rounds} rounds completed")
    if dp is not None:
        result["epsilon_spent"] = epsilon_spent(summary, copies)
        result["dp_sgd_summary"] = {k: v for k, v in summary["privacy"]["dp_sgd"].items() if k != "sites"}
    model = task.build_model()
    model.load_state_dict(torch.load(run_dir / "final_model.pt", weights_only=True)["state_dict"])
    print(f"  trained in {result['wall_seconds']:.0f} s; membership inference …", flush=True)
    result["membership_inference"] = membership(task, model, copies, fresh_dirs, args.bootstrap, args.seed)
    if args.workdir is None:
        shutil.rmtree(root / "runs" / tag)
    return result


def fmt(value: Any, spec: str = ".3f") -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def print_tables(results: dict[str, dict[str, Any]], delta: float) -> None:
    print("\n(c) utility: final global model on the sites' validation cases")
    print(
        f"{'run':<10}{'Dice myo':>10}{'Dice scar':>11}{'burden err':>12}{'wall s':>9}"
        "   ε spent per site (ledger)   σ per site"
    )
    for label, result in results.items():
        if "utility" not in result:
            print(f"{label:<10}  FAILED: {result.get('error')}")
            continue
        overall = result["utility"]["overall"]
        spent = result.get("epsilon_spent", {})
        eps = ", ".join(f"{fmt(s['epsilon_ledger'], '.2f')}" for s in spent.values()) or "–"
        sigma = ", ".join(f"{fmt(s['noise_multiplier'], '.2f')}" for s in spent.values()) or "–"
        print(
            f"{label:<10}{fmt(overall['dice_myocardium']):>10}{fmt(overall['dice_scar']):>11}"
            f"{fmt(overall['scar_burden_abs_error_percent'], '.2f'):>12}{result['wall_seconds']:>9.0f}"
            f"   {eps:<27} {sigma}"
        )
        if result.get("error") or result.get("failures"):
            print(f"{'':<10}  problem: {result.get('error') or ''} failures: {len(result.get('failures', []))}")

    print("\n(d) loss-threshold membership inference, score −loss: AUC [bootstrap 95 %], members vs non-members")
    print("    pooled: all pairs; within sites: pairs of one site only; eval / DP loss: the loss scored")
    print(
        f"{'run':<10}{'AUC bound':>10}  {'non-members':<12}{'n mem/non':>10}"
        f"{'pooled, eval loss':>24}{'within sites, eval loss':>26}{'pooled, DP loss':>24}{'adv.':>7}"
    )

    def auc_text(auc: float, ci: list[float] | None) -> str:
        return f"{auc:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{auc:.3f}"

    for label, result in results.items():
        inference = result.get("membership_inference")
        if not inference:
            continue
        spent = [s["epsilon_ledger"] for s in result.get("epsilon_spent", {}).values()]
        bound = fmt(auc_bound(max(spent), delta), ".3f") if spent else "1"
        for name, f in inference["evaluation"].items():
            g = inference["per_slice"][name]
            print(
                f"{label:<10}{bound:>10}  {name:<12}{f['members']:>4}/{f['non_members']:<5}"
                f"{auc_text(f['auc'], f['auc_ci95']):>24}"
                f"{auc_text(f['auc_within_site'], f['auc_within_site_ci95']):>26}"
                f"{auc_text(g['auc'], g['auc_ci95']):>24}{f['advantage_tpr_minus_fpr']:>7.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--cases", type=int, default=24, help="cases per site (the demo's 24)")
    parser.add_argument("--rounds", type=int, default=20, help="federated rounds (the demo's 20)")
    parser.add_argument("--epsilons", default="1,3,8", help="target ε per site for the whole run, comma-separated")
    parser.add_argument("--noise-multipliers", default="", help="extra DP runs with an explicit σ (no target ε)")
    parser.add_argument(
        "--max-local-steps", type=int, default=0, help="cap on local steps per round, all runs (0: none)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-cases", type=int, default=8, help="fresh non-member cases per site (0: none)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUC interval")
    parser.add_argument("--no-dp-baseline", action="store_true", help="skip the run without DP-SGD")
    parser.add_argument("--no-secure-aggregation", action="store_true", help="the demo uses SecAgg+; this turns it off")
    parser.add_argument("--workdir", type=Path, default=None, help="keep sites and runs here (default: a temp folder)")
    parser.add_argument(
        "--name", default="dp_utility_membership", help="results file name (benchmarks/results/NAME.json)"
    )
    args = parser.parse_args()
    epsilons = [float(e) for e in args.epsilons.split(",") if e.strip()]
    sigmas = [float(s) for s in args.noise_multipliers.split(",") if s.strip()]
    task = LgeScarSegmentation()
    delta = 1e-5  # the run config's dp-sgd-delta default (pyproject.toml)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        print(
            f"[{time.strftime('%H:%M:%S')}] generating and ingesting {args.sites} × {args.cases} cases "
            f"(+ {args.extra_cases} fresh per site) in {root}",
            flush=True,
        )
        site_dirs = make_sites(root / "consortium", args.sites, args.cases, args.seed)
        fresh_dirs = (
            make_fresh_sites(root / "fresh", args.sites, args.cases, args.extra_cases, args.seed)
            if args.extra_cases > 0
            else []
        )
        data_seconds = time.perf_counter() - started
        plan = (
            ([] if args.no_dp_baseline else [(NO_DP, None)])
            + [(f"ε={e:g}", ("epsilon", e)) for e in epsilons]
            + [(f"σ={s:g}", ("sigma", s)) for s in sigmas]
        )
        results = {label: one_run(args, task, label, dp, root, site_dirs, fresh_dirs) for label, dp in plan}
        split = {}
        for site_dir in site_dirs:
            training, validation = task.split(CaseStore(site_dir))
            split[site_dir.name] = {
                "training_cases": len(training),
                "validation_cases": len(validation),
                "training_patients": task.training_patients(CaseStore(site_dir)),
            }

    print_tables(results, delta)
    total = time.perf_counter() - started
    print(f"\ntotal wall time {total:.0f} s (data {data_seconds:.0f} s)")
    save(
        args.name,
        {
            "settings": {
                **vars(args),
                "workdir": str(args.workdir) if args.workdir else None,
                "epsilons": epsilons,
                "noise_multipliers": sigmas,
            },
            "split": split,
            "non_members": {
                "validation": "each site's validation cases (tasks.base.validation_case_ids, fraction 0.25)",
                "fresh": f"{args.extra_cases} new patients per site, same site distributions "
                "(phantom seed unchanged, case index ≥ --cases)",
            },
            "attack": "loss threshold, score = −per-case loss; 'evaluation' = the task's evaluation loss "
            "(segmentation_loss over the case's labelled slices), 'per_slice' = the DP-SGD training loss",
            "auc_bound_note": "largest AUC any attack can reach under (ε, δ)-DP, δ=1e-5 (hypothesis-testing region)",
            "auc_bounds": {f"{e:g}": auc_bound(e, delta) for e in epsilons},
            "results": results,
            "wall_seconds": {"total": total, "data": data_seconds},
        },
    )


if __name__ == "__main__":
    main()
