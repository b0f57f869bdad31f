"""The Flower App that ``flwr run`` submits: only the app's sources and pyproject.toml.

A copy, so the bundle never carries the checkout's runs/, virtual environment or data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
APP_PACKAGES = ("cmr", "tasks", "privacy", "fairness", "client", "server", "cmrfl")
APP_FILES = ("pyproject.toml", "README.md")


def app_copy(app_dir: Path) -> Path:
    app_dir = Path(app_dir)
    if app_dir.exists():
        shutil.rmtree(app_dir)
    app_dir.mkdir(parents=True)
    for package in APP_PACKAGES:
        shutil.copytree(REPO_ROOT / package, app_dir / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in APP_FILES:
        shutil.copy(REPO_ROOT / name, app_dir / name)
    return app_dir
