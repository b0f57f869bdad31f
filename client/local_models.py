"""The models a site has pulled: SITE_DIR/models/MODEL/VERSION/, verified again before each use.

Names and versions become folder names, so both are checked (versions are plain positive
integers) and a folder must resolve to exactly where it should: neither a registry's
answer nor a symbolic link can make a pull write, or predict read, anywhere else. The
version a site uses by default is the one with the newest approval signed by the
consortium (``approval.json`` beside it); an approval that does not verify counts as none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client.model_trust import (
    APPROVAL_FILE,
    Approval,
    SignatureError,
    VerifiedModel,
    load_trusted_key,
    verify_approval,
    verify_model_folder,
)

PULL_RECORD = "pulled.json"  # where and when a version was pulled, by which account
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")  # MLflow numbers versions 1, 2, …; nothing else is one


class ModelFolderError(ValueError):
    """A model name, version or folder the site will not use (the message names it)."""


def is_plain_version(value: object) -> bool:
    return isinstance(value, str) and _VERSION.fullmatch(value) is not None


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.fullmatch(name):
        raise ModelFolderError(f"model name {name!r}: expected letters, digits, '.', '_' or '-' (e.g. lge-scar)")
    return name


def check_version(version: str) -> str:
    if not is_plain_version(version):
        raise ModelFolderError(f"model version {version!r}: expected a plain positive integer such as 3")
    return version


def models_dir(site_dir: Path) -> Path:
    return Path(site_dir) / "models"


def version_folder(site_dir: Path, name: str, version: str) -> Path:
    """SITE_DIR/models/NAME/VERSION, refused unless it resolves to exactly that place."""
    root = models_dir(site_dir)
    folder = root / check_model_name(name) / check_version(version)
    resolved, expected = folder.resolve(), root.resolve() / name / version
    if resolved != expected:
        where = "inside" if resolved.is_relative_to(root.resolve()) else "outside"
        raise ModelFolderError(
            f"{folder}: a symbolic link leads it elsewhere, {where} {root} (to {resolved}); "
            "refusing to write or read there, and nothing was deleted"
        )
    return folder


def pulled_versions(site_dir: Path, name: str) -> list[str]:
    folder = models_dir(site_dir) / check_model_name(name)
    return sorted((p.name for p in folder.glob("*") if p.is_dir() and is_plain_version(p.name)), key=int)


def site_approvals(site_dir: Path, name: str, key: Ed25519PublicKey) -> dict[str, Approval]:
    """The signed approvals the site holds for ``name``, by version; forged or linked ones are left out."""
    approvals = {}
    for version in pulled_versions(site_dir, name):
        try:
            path = version_folder(site_dir, name, version) / APPROVAL_FILE
            if path.is_file():
                approvals[version] = verify_approval(path.read_text(), key, str(path), name, version)
        except (ModelFolderError, SignatureError, UnicodeDecodeError):
            continue
    return approvals


@dataclass(frozen=True)
class LocalModel:
    name: str
    version: str
    verified: VerifiedModel
    approval: Approval | None  # this version's own signed approval, if it has one
    approved_version: str | None  # the version with the newest signed approval at this site

    @property
    def approved(self) -> bool:
        return self.version == self.approved_version

    def warning(self) -> str | None:
        """What a person must hear before this version is used; None for the approved one."""
        if self.approved:
            return None
        current = (
            f"the consortium approved version {self.approved_version} for use"
            if self.approved_version
            else "no version of it is approved at this site"
        )
        if self.approval is not None:
            return (
                f"model {self.name} version {self.version} is not approved any more: approved "
                f"{self.approval.approved_utc}, but since then {current}"
            )
        return f"model {self.name} version {self.version} is not approved (no signed approval at this site); {current}"


def load_local_model(site_dir: Path, name: str, version: str | None = None) -> LocalModel:
    """``version``, or the approved one, verified again before use: files at rest can change too."""
    key = load_trusted_key(site_dir)
    approvals = site_approvals(site_dir, name, key)
    approved_version = max(approvals, key=lambda v: (approvals[v].approved_at, int(v)), default=None)
    chosen = version or approved_version
    if chosen is None:
        pulled = pulled_versions(site_dir, name)
        if not pulled:
            raise FileNotFoundError(
                f"{models_dir(site_dir) / name}: no pulled version of model {name} "
                f"(run `cmrfl registry pull {name} --site-dir {site_dir}`)"
            )
        raise FileNotFoundError(
            f"no pulled version of model {name} carries the consortium's signed approval (pulled: "
            f"{', '.join(pulled)}); pull the approved one (`cmrfl registry pull {name} --site-dir {site_dir}`) "
            "or name one with --version N"
        )
    folder = version_folder(site_dir, name, chosen)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: model {name} version {chosen} has not been pulled to this site")
    verified = verify_model_folder(folder, key, expected_model=name, expected_version=chosen)
    approval = approvals.get(chosen)
    if approval is not None and approval.weights_sha256 != verified.weights_sha256:
        raise SignatureError(f"{folder / APPROVAL_FILE}: the signed approval is of other weights than these")
    return LocalModel(name, chosen, verified, approval, approved_version)
