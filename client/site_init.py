"""Installing a hospital site: its config file, its SuperNode key pair, its pinned trust.

What ``cmrfl site init`` leaves in SITE_DIR:

    site.toml                  name, [federation] superlink (and later [privacy], [fairness])
    keys/supernode.key         the SuperNode's private key (ECDSA P-384, OpenSSH format, 0600)
    keys/supernode.pub         its public key: the consortium registers it to admit the site
    trust/ca.pem               the consortium CA, pinned: the SuperLink must present a
                               certificate it signed
    trust/model-signing.pub    the consortium's Ed25519 model-signing key, pinned: released
                               models are verified against it
    trust/admin.pub            the consortium admin's Ed25519 key, pinned: the SuperNode
                               runs only apps it signed (client/trusted_supernode.py)

Flower 1.42's SuperNode authentication takes an elliptic-curve key on a NIST curve
in OpenSSH format (``flower-supernode --auth-supernode-private-key``, ``flwr supernode
register PUBLIC_KEY``).
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from client.site import SITE_CONFIG_FILE, SiteConfigError

KEYS_DIR = "keys"
TRUST_DIR = "trust"
SUPERNODE_KEY = "keys/supernode.key"
SUPERNODE_PUB = "keys/supernode.pub"
PINNED_CA = "trust/ca.pem"
PINNED_MODEL_SIGNING_KEY = "trust/model-signing.pub"
PINNED_ADMIN_KEY = "trust/admin.pub"
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


class SiteInitError(RuntimeError):
    """The site cannot be initialised as asked (message names the file and the problem)."""


@dataclass(frozen=True)
class SiteFederation:
    """The ``[federation]`` table of site.toml and the files ``site init`` put in place."""

    site_dir: Path
    name: str
    superlink: str

    @property
    def private_key(self) -> Path:
        return self.site_dir / SUPERNODE_KEY

    @property
    def public_key(self) -> Path:
        return self.site_dir / SUPERNODE_PUB

    @property
    def ca_cert(self) -> Path:
        return self.site_dir / PINNED_CA

    @property
    def model_signing_key(self) -> Path:
        return self.site_dir / PINNED_MODEL_SIGNING_KEY

    @property
    def admin_public_key(self) -> Path:
        return self.site_dir / PINNED_ADMIN_KEY


def check_superlink_address(address: str) -> str:
    match = _ADDRESS.match(address)
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise SiteInitError(f"--superlink {address!r}: expected HOST:PORT, e.g. superlink.consortium.org:9092")
    return address


def split_address(address: str) -> tuple[str, int]:
    host, _, port = check_superlink_address(address).rpartition(":")
    return host.strip("[]"), int(port)


def load_site_federation(site_dir: Path) -> SiteFederation:
    site_dir = Path(site_dir)
    config_path = site_dir / SITE_CONFIG_FILE
    if not config_path.is_file():
        raise SiteConfigError(
            f"{config_path}: not found; run 'cmrfl site init --site-dir {site_dir} --name NAME "
            "--superlink HOST:PORT --ca CA.pem' first"
        )
    try:
        config = tomllib.loads(config_path.read_text())
    except tomllib.TOMLDecodeError as problem:
        raise SiteConfigError(f"{config_path}: not valid TOML ({problem})") from None
    table = config.get("federation")
    if not isinstance(table, dict) or not isinstance(table.get("superlink"), str):
        raise SiteConfigError(f"{config_path}: no [federation] superlink = \"HOST:PORT\"; run 'cmrfl site init' first")
    try:
        superlink = check_superlink_address(table["superlink"])
    except SiteInitError as problem:
        raise SiteConfigError(f"{config_path}: [federation] {problem}".replace("--superlink ", "superlink=")) from None
    return SiteFederation(site_dir=site_dir, name=str(config.get("name", site_dir.name)), superlink=superlink)


def _site_toml(name: str, superlink: str) -> str:
    return (
        f'name = "{name}"\n'
        "\n"
        "[federation]\n"
        f'superlink = "{superlink}"  # the consortium SuperLink (HOST:PORT); outbound HTTPS only\n'
        "\n"
        "# [privacy]            # the most this site spends on DP-SGD over its lifetime\n"
        "# max-epsilon = 8.0\n"
        "# delta = 1e-5\n"
        "\n"
        "# [fairness]           # the smallest subgroup this site reports statistics on\n"
        "# suppression-threshold = 10\n"
    )


def _updated_site_toml(config_path: Path, name: str, superlink: str) -> str:
    """An existing site.toml (e.g. with [privacy]) keeps its tables; [federation] is added."""
    text = config_path.read_text()
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as problem:
        raise SiteInitError(f"{config_path}: not valid TOML ({problem}); fix or remove it") from None
    if "federation" in config:
        raise SiteInitError(f"{config_path}: already has a [federation] table; this site is initialised")
    if "name" in config and config["name"] != name:
        raise SiteInitError(f"{config_path}: says name = {config['name']!r}, not {name!r}")
    header = "" if "name" in config else f'name = "{name}"\n'
    return header + text.rstrip("\n") + f'\n\n[federation]\nsuperlink = "{superlink}"\n'


def _write_private(path: Path, data: bytes) -> None:
    """Owner-only from the first byte (no chmod afterwards); never replaces a key."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SiteInitError(f"{path}: a private key is already there; refusing to overwrite it") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _check_ca(ca_cert: Path) -> None:
    try:
        certificate = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
    except FileNotFoundError:
        raise SiteInitError(f"--ca {ca_cert}: no such file") from None
    except ValueError as problem:
        raise SiteInitError(f"--ca {ca_cert}: not a PEM X.509 certificate ({problem})") from None
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise SiteInitError(f"--ca {ca_cert}: not a CA certificate (basicConstraints CA:TRUE missing)")


def _check_ed25519_public_key(path: Path, option: str) -> None:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise SiteInitError(f"{option} {path}: no such file") from None
    except ValueError as problem:
        raise SiteInitError(f"{option} {path}: not a PEM public key ({problem})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SiteInitError(f"{option} {path}: expected an Ed25519 public key, got {type(key).__name__}")


def init_site(
    site_dir: Path,
    name: str,
    superlink: str,
    ca_cert: Path,
    model_signing_key: Path | None = None,
    admin_public_key: Path | None = None,
) -> SiteFederation:
    """Create site.toml, the SuperNode key pair and the pinned trust files.

    Everything is checked before anything is written; existing keys are never replaced.
    """
    site_dir = Path(site_dir)
    if not _SITE_NAME.match(name):
        raise SiteInitError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (up to 64, no spaces)")
    check_superlink_address(superlink)
    _check_ca(ca_cert)
    if model_signing_key is not None:
        _check_ed25519_public_key(model_signing_key, "--model-signing-key")
    if admin_public_key is not None:
        _check_ed25519_public_key(admin_public_key, "--admin-public-key")
    config_path = site_dir / SITE_CONFIG_FILE
    site_toml = (
        _updated_site_toml(config_path, name, superlink) if config_path.is_file() else _site_toml(name, superlink)
    )
    federation = SiteFederation(site_dir=site_dir, name=name, superlink=superlink)
    for existing in (federation.private_key, federation.public_key):
        if existing.exists():
            raise SiteInitError(f"{existing}: already exists; refusing to replace this site's SuperNode key")

    (site_dir / KEYS_DIR).mkdir(parents=True, exist_ok=True, mode=0o700)
    (site_dir / TRUST_DIR).mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        federation.private_key,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    federation.public_key.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + f" {name}\n".encode()
    )
    shutil.copyfile(ca_cert, federation.ca_cert)
    if model_signing_key is not None:
        shutil.copyfile(model_signing_key, federation.model_signing_key)
    if admin_public_key is not None:
        shutil.copyfile(admin_public_key, federation.admin_public_key)
    config_path.write_text(site_toml)
    return federation
