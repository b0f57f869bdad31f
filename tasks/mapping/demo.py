"""The mapping task's demo hospitals: the phantom's MOLLI examinations (cmr.phantom.mapping_consortium)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cmr.phantom.mapping_consortium import generate_mapping_consortium


def generate_mapping_hospitals(
    out_dir: Path,
    n_sites: int,
    cases_per_site: int,
    seed: int,
    on_case_written: Callable[[], None] | None = None,
    workers: int = 1,  # the mapping phantom writes in one process
    max_motion_mm: float = 4.0,
) -> dict:
    """Hospitals of native and post-contrast MOLLI examinations, with motion between frames."""
    return generate_mapping_consortium(
        out_dir, n_sites, cases_per_site, seed, on_case_written=on_case_written, max_motion_mm=max_motion_mm
    )
