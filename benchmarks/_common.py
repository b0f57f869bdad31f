"""Shared set-up for benchmarks: synthetic sites, ingested, and result saving."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def make_sites(root: Path, n_sites: int, cases_per_site: int, seed: int) -> list[Path]:
    from cmr.ingest import ingest_site
    from cmr.phantom import generate_consortium

    hospitals = root / "hospitals"
    generate_consortium(hospitals, n_sites=n_sites, cases_per_site=cases_per_site, seed=seed)
    site_dirs = []
    for hospital in sorted(p for p in hospitals.iterdir() if p.is_dir()):
        site_dir = root / "sites" / hospital.name
        ingest_site(hospital / "dicom", site_dir, hospital / "manifest.csv", hospital / "labels")
        site_dirs.append(site_dir)
    return site_dirs


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2))
    print(f"saved {path}")
    return path
