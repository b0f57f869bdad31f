"""The consortium's PKI: its certificate authority, the SuperLink's TLS certificate, the
model-signing key pair and the consortium admin's key pair, made with ``cryptography``.

Layout of PKI_DIR (what ``cmrfl pki init`` writes), one folder per place it goes:

    secret/     ca.key, model-signing.key, admin.key    offline / the admin's machine only
    superlink/  superlink.pem, superlink.key, ca.pem,   all that ``cmrfl server start`` gets
                admin.pub
    public/     ca.pem, model-signing.pub, admin.pub     what every site pins

The admin key is the consortium's administration credential: the SuperLink's Control API
accepts only requests carrying a token it signed (server/admin_token.py), and SuperNodes
run only apps it signed (cmrfl/app_signature.py). The SuperLink never holds a key that
signs: a SuperLink folder with ca.key, model-signing.key or admin.key is refused.

Private keys are created owner-only (``os.open`` with mode 0o600, so there is no moment
at which another user could read them) and are never printed or overwritten.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SUPERLINK_CERT = "superlink.pem"
SUPERLINK_KEY = "superlink.key"
MODEL_SIGNING_KEY = "model-signing.key"
MODEL_SIGNING_PUB = "model-signing.pub"
ADMIN_KEY = "admin.key"
ADMIN_PUB = "admin.pub"
SECRET_DIR = "secret"
SUPERLINK_DIR = "superlink"
PUBLIC_DIR = "public"
# Keys that sign (certificates, released models, administration): never on the SuperLink.
SIGNING_SECRETS = (CA_KEY, MODEL_SIGNING_KEY, ADMIN_KEY)
# Every private key pki init writes, relative to PKI_DIR.
PRIVATE_KEYS = (
    f"{SECRET_DIR}/{CA_KEY}",
    f"{SECRET_DIR}/{MODEL_SIGNING_KEY}",
    f"{SECRET_DIR}/{ADMIN_KEY}",
    f"{SUPERLINK_DIR}/{SUPERLINK_KEY}",
)
# A SuperLink on one machine is reached under these names whatever else it is called.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CA_VALIDITY_DAYS = 10 * 365
SERVER_VALIDITY_DAYS = 2 * 365


class PkiError(RuntimeError):
    """The PKI folder cannot be created or read as asked (message names the file)."""


@dataclass(frozen=True)
class PkiFiles:
    """PKI_DIR as ``cmrfl pki init`` wrote it (the admin's copy: all three folders)."""

    directory: Path

    def path(self, name: str) -> Path:
        """Where pki init puts NAME (e.g. ``ca.key`` → secret/ca.key, ``ca.pem`` → public/ca.pem)."""
        if name in SIGNING_SECRETS:
            return self.directory / SECRET_DIR / name
        return self.directory / (SUPERLINK_DIR if name.startswith("superlink") else PUBLIC_DIR) / name

    @property
    def secret_dir(self) -> Path:
        return self.directory / SECRET_DIR

    @property
    def superlink_dir(self) -> Path:
        return self.directory / SUPERLINK_DIR

    @property
    def public_dir(self) -> Path:
        return self.directory / PUBLIC_DIR

    @property
    def ca_cert(self) -> Path:
        return self.path(CA_CERT)

    @property
    def ca_key(self) -> Path:
        return self.path(CA_KEY)

    @property
    def superlink_cert(self) -> Path:
        return self.path(SUPERLINK_CERT)

    @property
    def superlink_key(self) -> Path:
        return self.path(SUPERLINK_KEY)

    @property
    def model_signing_key(self) -> Path:
        return self.path(MODEL_SIGNING_KEY)

    @property
    def model_signing_pub(self) -> Path:
        return self.path(MODEL_SIGNING_PUB)

    @property
    def admin_key(self) -> Path:
        return self.path(ADMIN_KEY)

    @property
    def admin_pub(self) -> Path:
        return self.path(ADMIN_PUB)

    def written(self) -> list[Path]:
        """Every file pki init writes (ca.pem and admin.pub twice: for the SuperLink and for sites)."""
        return [
            self.ca_key,
            self.model_signing_key,
            self.admin_key,
            self.superlink_dir / CA_CERT,
            self.superlink_cert,
            self.superlink_key,
            self.superlink_dir / ADMIN_PUB,
            self.ca_cert,
            self.model_signing_pub,
            self.admin_pub,
        ]

    def admin_credential(self) -> tuple[Path, Path]:
        """(ca.pem, admin.key) for administering the SuperLink; PkiError naming what is missing."""
        for needed, what in ((self.ca_cert, "the consortium CA"), (self.admin_key, "the consortium admin's key")):
            if not needed.is_file():
                raise PkiError(f"{needed}: missing ({what}); --pki is the folder 'cmrfl pki init' wrote")
        return self.ca_cert, self.admin_key


@dataclass(frozen=True)
class SuperLinkFiles:
    """The folder ``cmrfl server start --pki`` reads: PKI_DIR/superlink as pki init wrote it."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def cert(self) -> Path:
        return self.directory / SUPERLINK_CERT

    @property
    def key(self) -> Path:
        return self.directory / SUPERLINK_KEY

    @property
    def admin_pub(self) -> Path:
        return self.directory / ADMIN_PUB

    def check(self) -> None:
        """Refuse a folder holding a signing key (anywhere beneath it) or lacking a needed file."""
        for name in SIGNING_SECRETS:
            found = sorted(self.directory.rglob(name)) if self.directory.is_dir() else []
            if found:
                raise PkiError(
                    f"{found[0]}: a signing key must never be on the SuperLink; give 'cmrfl server start "
                    f"--pki' only the {SUPERLINK_DIR}/ folder 'cmrfl pki init' wrote "
                    f"({CA_CERT}, {SUPERLINK_CERT}, {SUPERLINK_KEY}, {ADMIN_PUB})"
                )
        for needed in (self.ca_cert, self.cert, self.key, self.admin_pub):
            if not needed.is_file():
                hint = (
                    f"use --pki {self.directory / SUPERLINK_DIR}"
                    if (self.directory / SUPERLINK_DIR / needed.name).is_file()
                    else f"create the PKI with 'cmrfl pki init --out PKI_DIR' and use --pki PKI_DIR/{SUPERLINK_DIR}"
                )
                raise PkiError(f"{needed}: missing; {hint}")


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` owner-only; refuse to replace an existing file."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PkiError(f"{path}: a private key is already there; refusing to overwrite it") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def write_public(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _private_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def subject_alternative_names(hosts: list[str]) -> list[x509.GeneralName]:
    """Loopback names plus each host, as an IP address SAN if it is one, else a DNS SAN."""
    names: list[x509.GeneralName] = []
    for host in [*LOOPBACK_NAMES, *hosts]:
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            if not host or any(c.isspace() for c in host) or ":" in host:
                raise PkiError(f"--superlink-host {host!r} is neither an IP address nor a DNS name") from None
            entry = x509.DNSName(host)
        if entry not in names:
            names.append(entry)
    return names


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cmrfl consortium"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = _name("cmrfl consortium CA")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, certificate


def make_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_certificate: x509.Certificate,
    hosts: list[str],
    now: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "localhost"))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(subject_alternative_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, certificate


def _public_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def init_pki(directory: Path, superlink_hosts: list[str] | None = None) -> PkiFiles:
    """Create the consortium's CA, SuperLink certificate, model-signing and admin key pairs.

    Refuses (before writing anything) if any of the files is already there; empty
    folders (e.g. container volumes mounted at PKI_DIR/secret) are fine.
    """
    files = PkiFiles(Path(directory))
    hosts = list(superlink_hosts or [])
    subject_alternative_names(hosts)  # reject a bad host before touching the disk
    existing = [path for path in files.written() if path.exists()]
    if existing:
        raise PkiError(
            f"{existing[0]} already exists; refusing to overwrite the consortium's keys "
            "(choose another --out, or move the old folder away deliberately)"
        )
    files.public_dir.mkdir(parents=True, exist_ok=True)
    files.superlink_dir.mkdir(exist_ok=True)
    if not files.secret_dir.exists():
        files.secret_dir.mkdir(mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_certificate = make_ca(now)
    server_key, server_certificate = make_server_certificate(ca_key, ca_certificate, hosts, now)
    signing_key = ed25519.Ed25519PrivateKey.generate()
    admin_key = ed25519.Ed25519PrivateKey.generate()
    ca_pem = ca_certificate.public_bytes(serialization.Encoding.PEM)

    write_private(files.ca_key, _private_pem(ca_key))
    write_private(files.model_signing_key, _private_pem(signing_key))
    write_private(files.admin_key, _private_pem(admin_key))
    write_private(files.superlink_key, _private_pem(server_key))
    write_public(files.superlink_cert, server_certificate.public_bytes(serialization.Encoding.PEM))
    for folder in (files.superlink_dir, files.public_dir):
        write_public(folder / CA_CERT, ca_pem)
        write_public(folder / ADMIN_PUB, _public_pem(admin_key))
    write_public(files.model_signing_pub, _public_pem(signing_key))
    return files


# The registry's TLS certificate (`cmrfl registry issue-cert`): issued by the consortium CA,
# so that sites check the registry against the ca.pem they pinned at `cmrfl site init`.
# It goes in a folder of its own, PKI_DIR/registry/: all that `cmrfl registry serve` gets.
REGISTRY_DIR = "registry"
REGISTRY_CERT = "registry.pem"
REGISTRY_KEY = "registry.key"


def issue_registry_certificate(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """PKI_DIR/registry/registry.pem and .key for ``hosts`` (plus loopback), signed by PKI_DIR's CA.

    Refuses, before writing anything, when either file exists or the CA cannot be read.
    """
    files = PkiFiles(Path(directory))
    folder = files.directory / REGISTRY_DIR
    certificate_path, key_path = folder / REGISTRY_CERT, folder / REGISTRY_KEY
    try:  # reject a bad host before touching the disk
        subject_alternative_names(hosts)
    except PkiError as problem:
        raise PkiError(str(problem).replace("--superlink-host", "registry host")) from None
    for path in (certificate_path, key_path):
        if path.exists():
            raise PkiError(f"{path} already exists; refusing to overwrite the registry's certificate or key")
    try:
        ca_certificate = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(files.path(CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise PkiError(f"{files.directory}: cannot read the consortium CA's certificate and key ({error})") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{files.path(CA_KEY)}: expected the CA's elliptic-curve key")
    key, certificate = make_server_certificate(ca_key, ca_certificate, hosts, datetime.datetime.now(datetime.UTC))
    folder.mkdir(mode=0o700, exist_ok=True)
    write_private(key_path, _private_pem(key))
    write_public(certificate_path, certificate.public_bytes(serialization.Encoding.PEM))
    return certificate_path, key_path
