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

from cmrfl.demo_registry import (
    check_demo_registry,
    register_demo_model,
    register_in_own_registry,
    registry_lines,
    sign_demo_model,
)
from cmrfl.parallel_ingest import ingest_hospitals
from cmrfl.recipe import FederationRecipe
from tasks import get_task
from tasks.base import DemoRecipe, Task
from tasks.settings import GROUP_BALANCED, mitigation_problems


@dataclass(frozen=True)
class DemoSettings:
    # Any registered task; its DemoRecipe (tasks/<name>/) says how the phantom renders its
    # hospitals and gives the defaults below that are None (the LGE task: 60 patients a
    # hospital, 10 rounds, README "How long it takes").
    task: str = "lge"
    sites: int = 3
    cases_per_site: int | None = None
    rounds: int | None = None
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
    model_name: str | None = None
    # Train a second time on the same hospitals with group-balanced sampling (OUT/run-balanced)
    # and write that run's fairness report with the first run as its "before".
    compare_mitigation: bool = False
    balance_attribute: str = "sex"

    @property
    def recipe(self) -> DemoRecipe:
        """How the task's demo hospitals are made, and its defaults (tasks/<name>/)."""
        recipe = get_task(self.task).demo
        if recipe is None:
            raise ValueError(f"--task {self.task}: the task declares no demo (no phantom hospitals for it)")
        return recipe

    def __post_init__(self) -> None:
        recipe = self.recipe
        # Fill the task's defaults in, so that everything downstream reads one number.
        for name, default in (
            ("cases_per_site", recipe.cases_per_site),
            ("rounds", recipe.rounds),
            ("model_name", recipe.model_name),
        ):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
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
    task, recipe = get_task(settings.task), settings.recipe
    assert settings.rounds and settings.cases_per_site and settings.model_name  # __post_init__ filled them
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
        generating = progress.add_task("Generating synthetic hospitals", total=settings.sites * settings.cases_per_site)
        workers = os.cpu_count() or 1
        recipe.generate(
            hospitals_dir,
            settings.sites,
            settings.cases_per_site,
            settings.seed,
            on_case_written=lambda: progress.advance(generating),
            workers=workers,
        )
        hospitals = sorted(p for p in hospitals_dir.iterdir() if p.is_dir())
        ingesting = {h.name: progress.add_task(f"Ingesting {h.name} (de-identify)", total=None) for h in hospitals}
        site_dirs = ingest_hospitals(
            hospitals,
            sites_dir,
            workers,
            on_progress=lambda name, done, total: progress.update(ingesting[name], completed=done, total=total),
            kinds=task.series_kinds,  # the demo's sites store what its one task reads
        )

        if not settings.compare_mitigation:
            _train(site_dirs, run_dir, settings, progress, "Federated training (rounds)", "none")
        else:
            _train(site_dirs, run_dir, settings, progress, "Training, no mitigation (rounds)", "none")
            _train(
                site_dirs,
                balanced_dir,
                settings,
                progress,
                f"Training, {settings.balance_attribute}-balanced (rounds)",
                "group-balanced",
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
    console.print(final_table(summary, task))
    for line in privacy_lines(summary) + fairness_lines(summary):
        console.print(line, highlight=False)
    written = ", ".join(Path(path).name for path in summary.get("outputs", {}).values())
    console.print(f"Outputs in [bold]{run_dir}[/]: summary.json, {written} (open the .html in a browser)")
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
            highlight=False,
            soft_wrap=True,
        )
    if settings.compare_mitigation:
        summary["compare_mitigation"] = compare_mitigation(run_dir, balanced_dir, console)
    return summary


def register(
    settings: DemoSettings,
    run_dir: Path,
    signing_key: Path,
    site_dirs: list[Path],
    hospitals_dir: Path,
    console: Console,
) -> dict[str, Any]:
    """Register the signed model (own registry: also site accounts and one verified pull); print how to go on."""
    model_name = settings.model_name
    assert model_name is not None  # DemoSettings.__post_init__ fills it in
    started = time.monotonic()
    with console.status("Registering the model (MLflow registry)"):
        if settings.tracking_uri:
            registration = register_demo_model(run_dir, signing_key, model_name, settings.tracking_uri)
        else:
            registration = register_in_own_registry(settings.out, run_dir, signing_key, site_dirs, model_name)
    seconds = round(time.monotonic() - started, 1)
    for line in registry_lines(registration, hospitals_dir, settings.recipe.example_series):
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
    recipe = FederationRecipe(
        {
            "task": settings.task,
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
            **settings.recipe.run_config,  # the task's own
        }
    )
    recipe.simulate(
        site_dirs,
        flower_log=run_dir / "flower.log",
        on_round_end=lambda history: progress.update(training, completed=len(history)),
    )


def compare_mitigation(run_dir: Path, balanced_dir: Path, console: Console) -> dict[str, Any]:
    """The balanced run's fairness report, with the unmitigated run as its "before"."""
    from fairness.report import write_audit_report
    from fairness.run_store import NoFairnessStatistics

    balanced = json.loads((balanced_dir / "summary.json").read_text())
    task = get_task(balanced["task"])
    console.print(final_table(balanced, task, "with group-balanced sampling"))
    outcome: dict[str, Any] = {"run_dir": str(balanced_dir), "final": balanced["final"]}
    spec = task.audit_spec
    if spec is None:
        console.print("Before and after: no report (the task declares no fairness audit)", highlight=False)
        return outcome
    try:
        html_path, json_path = write_audit_report(balanced_dir, spec, baseline_dir=run_dir)
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


def final_table(summary: dict[str, Any], task: Task, training: str = "") -> Table:
    """The final model's headline figures per site and for all sites (the task's own)."""
    setup = f"{summary['strategy']}" + (f", {training}" if training else "")
    title = f"Final global model after {summary['rounds']} rounds ({setup})"
    table = Table(title=title)
    columns = task.headline_labels
    for column in ("site", "cases", *columns.values()):
        table.add_column(column, justify="right" if column != "site" else "left")

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    final = summary["final"]
    rows = {**{site: (site, m) for site, m in final["per_site"].items()}, "": ("[bold]all sites[/]", final["overall"])}
    for label, metrics in rows.values():
        table.add_row(label, str(metrics["cases_evaluated"]), *(fmt(metrics.get(key)) for key in columns))
    return table
