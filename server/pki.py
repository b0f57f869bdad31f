"""The consortium's PKI: its certificate authority, the SuperLink's TLS certificate,
and the model-signing key pair, made with ``cryptography``.

Layout of PKI_DIR (what ``cmrfl pki init`` writes):

    ca.pem, ca.key                       the consortium CA (sites pin ca.pem)
    superlink.pem, superlink.key         the SuperLink's server certificate, signed by the CA
    model-signing.key, model-signing.pub Ed25519 key pair that signs released models

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
PRIVATE_KEYS = (CA_KEY, SUPERLINK_KEY, MODEL_SIGNING_KEY)
# A SuperLink on one machine is reached under these names whatever else it is called.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CA_VALIDITY_DAYS = 10 * 365
SERVER_VALIDITY_DAYS = 2 * 365


class PkiError(RuntimeError):
    """The PKI folder cannot be created or read as asked (message names the file)."""


@dataclass(frozen=True)
class PkiFiles:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca_cert(self) -> Path:
        return self.path(CA_CERT)

    @property
    def superlink_cert(self) -> Path:
        return self.path(SUPERLINK_CERT)

    @property
    def superlink_key(self) -> Path:
        return self.path(SUPERLINK_KEY)

    def missing_for_server(self) -> list[Path]:
        return [p for p in (self.ca_cert, self.superlink_cert, self.superlink_key) if not p.is_file()]


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


def init_pki(directory: Path, superlink_hosts: list[str] | None = None) -> PkiFiles:
    """Create the consortium's CA, SuperLink certificate and model-signing key pair.

    Refuses (before writing anything) if any of the files is already there.
    """
    files = PkiFiles(Path(directory))
    hosts = list(superlink_hosts or [])
    subject_alternative_names(hosts)  # reject a bad host before touching the disk
    names = (CA_CERT, CA_KEY, SUPERLINK_CERT, SUPERLINK_KEY, MODEL_SIGNING_KEY, MODEL_SIGNING_PUB)
    existing = [files.path(n) for n in names if files.path(n).exists()]
    if existing:
        raise PkiError(
            f"{existing[0]} already exists; refusing to overwrite the consortium's keys "
            "(choose another --out, or move the old folder away deliberately)"
        )
    files.directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_certificate = make_ca(now)
    server_key, server_certificate = make_server_certificate(ca_key, ca_certificate, hosts, now)
    signing_key = ed25519.Ed25519PrivateKey.generate()

    write_private(files.path(CA_KEY), _private_pem(ca_key))
    write_public(files.path(CA_CERT), ca_certificate.public_bytes(serialization.Encoding.PEM))
    write_private(files.path(SUPERLINK_KEY), _private_pem(server_key))
    write_public(files.path(SUPERLINK_CERT), server_certificate.public_bytes(serialization.Encoding.PEM))
    write_private(files.path(MODEL_SIGNING_KEY), _private_pem(signing_key))
    write_public(
        files.path(MODEL_SIGNING_PUB),
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return files
