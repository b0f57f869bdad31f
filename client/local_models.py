"""The models a site has pulled: SITE_DIR/models/MODEL/VERSION/, verified again before each use."""

from __future__ import annotations

from pathlib import Path

from client.model_trust import VerifiedModel, load_trusted_key, verify_model_folder

PULL_RECORD = "pulled.json"  # where and when a version was pulled, by which account


def models_dir(site_dir: Path) -> Path:
    return Path(site_dir) / "models"


def local_model_folder(site_dir: Path, name: str, version: str | None = None) -> Path:
    """A pulled model's folder: ``version``, or the highest version pulled."""
    folder = models_dir(site_dir) / name
    if version is not None:
        chosen = folder / version
        if not chosen.is_dir():
            raise FileNotFoundError(f"{chosen}: model {name} version {version} has not been pulled to this site")
        return chosen
    versions = sorted((p for p in folder.glob("*") if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise FileNotFoundError(
            f"{folder}: no pulled version of model {name} (run `cmrfl registry pull {name} --site-dir {site_dir}`)"
        )
    return versions[-1]


def load_verified_local_model(site_dir: Path, name: str, version: str | None = None) -> VerifiedModel:
    """Verify a pulled model again before use: files at rest can change too."""
    folder = local_model_folder(site_dir, name, version)
    return verify_model_folder(folder, load_trusted_key(site_dir), expected_model=name)
