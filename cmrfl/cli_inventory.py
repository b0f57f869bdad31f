"""`cmrfl site inventory`: a site's exams by series kind, and which tasks each can feed.

Headers only, nothing written: staff run it on a hospital export before ingesting, to
see what ingest will take for each task and what it will leave (localizers, long-axis
cines, other body parts …), exam by exam.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True, soft_wrap=True)


def site_inventory(
    dicom_dir: Annotated[Path, typer.Argument(help="Folder of DICOM files, any nesting (a hospital export).")],
    manifest: Annotated[
        Path | None, typer.Option(help="The manifest ingest will use (its series_kind column overrides).")
    ] = None,
    show_exams: Annotated[int, typer.Option(help="How many exams to list one by one (0: none).", min=0)] = 20,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every exam and series as JSON.")] = None,
) -> None:
    """List the exams under DICOM_DIR by series kind, with the tasks each kind and exam can feed."""
    from cmr.inventory import take_inventory
    from tasks.registry import tasks_by_series_kind

    try:
        inventory = take_inventory(dicom_dir, manifest)
    except FileNotFoundError as missing:
        errors.print(f"[bold red]Error:[/] {missing}", highlight=False)
        raise typer.Exit(2) from None
    readers = tasks_by_series_kind()
    kinds = Table(title=f"{dicom_dir}: {len(inventory.exams)} exams, {inventory.files_seen} files")
    for column in ("series kind", "series", "exams", "read by"):
        kinds.add_column(column)
    exams_by_kind = inventory.exams_by_kind()
    for kind, n in sorted(inventory.series_by_kind().items()):
        tasks = ", ".join(readers.get(kind, ())) or "[dim]no task (not ingested)[/]"
        kinds.add_row(kind, str(n), str(exams_by_kind[kind]), tasks)
    console.print(kinds)
    if show_exams and inventory.exams:
        exams = Table(title="Exams" + (f" (first {show_exams})" if len(inventory.exams) > show_exams else ""))
        for column in ("exam folder", "series by kind", "can feed"):
            exams.add_column(column, overflow="fold")
        for exam in inventory.exams[:show_exams]:
            counts = ", ".join(f"{kind} {n}" for kind, n in sorted(exam.kinds().items()))
            exams.add_row(exam.folder, counts, ", ".join(exam.tasks(readers)) or "[dim]no task[/]")
        console.print(exams)
    if inventory.rejections:
        unusable = len(inventory.rejections)
        console.print(f"{unusable} files or manifest rows cannot be used; `cmrfl site ingest` lists them.")
    if json_out is not None:
        json_out.write_text(json.dumps(inventory.to_json_dict(readers), indent=1) + "\n")
        console.print(f"Wrote [bold]{json_out}[/]")
