"""The `cmrfl` command: the front door that composes the other packages."""

from __future__ import annotations

import logging
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
) -> None:
    """Write synthetic multi-vendor hospitals: DICOM LGE stacks, masks and a manifest per site."""
    from rich.progress import Progress

    from cmr.phantom import generate_consortium

    with Progress(console=console) as progress:
        task = progress.add_task("Generating", total=sites * cases_per_site)
        generate_consortium(out, sites, cases_per_site, seed, on_case_written=lambda: progress.advance(task))
    console.print(f"Wrote {sites} hospitals × {cases_per_site} cases to [bold]{out}[/]")


@site_app.command("ingest")
def site_ingest(
    dicom_dir: Annotated[Path, typer.Argument(help="Folder of DICOM files, any nesting.")],
    site_dir: Annotated[Path, typer.Option(help="The site's folder (case store, reports).")],
    manifest: Annotated[Path | None, typer.Option(help="CSV of case-level labels and attributes.")] = None,
    labels: Annotated[Path | None, typer.Option(help="Folder of reference masks (NIfTI).")] = None,
) -> None:
    """De-identify a DICOM folder into the site's local case store (idempotent)."""
    from rich.progress import Progress

    from cmr.ingest import ingest_site

    try:
        with Progress(console=console) as progress:
            task = progress.add_task("Ingesting", total=None)
            report = ingest_site(
                dicom_dir,
                site_dir,
                manifest=manifest,
                labels_dir=labels,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except FileNotFoundError as missing:
        fail(str(missing))
    console.print(report.describe())


@app.command()
def demo(
    sites: Annotated[int, typer.Option(min=2, help="Number of synthetic hospitals.")] = 3,
    cases_per_site: Annotated[int, typer.Option(min=4, help="Patients per hospital.")] = 24,
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for data and training.")] = 0,
    strategy: Annotated[str, typer.Option(help="fedavg, fedprox, fedadam, fedmedian, fedtrimmedavg or krum.")] = "fedavg",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
) -> None:
    """Everything on one machine: synthetic hospitals, ingest, federated training, outputs."""
    from cmrfl.demo import DemoSettings, run_demo

    run_demo(
        DemoSettings(
            sites=sites, cases_per_site=cases_per_site, rounds=rounds, seed=seed, out=out, strategy=strategy
        ),
        console,
    )


if __name__ == "__main__":
    app()
