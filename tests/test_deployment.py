"""Deployment: the consortium PKI, site installation, and a real federation on loopback
(Flower's SuperLink and SuperNodes over TLS with SuperNode authentication)."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from server.pki import PRIVATE_KEYS, PkiError, init_pki


# --- PKI -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "consortium"
    init_pki(directory, ["superlink.consortium.example", "10.20.30.40"])
    return directory


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_superlink_certificate_names_loopback_and_every_given_host(pki_dir: Path):
    names = _certificate(pki_dir / "superlink.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "superlink.consortium.example"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"), ipaddress.ip_address("10.20.30.40")
    }


def test_superlink_certificate_chains_to_the_consortium_ca(pki_dir: Path):
    ca, server = _certificate(pki_dir / "ca.pem"), _certificate(pki_dir / "superlink.pem")
    assert server.issuer == ca.subject
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer is wrong
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    other_ca = _certificate(init_pki(pki_dir.parent / "other", []).ca_cert)
    with pytest.raises((ValueError, InvalidSignature)):
        server.verify_directly_issued_by(other_ca)


def test_private_keys_are_owner_only_and_public_files_are_not_secret(pki_dir: Path):
    for name in PRIVATE_KEYS:
        assert stat.S_IMODE((pki_dir / name).stat().st_mode) == 0o600, name
    for name in ("ca.pem", "superlink.pem", "model-signing.pub"):
        assert b"PRIVATE KEY" not in (pki_dir / name).read_bytes()


def test_private_keys_are_created_owner_only_even_under_a_permissive_umask(tmp_path: Path):
    previous = os.umask(0)
    try:
        files = init_pki(tmp_path / "pki", [])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(files.superlink_key.stat().st_mode) == 0o600


def test_init_refuses_to_overwrite_an_existing_pki_and_leaves_it_untouched(pki_dir: Path):
    before = (pki_dir / "ca.key").read_bytes()
    with pytest.raises(PkiError, match="ca.pem already exists; refusing to overwrite"):
        init_pki(pki_dir, [])
    assert (pki_dir / "ca.key").read_bytes() == before


def test_a_host_that_is_neither_ip_nor_dns_name_is_rejected_before_writing(tmp_path: Path):
    with pytest.raises(PkiError, match="neither an IP address nor a DNS name"):
        init_pki(tmp_path / "pki", ["bad host"])
    assert not (tmp_path / "pki").exists()


def test_model_signing_pair_signs_and_verifies_and_rejects_a_changed_model(pki_dir: Path):
    private = serialization.load_pem_private_key((pki_dir / "model-signing.key").read_bytes(), None)
    public = serialization.load_pem_public_key((pki_dir / "model-signing.pub").read_bytes())
    assert isinstance(private, ed25519.Ed25519PrivateKey) and isinstance(public, ed25519.Ed25519PublicKey)
    model = b"weights of round 20"
    public.verify(private.sign(model), model)
    with pytest.raises(InvalidSignature):
        public.verify(private.sign(model), model + b"!")


def test_pki_init_command_prints_what_to_distribute_and_no_private_key(tmp_path: Path):
    from typer.testing import CliRunner

    from cmrfl.cli import app

    result = CliRunner().invoke(app, ["pki", "init", "--out", str(tmp_path / "pki"), "--superlink-host", "10.0.0.5"])
    assert result.exit_code == 0, result.output
    assert "Distribute to sites" in result.output and "model-signing.pub" in result.output
    assert "PRIVATE KEY" not in result.output
    again = CliRunner().invoke(app, ["pki", "init", "--out", str(tmp_path / "pki")])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
