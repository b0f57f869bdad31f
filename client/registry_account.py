"""A site's own account at the model registry, kept in the site folder (owner-only).

``SITE_DIR/registry-account.toml`` holds the registry's address, the site's account
name and its password, so that `cmrfl registry pull --site-dir SITE_DIR` needs nothing
else. Like an SSH key, it is refused when others may read it. MLflow's variables
(MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD) still win.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

ACCOUNT_FILE = "registry-account.toml"


class RegistryAccountError(ValueError):
    """The site's registry account file cannot be used (names the file and the problem)."""


@dataclass(frozen=True)
class RegistryAccount:
    tracking_uri: str
    username: str
    password: str


def account_path(site_dir: Path) -> Path:
    return Path(site_dir) / ACCOUNT_FILE


def write_registry_account(site_dir: Path, account: RegistryAccount) -> Path:
    path = account_path(site_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)  # also when it existed, and whatever the umask
    quoted = {key: json.dumps(value) for key, value in vars(account).items()}  # a JSON string is a TOML string
    path.write_text(
        "# This site's account at the consortium model registry, read by `cmrfl registry pull`.\n"
        "# Keep it readable by the site's operator only (mode 0600).\n"
        f"tracking_uri = {quoted['tracking_uri']}\n"
        f"username = {quoted['username']}\n"
        f"password = {quoted['password']}\n"
    )
    return path


def load_registry_account(site_dir: Path) -> RegistryAccount | None:
    """The site's account, or None when the site keeps none."""
    path = account_path(site_dir)
    if not path.is_file():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise RegistryAccountError(
            f"{path}: holds a password but others may read it (mode {mode:04o}); run chmod 600 {path}"
        )
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise RegistryAccountError(f"{path}: not valid TOML ({error})") from None
    missing = [
        key
        for key in ("tracking_uri", "username", "password")
        if not isinstance(values.get(key), str) or not values[key]
    ]
    if missing:
        raise RegistryAccountError(f"{path}: missing or empty {', '.join(missing)} (each a string)")
    return RegistryAccount(values["tracking_uri"], values["username"], values["password"])
