"""Shared fixtures: small synthetic hospitals from the real generator, ingested for real."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_consortium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic hospitals as DICOM + masks + manifest (generator output)."""
    from cmr.phantom import generate_consortium

    out = tmp_path_factory.mktemp("hospitals")
    generate_consortium(out, n_sites=3, cases_per_site=8, seed=7)
    return out


TASK_KINDS = ("lge-stack", "molli-t1")  # what tasks_by_series_kind() gives, without importing the tasks


@pytest.fixture(scope="session")
def ingested_sites(small_consortium: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Each hospital's whole exams ingested into its own site folder, keeping the kinds the tasks read."""
    from cmr.ingest import ingest_site

    root = tmp_path_factory.mktemp("sites")
    site_dirs = []
    for hospital in sorted(p for p in small_consortium.iterdir() if p.is_dir()):
        site_dir = root / hospital.name
        ingest_site(
            hospital / "dicom",
            site_dir,
            manifest=hospital / "manifest.csv",
            labels_dir=hospital / "labels",
            kinds=TASK_KINDS,
        )
        site_dirs.append(site_dir)
    return site_dirs
