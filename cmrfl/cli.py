"""The `cmrfl` command: the front door that composes the other packages."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    help="Federated learning for cardiac MRI tissue characterisation across hospitals.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
site_app = typer.Typer(help="Commands a hospital site runs on its own machine.", no_args_is_help=True)
app.add_typer(site_app, name="site")
audit_app = typer.Typer(help="Fairness audit of a training run.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
from cmrfl.cli_registry import predict, registry_app  # noqa: E402 - registry commands live in their own module

app.add_typer(registry_app, name="registry")
app.command("predict")(predict)
from cmrfl.cli_inventory import site_inventory  # noqa: E402 - the inventory command lives in its own module
from cmrfl.cli_mapping import map_app  # noqa: E402 - mapping commands live in their own module

app.add_typer(map_app, name="map")
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # soft wrap: a path in an error stays whole


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop with a plain one-line error (no box that would cut a long path)."""
    errors.print(f"[bold red]Error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


@app.command()
def phantom(
    out: Annotated[Path, typer.Option(help="Folder to write the hospitals into.")],
    sites: Annotated[int, typer.Option(min=1, help="Number of hospitals.")] = 3,
    cases_per_site: Annotated[int, typer.Option(min=1, help="Patients per hospital.")] = 24,
    seed: Annotated[int, typer.Option(help="Everything is deterministic for a seed.")] = 0,
    task: Annotated[
        str, typer.Option(help="The task whose acquisitions to render (cmrfl demo --help lists them).")
    ] = "lge",
    max_motion_mm: Annotated[
        float | None, typer.Option(min=0, help="Motion between frames, up to this (tasks whose phantom takes it).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes writing cases side by side (default: one per core).")
    ] = None,
    whole_exam: Annotated[
        bool | None,
        typer.Option(
            "--whole-exam/--lge-only",
            help="Each patient's whole CMR exam (localizer, cines, LGE with PSIR and long-axis views,"
            " MOLLI and T2-prep with the scanner's maps), or the LGE short-axis stack only"
            " (tasks whose phantom takes it; default: whole exam).",
        ),
    ] = None,
) -> None:
    """Write synthetic multi-vendor hospitals: DICOM series, masks and a manifest per site."""
    from rich.progress import Progress

    recipe = _demo_recipe(task)
    options: dict[str, object] = {} if max_motion_mm is None else {"max_motion_mm": max_motion_mm}
    if whole_exam is not None:
        options["whole_exam"] = whole_exam
    with Progress(console=console) as progress:
        bar = progress.add_task("Generating", total=sites * cases_per_site)
        try:
            recipe.generate(
                out,
                sites,
                cases_per_site,
                seed,
                on_case_written=lambda: progress.advance(bar),
                workers=workers or os.cpu_count() or 1,
                **options,
            )
        except TypeError as unknown:
            fail(f"--task {task}: its phantom does not take these options ({unknown})")
    console.print(f"Wrote {sites} hospitals × {cases_per_site} cases to [bold]{out}[/]")


def _demo_recipe(task: str):
    from tasks import get_task, task_names
    from tasks.registry import UnknownTaskError

    try:
        recipe = get_task(task).demo
    except UnknownTaskError:
        fail(f"--task {task!r}: choose one of {', '.join(task_names())}")
    if recipe is None:
        fail(f"--task {task}: the task declares no synthetic hospitals (no demo recipe)")
    return recipe


@site_app.command("ingest")
def site_ingest(
    dicom_dir: Annotated[Path, typer.Argument(help="Folder of DICOM files, any nesting.")],
    site_dir: Annotated[Path, typer.Option(help="The site's folder (case store, reports).")],
    manifest: Annotated[Path | None, typer.Option(help="CSV of case-level labels and attributes.")] = None,
    labels: Annotated[Path | None, typer.Option(help="Folder of reference masks (NIfTI).")] = None,
    replace: Annotated[
        bool,
        typer.Option(
            help="Store each case as this run reads it, even where that drops a mask or case label the stored"
            " case has (by default they are kept, and reported)."
        ),
    ] = False,
    follow_links: Annotated[
        bool,
        typer.Option(help="Read links to files and folders outside DICOM_DIR (by default reported, not read)."),
    ] = False,
) -> None:
    """De-identify a DICOM folder into the site's local case store (idempotent).

    Only series of the kinds the tasks read are stored; the report lists every other
    series (localizers, long-axis cines, other body parts …) with the kind it was taken for.
    A stored case never loses its mask or labels to a run that lacks them, unless --replace.
    """
    from rich.progress import Progress

    from cmr.ingest import SaltMismatch, ingest_site
    from tasks.registry import tasks_by_series_kind

    kinds = tasks_by_series_kind()
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("Ingesting", total=None)
            report = ingest_site(
                dicom_dir,
                site_dir,
                manifest=manifest,
                labels_dir=labels,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
                kinds=kinds,
                replace=replace,
                follow_links=follow_links,
            )
    except (FileNotFoundError, SaltMismatch) as impossible:  # a missing folder; a damaged, lost or changed salt
        fail(str(impossible))
    console.print(report.describe())


site_app.command("inventory")(site_inventory)


@site_app.command("privacy")
def site_privacy(
    site_dir: Annotated[Path, typer.Option(help="The site's folder (holds privacy-ledger.sqlite).")],
) -> None:
    """Print the site's privacy ledger: every DP-SGD round and decline, and the ε spent."""
    from client.site import site_privacy_budget
    from privacy.ledger import PrivacyLedger, ledger_table

    if not site_dir.is_dir():
        fail(f"site folder not found: {site_dir}")
    ledger = PrivacyLedger.for_site(site_dir)
    budget = site_privacy_budget(site_dir)
    limit = "no [privacy] budget in site.toml" if budget is None else f"budget: max ε={budget.max_epsilon:g}"
    entries = ledger.entries()
    if not entries:
        console.print(f"{ledger.path}: no DP-SGD round recorded yet ({limit})")
        return
    console.print(ledger_table(entries))
    for entry in (e for e in entries if e.reason):
        console.print(f"#{entry.entry}: {entry.reason}", highlight=False)
    trained = [e for e in entries if e.outcome == "trained"]
    spent = f"ε={trained[-1].epsilon_cumulative:.3f} at δ={trained[-1].delta:g}" if trained else "ε=0"
    console.print(f"Spent: {spent}; {limit}; ledger: {ledger.path}", highlight=False)


@app.command()
def demo(
    task: Annotated[
        str, typer.Option(help="Any registered task: lge (scar segmentation), mapping (T1 maps), ...")
    ] = "lge",
    sites: Annotated[int, typer.Option(min=2, help="Number of synthetic hospitals.")] = 3,
    cases_per_site: Annotated[
        int | None,
        typer.Option(min=4, help="Patients per hospital (default: the task's; lge 60, enough for the fairness audit)."),
    ] = None,
    rounds: Annotated[int | None, typer.Option(min=1, help="Federated rounds (default: the task's; lge 10).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data and training.")] = 0,
    strategy: Annotated[
        str, typer.Option(help="fedavg, fedprox, fedadam, fedmedian, fedtrimmedavg or krum.")
    ] = "fedavg",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    dp_sgd: Annotated[
        bool, typer.Option(help="Patient-level DP-SGD at every site (Opacus), to the target ε below.")
    ] = False,
    epsilon: Annotated[float, typer.Option(min=0.01, help="Each site's target ε for the whole run (δ = 1e-5).")] = 8.0,
    secure_aggregation: Annotated[
        bool, typer.Option(help="Masked model updates: the server sees only their sum (SecAgg+).")
    ] = True,
    register: Annotated[
        bool,
        typer.Option(
            help="Register the signed model: in the registry at MLFLOW_TRACKING_URI (as its admin, "
            "MLFLOW_TRACKING_USERNAME/PASSWORD) when set, else in the demo's own registry in OUT/registry, "
            "which a demo site then pulls from; --no-register only signs it. See docs/registry.md."
        ),
    ] = True,
    compare_mitigation: Annotated[
        bool,
        typer.Option(
            help="Train twice on the same hospitals, without and with group-balanced sampling by sex "
            "(OUT/run, OUT/run-balanced); the second run's fairness report shows before and after."
        ),
    ] = False,
) -> None:
    """Everything on one machine: synthetic hospitals, ingest, federated training, outputs."""
    import os

    from cmrfl.demo import DemoSettings, run_demo

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    try:
        settings = DemoSettings(
            task=task,
            sites=sites,
            cases_per_site=cases_per_site,
            rounds=rounds,
            seed=seed,
            out=out,
            strategy=strategy,
            dp_sgd=dp_sgd,
            target_epsilon=epsilon,
            secure_aggregation=secure_aggregation,
            register=register,
            tracking_uri=tracking_uri,
            compare_mitigation=compare_mitigation,
        )
    except ValueError as invalid:
        fail(str(invalid))
    if register:  # before minutes of training, not after
        from cmrfl.demo_registry import check_demo_registry

        try:
            check_demo_registry(out, tracking_uri)
        except ValueError as problem:
            fail(str(problem))
    run_demo(settings, console)


@audit_app.command("report")
def audit_report(
    run_dir: Annotated[Path, typer.Argument(help="The run folder (holds fairness/round-NNN.json).")],
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="Another run of the same task (e.g. without the fairness mitigation): adds a before-and-after section."
        ),
    ] = None,
) -> None:
    """Write RUN_DIR/fairness-audit.html and .json from the subgroup statistics the sites sent."""
    from fairness.report import write_audit_report
    from fairness.run_store import NoFairnessStatistics, load_run_statistics
    from tasks import get_task

    for folder in (run_dir, baseline):
        if folder is not None and not folder.is_dir():
            fail(f"run folder not found: {folder}")
    try:
        task_name = load_run_statistics(run_dir).last.task  # the run store records which task it audits
        spec = get_task(task_name).audit_spec
        if spec is None:
            fail(f"{run_dir}: task {task_name!r} declares no fairness audit")
        html_path, json_path = write_audit_report(run_dir, spec, baseline_dir=baseline)
    except NoFairnessStatistics as missing:
        fail(str(missing))
    except KeyError as unknown:  # a task this installation does not have
        fail(f"{run_dir}: {unknown.args[0]}")
    except ValueError as invalid:
        fail(f"{run_dir}: {invalid}")
    console.print(f"Wrote [bold]{html_path}[/] and [bold]{json_path}[/]")


from cmrfl.cli_deployment import add_deployment_commands  # noqa: E402  (pki, server, site init|check|join, train)

add_deployment_commands(app, site_app)


if __name__ == "__main__":
    app()
