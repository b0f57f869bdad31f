"""Ingest several hospitals side by side, one process each (the demo's sites).

In a real consortium every site ingests on its own machine; on one machine the
demo's three hospitals are independent too, so they run in parallel processes.
This module stays light (no torch, no Flower) because each spawned process
imports it.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable, Collection
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cmr.ingest import ingest_site

ProgressCallback = Callable[[str, int, int], None]  # (hospital name, done, total)


def _ingest_hospital(hospital: Path, site_dir: Path, updates: queue.Queue, kinds: list[str] | None) -> None:
    ingest_site(
        hospital / "dicom",
        site_dir,
        manifest=hospital / "manifest.csv",
        labels_dir=hospital / "labels",
        on_progress=lambda done, total: updates.put((hospital.name, done, total)),
        kinds=kinds,
    )


def ingest_hospitals(
    hospitals: list[Path],
    sites_dir: Path,
    workers: int,
    on_progress: ProgressCallback | None = None,
    kinds: Collection[str] | None = None,
) -> list[Path]:
    """Ingest each generated hospital (``dicom/``, ``manifest.csv``, ``labels/``) into
    ``sites_dir/<name>``; return the site folders in the hospitals' order.

    ``kinds``: the series kinds to store (``cmr.ingest.ingest_site``); None: every kind a reader reads.

    A hospital that fails raises here, after the others have finished.
    """
    site_dirs = [sites_dir / hospital.name for hospital in hospitals]
    # Spawned, not forked: the caller may already hold torch's threads.
    context = multiprocessing.get_context("spawn")
    with (
        context.Manager() as manager,
        ProcessPoolExecutor(max_workers=max(1, min(workers, len(hospitals))), mp_context=context) as pool,
    ):
        updates = manager.Queue()
        wanted = None if kinds is None else [str(kind) for kind in kinds]
        futures = [pool.submit(_ingest_hospital, h, d, updates, wanted) for h, d in zip(hospitals, site_dirs)]
        while True:
            finished = all(future.done() for future in futures)
            try:
                while True:  # everything reported so far, then look at the workers again
                    update = updates.get(timeout=0.1)
                    if on_progress is not None:
                        on_progress(*update)
            except queue.Empty:
                pass
            if finished:
                break
        for future in futures:
            future.result()
    return site_dirs
