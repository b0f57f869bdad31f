"""`cmrfl demo`: synthetic hospitals → DICOM → site ingest → federated training → outputs."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cmr.phantom import generate_consortium
from cmrfl.demo_registry import (
    check_demo_registry,
    register_demo_model,
    register_in_own_registry,
    registry_lines,
    sign_demo_model,
)
from cmrfl.parallel_ingest import ingest_hospitals
from cmrfl.simulation import run_simulated_federation
from tasks.sampling import GROUP_BALANCED, mitigation_problems


@dataclass(frozen=True)
class DemoSettings:
    sites: int = 3
    # 60 patients a hospital: about 13 validation patients each, so that groups of 10 or
    # more reach the fairness audit (a site withholds smaller ones) and the model learns
    # scar as well as myocardium. 10 rounds: on a 2-core machine the whole demo took
    # 3 min 23 s (10.6 s a round), consortium myocardium Dice 0.85; 20 rounds reach 0.89
    # in about two minutes more (README, "How long it takes").
    cases_per_site: int = 60
    rounds: int = 10
    seed: int = 0
    out: Path = Path("runs/demo")
    strategy: str = "fedavg"
    local_epochs: int = 1
    # Off by default: at the demo's size (about 45 training patients per site) patient-level
    # DP-SGD leaves too little signal to learn from (benchmarks/dp_utility_membership.py).
    dp_sgd: bool = False
    target_epsilon: float = 8.0  # per site, the whole run
    secure_aggregation: bool = True
    # The final model is always signed with a demo key (well under a second) and, unless
    # register is off, registered: in the running registry at tracking_uri (the CLI passes
    # MLFLOW_TRACKING_URI) or, without one, in the demo's own registry in OUT/registry.
    register: bool = True
    tracking_uri: str | None = None
    model_name: str = "lge-scar"
    # Train a second time on the same hospitals with group-balanced sampling (OUT/run-balanced)
    # and write that run's fairness report with the first run as its "before".
    compare_mitigation: bool = False
    balance_attribute: str = "sex"

    def __post_init__(self) -> None:
        if self.compare_mitigation:
            problems = mitigation_problems(GROUP_BALANCED, self.balance_attribute, self.dp_sgd)
            if problems:
                raise ValueError("--compare-mitigation: " + "; ".join(problems))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def run_demo(settings: DemoSettings, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    out = settings.out
    hospitals_dir, sites_dir, run_dir = out / "hospitals", out / "sites", out / "run"
    balanced_dir = out / "run-balanced"
    started = time.monotonic()
    if settings.register:  # before minutes of training, not after
        check_demo_registry(out, settings.tracking_uri)
    for stale in (hospitals_dir, sites_dir, run_dir, balanced_dir):  # a demo always starts clean
        if stale.exists():
            shutil.rmtree(stale)

    with _progress(console) as progress:
        generating = progress.add_task(
            "Generating synthetic hospitals", total=settings.sites * settings.cases_per_site
        )
        workers = os.cpu_count() or 1
        generate_consortium(
            hospitals_dir,
            n_sites=settings.sites,
            cases_per_site=settings.cases_per_site,
            seed=settings.seed,
            on_case_written=lambda: progress.advance(generating),
            workers=workers,
        )
        hospitals = sorted(p for p in hospitals_dir.iterdir() if p.is_dir())
        ingesting = {
            h.name: progress.add_task(f"Ingesting {h.name} (de-identify)", total=None) for h in hospitals
        }
        site_dirs = ingest_hospitals(
            hospitals,
            sites_dir,
            workers,
            on_progress=lambda name, done, total: progress.update(ingesting[name], completed=done, total=total),
        )

        if not settings.compare_mitigation:
            _train(site_dirs, run_dir, settings, progress, "Federated training (rounds)", "none")
        else:
            _train(site_dirs, run_dir, settings, progress, "Training, no mitigation (rounds)", "none")
            _train(
                site_dirs, balanced_dir, settings, progress,
                f"Training, {settings.balance_attribute}-balanced (rounds)", "group-balanced",
            )

    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["demo"] = {
        "hospitals_dir": str(hospitals_dir),
        "site_dirs": [str(d) for d in site_dirs],
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    if settings.compare_mitigation:
        summary["demo"]["balanced_run_dir"] = str(balanced_dir)
    summary_path.write_text(json.dumps(summary, indent=2))
    signing_key = sign_demo_model(out, run_dir, site_dirs, settings.model_name)
    console.print(final_table(summary))
    for line in privacy_lines(summary) + fairness_lines(summary):
        console.print(line, highlight=False)
    console.print(
        f"Outputs in [bold]{run_dir}[/]: summary.json, metrics.csv, final_model.pt, dice_per_round.png, "
        "fairness-audit.html (open it in a browser), fairness-audit.json"
    )
    console.print(
        f"Model card [bold]{run_dir / 'model-card.md'}[/], signed with the demo key {signing_key} "
        "(pinned in each demo site's trust/ folder)"
    )
    if settings.register:
        summary["registered"] = register(settings, run_dir, signing_key, site_dirs, hospitals_dir, console)
    else:
        console.print(
            f"Not registered (--no-register); register this run later with `cmrfl registry register {run_dir} "
            f"--name {settings.model_name} --signing-key {signing_key}`",
            highlight=False, soft_wrap=True,
        )
    if settings.compare_mitigation:
        summary["compare_mitigation"] = compare_mitigation(run_dir, balanced_dir, console)
    return summary


def register(
    settings: DemoSettings, run_dir: Path, signing_key: Path, site_dirs: list[Path], hospitals_dir: Path, console: Console
) -> dict[str, Any]:
    """Register the signed model (own registry: also site accounts and one verified pull); print how to go on."""
    started = time.monotonic()
    with console.status("Registering the model (MLflow registry)"):
        if settings.tracking_uri:
            registration = register_demo_model(run_dir, signing_key, settings.model_name, settings.tracking_uri)
        else:
            registration = register_in_own_registry(settings.out, run_dir, signing_key, site_dirs, settings.model_name)
    seconds = round(time.monotonic() - started, 1)
    for line in registry_lines(registration, hospitals_dir):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    return {
        "model": registration.name,
        "version": registration.version,
        "run_id": registration.run_id,
        "tracking_uri": registration.tracking_uri,
        "registry_dir": None if registration.registry_dir is None else str(registration.registry_dir),
        "pulled_into": None if registration.pulled_into is None else str(registration.pulled_into),
        "seconds": seconds,
    }


def _train(
    site_dirs: list[Path], run_dir: Path, settings: DemoSettings, progress: Progress, description: str, mitigation: str
) -> None:
    training = progress.add_task(description, total=settings.rounds)
    run_simulated_federation(
        site_dirs,
        run_config={
            "num-server-rounds": settings.rounds,
            "strategy": settings.strategy,
            "local-epochs": settings.local_epochs,
            "min-train-sites": settings.sites,
            "min-available-sites": settings.sites,
            "seed": settings.seed,
            "run-dir": str(run_dir),
            "resume": False,
            "dp-sgd": settings.dp_sgd,
            "dp-sgd-target-epsilon": settings.target_epsilon,
            "secure-aggregation": settings.secure_aggregation,
            "fairness-mitigation": mitigation,
            "fairness-balance-attribute": settings.balance_attribute,
        },
        flower_log=run_dir / "flower.log",
        on_round_end=lambda history: progress.update(training, completed=len(history)),
    )


def compare_mitigation(run_dir: Path, balanced_dir: Path, console: Console) -> dict[str, Any]:
    """The balanced run's fairness report, with the unmitigated run as its "before"."""
    from fairness.report import write_audit_report
    from fairness.run_store import NoFairnessStatistics

    balanced = json.loads((balanced_dir / "summary.json").read_text())
    console.print(final_table(balanced, "with group-balanced sampling"))
    outcome: dict[str, Any] = {"run_dir": str(balanced_dir), "final": balanced["final"]}
    try:
        html_path, json_path = write_audit_report(balanced_dir, baseline_dir=run_dir)
    except NoFairnessStatistics as missing:
        console.print(f"Before and after: no report ({missing})", highlight=False)
        return outcome
    lines = json.loads(json_path.read_text())["before_and_after"]["summary"]
    console.print("Before and after the mitigation: " + " ".join(lines[1:-1]), highlight=False)
    console.print(f"Report with both runs: [bold]{html_path}[/] (section 8 has every group)")
    return outcome | {"fairness_report": str(html_path), "before_and_after": lines}


def privacy_lines(summary: dict[str, Any]) -> list[str]:
    privacy = summary.get("privacy", {})
    secagg = privacy.get("secure_aggregation", {}).get("enabled", False)
    lines = [
        "Secure aggregation (SecAgg+): "
        + ("on, the server saw only the sum of the sites' updates" if secagg else "off")
    ]
    dp = privacy.get("dp_sgd", {})
    if dp.get("enabled"):
        spent = ", ".join(f"{site} ε={s['epsilon']:.2f} at δ={s['delta']:g}" for site, s in dp["sites"].items())
        lines.append(f"DP-SGD (patient-level), privacy spent: {spent or 'no site trained'}")
    else:
        lines.append("DP-SGD: off (turn on with --dp-sgd --epsilon E)")
    return lines


def fairness_lines(summary: dict[str, Any]) -> list[str]:
    path = summary.get("outputs", {}).get("fairness_report_json")
    if not path or not Path(path).is_file():
        return ["Fairness audit: no report (no site sent subgroup statistics)"]
    return ["Fairness audit: " + " ".join(json.loads(Path(path).read_text())["summary"])]


def final_table(summary: dict[str, Any], training: str = "") -> Table:
    title = f"Final global model after {summary['rounds']} rounds ({summary['strategy']}{', ' + training if training else ''})"
    table = Table(title=title)
    for column in ("site", "cases", "Dice myocardium", "Dice scar", "scar burden error (% points)"):
        table.add_column(column, justify="right" if column != "site" else "left")

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    final = summary["final"]
    for site, metrics in final["per_site"].items():
        table.add_row(
            site,
            str(metrics["cases_evaluated"]),
            fmt(metrics["dice_myocardium"]),
            fmt(metrics["dice_scar"]),
            fmt(metrics["scar_burden_abs_error_percent"]),
        )
    overall = final["overall"]
    table.add_row(
        "[bold]all sites[/]",
        str(overall["cases_evaluated"]),
        fmt(overall["dice_myocardium"]),
        fmt(overall["dice_scar"]),
        fmt(overall["scar_burden_abs_error_percent"]),
    )
    return table
