"""Which hospital site a ClientApp instance serves, and where its data lives."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmr.store import CaseStore
from fairness.suppression import DEFAULT_SUPPRESSION_THRESHOLD
from privacy.budget import SiteBudget, site_budget_from

SITE_CONFIG_FILE = "site.toml"


class SiteNotFoundError(RuntimeError):
    """The SuperNode was started without a usable site folder."""


class SiteConfigError(ValueError):
    """The site's site.toml says something this version cannot use (names file and key)."""


@dataclass(frozen=True)
class Site:
    site_id: str
    site_dir: Path
    privacy_budget: SiteBudget | None = None  # site.toml [privacy]: the most ε this site spends
    # site.toml [fairness] suppression-threshold: the smallest subgroup this site reports on.
    # A floor: the consortium's run config may raise it for a run, never lower it.
    suppression_threshold: int = DEFAULT_SUPPRESSION_THRESHOLD

    @property
    def store(self) -> CaseStore:
        return CaseStore(self.site_dir)


@dataclass(frozen=True)
class SiteConfig:
    """The site's own settings, site.toml (read once, validated; defaults without one)."""

    name: str | None = None
    privacy_budget: SiteBudget | None = None
    suppression_threshold: int = DEFAULT_SUPPRESSION_THRESHOLD

    @classmethod
    def read(cls, site_dir: Path) -> SiteConfig:
        config_path = Path(site_dir) / SITE_CONFIG_FILE
        if not config_path.is_file():
            return cls()
        try:
            config = tomllib.loads(config_path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as problem:
            raise SiteConfigError(f"{config_path}: not valid TOML ({problem})") from None
        return cls(
            name=str(config["name"]) if "name" in config else None,
            privacy_budget=site_budget_from(config["privacy"], config_path) if "privacy" in config else None,
            suppression_threshold=_suppression_threshold(config.get("fairness", {}), config_path),
        )


def load_site(site_dir: Path) -> Site:
    site_dir = Path(site_dir)
    if not CaseStore(site_dir).exists():
        raise SiteNotFoundError(
            f"{site_dir}: no case store (store/index.sqlite); run "
            f"'cmrfl site ingest DICOM_DIR --site-dir {site_dir}' first"
        )
    config = SiteConfig.read(site_dir)
    return Site(
        site_id=config.name or site_dir.name,
        site_dir=site_dir,
        privacy_budget=config.privacy_budget,
        suppression_threshold=config.suppression_threshold,
    )


def site_privacy_budget(site_dir: Path) -> SiteBudget | None:
    """The ``[privacy]`` table of the site's site.toml (validated), or None without one."""
    return SiteConfig.read(site_dir).privacy_budget


def _suppression_threshold(table: dict[str, Any], config_path: Path) -> int:
    unknown = sorted(set(table) - {"suppression-threshold"})
    if unknown:
        raise SiteConfigError(
            f"{config_path}: [fairness] has unknown key(s) {', '.join(unknown)}; known: suppression-threshold"
        )
    value = table.get("suppression-threshold", DEFAULT_SUPPRESSION_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SiteConfigError(
            f"{config_path}: [fairness] suppression-threshold={value!r} must be a whole number, 1 or more"
        )
    return value


def resolve_site(node_config: dict[str, Any], simulated_site_dirs: list[Path] | None) -> Site:
    """Deployment: ``--node-config 'site-dir="..."'``; simulation: the partition's site."""
    if "site-dir" in node_config:
        return load_site(Path(str(node_config["site-dir"])))
    if simulated_site_dirs is not None and "partition-id" in node_config:
        return load_site(simulated_site_dirs[int(node_config["partition-id"])])
    raise SiteNotFoundError("this SuperNode has no site folder: start it with --node-config 'site-dir=\"/path\"'")
