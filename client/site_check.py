"""Everything a hospital's IT person wants checked before the site joins.

Each check says ``ok`` or ``problem`` and, for a problem, what to do. ``cmrfl site
check`` exits non-zero if any check found a problem; ``info`` lines (GPU or CPU, the
case store's subgroups) are facts, not verdicts.
"""

from __future__ import annotations

import platform
import shutil
import socket
import ssl
import stat
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from client.site import SITE_CONFIG_FILE, SiteConfig, SiteConfigError
from client.site_init import SiteFederation, load_site_federation, split_address
from cmr.attributes import ATTRIBUTE_NAMES
from cmr.series_kinds import series_kind_of
from cmr.store import CaseEntry, CaseStore

OK, PROBLEM, INFO = "ok", "problem", "info"
MIN_PYTHON = (3, 11)
# What the consortium's apps are built against: a SuperNode must run the same Flower.
REQUIRED_PACKAGES = {"flwr": "1.42.", "torch": None, "monai": "1.6.", "opacus": "1.6.", "pydicom": "3.0."}
MIN_FREE_DISK_GIB = 2.0
MIN_CASES = 2  # fewer and the site cannot both train and report a site-wide metric
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # ok | problem | info
    detail: str
    fix: str = ""


def check_python() -> CheckResult:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return CheckResult("python", PROBLEM, f"Python {version}", "install Python 3.11 or newer and re-run ./cmrfl")
    return CheckResult("python", OK, f"Python {version} ({platform.platform()})")


def check_packages() -> list[CheckResult]:
    results = []
    for package, required_prefix in REQUIRED_PACKAGES.items():
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            results.append(
                CheckResult(package, PROBLEM, "not installed", "reinstall: pip install -e . in the cmrfl folder")
            )
            continue
        if required_prefix and not version.startswith(required_prefix):
            results.append(
                CheckResult(
                    package,
                    PROBLEM,
                    f"{version} installed, {required_prefix}* required",
                    f"pip install '{package}=={required_prefix}*'",
                )
            )
        else:
            results.append(CheckResult(package, OK, version))
    return results


def check_compute() -> CheckResult:
    import torch

    if torch.cuda.is_available():
        return CheckResult("compute", INFO, f"GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})")
    return CheckResult("compute", INFO, f"CPU only ({torch.get_num_threads()} threads); training is slower but works")


def check_disk(site_dir: Path) -> CheckResult:
    free_gib = shutil.disk_usage(site_dir).free / 2**30
    if free_gib < MIN_FREE_DISK_GIB:
        return CheckResult(
            "disk",
            PROBLEM,
            f"{free_gib:.1f} GiB free at {site_dir}",
            f"free at least {MIN_FREE_DISK_GIB:g} GiB (checkpoints, ledgers, ClientApp logs)",
        )
    return CheckResult("disk", OK, f"{free_gib:.1f} GiB free at {site_dir}")


def check_case_store(site_dir: Path) -> list[CheckResult]:
    store = CaseStore(site_dir)
    if not store.exists():
        return [
            CheckResult(
                "case store",
                PROBLEM,
                f"{site_dir}: no case store (store/index.sqlite)",
                f"cmrfl site ingest DICOM_DIR --site-dir {site_dir} --manifest MANIFEST.csv --labels LABELS_DIR",
            )
        ]
    entries = store.entries()
    with_masks = sum(e.has_mask for e in entries)
    results = [
        CheckResult(
            "case store",
            PROBLEM if len(entries) < MIN_CASES or with_masks == 0 else OK,
            f"{len(entries)} cases, {with_masks} with reference masks",
            "" if len(entries) >= MIN_CASES and with_masks else "ingest cases with reference masks (--labels)",
        )
    ]
    results.append(CheckResult("cases by series kind", INFO, series_kinds_and_tasks(entries) or "none"))
    for attribute in ATTRIBUTE_NAMES:
        counts = Counter(e.attributes.as_dict()[attribute] for e in entries)
        detail = ", ".join(f"{group} {n}" for group, n in sorted(counts.items()))
        results.append(CheckResult(f"cases by {attribute.replace('_', ' ')}", INFO, detail or "none"))
    return results


def series_kinds_and_tasks(entries: list[CaseEntry]) -> str:
    """ "lge-stack 24 (task lge), molli-t1 32 (task mapping)": what the store holds, and which tasks read it."""
    from tasks.registry import tasks_by_series_kind

    readers = tasks_by_series_kind()
    counts = Counter(str(series_kind_of(e.case_labels)) for e in entries)
    return ", ".join(
        f"{kind} {n} ({'task ' + ', '.join(readers[kind]) if kind in readers else 'no task reads it'})"
        for kind, n in sorted(counts.items())
    )


def check_site_config(site_dir: Path) -> tuple[CheckResult, SiteFederation | None]:
    config_path = site_dir / SITE_CONFIG_FILE
    try:
        federation = load_site_federation(site_dir)
        own = SiteConfig.read(site_dir)
        budget, threshold = own.privacy_budget, own.suppression_threshold
    except (SiteConfigError, ValueError, KeyError) as problem:
        return CheckResult("site.toml", PROBLEM, str(problem), f"fix {config_path}"), None
    privacy = "no [privacy] budget" if budget is None else f"max ε {budget.max_epsilon:g}"
    return (
        CheckResult(
            "site.toml",
            OK,
            f"name {federation.name}, SuperLink {federation.superlink}, {privacy}, suppression threshold {threshold}",
        ),
        federation,
    )


def check_private_key(federation: SiteFederation) -> CheckResult:
    path = federation.private_key
    if not path.is_file():
        return CheckResult("SuperNode key", PROBLEM, f"{path}: missing", "run 'cmrfl site init' for this site")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return CheckResult("SuperNode key", PROBLEM, f"{path}: readable by others (mode {mode:o})", f"chmod 600 {path}")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
    except (ValueError, TypeError) as problem:
        return CheckResult(
            "SuperNode key",
            PROBLEM,
            f"{path}: not an OpenSSH private key ({problem})",
            "restore the key from backup, or create a new site key pair and have it registered",
        )
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return CheckResult(
            "SuperNode key",
            PROBLEM,
            f"{path}: {type(key).__name__}, Flower wants an EC (NIST curve) key",
            "create a new site key pair with 'cmrfl site init' and have it registered",
        )
    public = federation.public_key
    if public.is_file():
        registered = serialization.load_ssh_public_key(public.read_bytes())
        if registered != key.public_key():
            return CheckResult(
                "SuperNode key",
                PROBLEM,
                f"{public} does not belong to {path}",
                "send the consortium the public key that matches the private key",
            )
    return CheckResult("SuperNode key", OK, f"{path} (mode {mode:o}, EC {key.curve.name})")


def _pinned_ed25519_key(name: str, path: Path, consortium_file: str, why: str) -> CheckResult:
    """A pinned consortium public key: present and Ed25519."""
    if not path.is_file():
        return CheckResult(name, PROBLEM, f"{path}: missing", f"copy the consortium's {consortium_file} there; {why}")
    try:
        ok = isinstance(serialization.load_pem_public_key(path.read_bytes()), ed25519.Ed25519PublicKey)
    except ValueError:
        ok = False
    if ok:
        return CheckResult(name, OK, f"{path} (Ed25519)")
    problem = f"{path}: not an Ed25519 PEM public key"
    return CheckResult(name, PROBLEM, problem, f"copy the consortium's {consortium_file} there")


def check_pinned_trust(federation: SiteFederation) -> list[CheckResult]:
    results = []
    try:
        certificate = x509.load_pem_x509_certificate(federation.ca_cert.read_bytes())
        results.append(
            CheckResult(
                "pinned CA",
                OK,
                f"{federation.ca_cert}: {certificate.subject.rfc4514_string()}, "
                f"valid until {certificate.not_valid_after_utc:%Y-%m-%d}",
            )
        )
    except (FileNotFoundError, ValueError) as problem:
        results.append(
            CheckResult(
                "pinned CA",
                PROBLEM,
                f"{federation.ca_cert}: {problem}",
                "copy the consortium's ca.pem there (cmrfl site init --ca)",
            )
        )
    results.append(
        _pinned_ed25519_key(
            "model-signing key", federation.model_signing_key, "model-signing.pub", "so released models can be verified"
        )
    )
    results.append(
        _pinned_ed25519_key(
            "admin key", federation.admin_public_key, "admin.pub", "without it 'cmrfl site join' refuses to start"
        )
    )
    return results


def check_superlink(federation: SiteFederation, timeout_s: float = CONNECT_TIMEOUT_S) -> CheckResult:
    """A real TLS handshake: the SuperLink answers and its certificate chains to the pinned CA."""
    host, port = split_address(federation.superlink)
    if not federation.ca_cert.is_file():
        return CheckResult(
            "SuperLink",
            PROBLEM,
            f"not tried: {federation.ca_cert} is missing",
            "pin the consortium CA first (cmrfl site init --ca)",
        )
    context = ssl.create_default_context(cafile=str(federation.ca_cert))
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            common_name = _common_name(tls.getpeercert())
            version = tls.version()
    except ssl.SSLCertVerificationError as problem:
        return CheckResult(
            "SuperLink",
            PROBLEM,
            f"{federation.superlink} answers but its certificate does not verify against "
            f"{federation.ca_cert}: {problem.verify_message}",
            "check the address and that trust/ca.pem is the consortium's current CA",
        )
    except ssl.SSLError as problem:
        return CheckResult(
            "SuperLink",
            PROBLEM,
            f"{federation.superlink}: TLS handshake failed ({problem})",
            "the port may not be the SuperLink's HTTPS port; ask the consortium",
        )
    except OSError as problem:
        return CheckResult(
            "SuperLink",
            PROBLEM,
            f"{federation.superlink} does not answer ({problem})",
            "check the address, DNS, and that the hospital firewall allows outbound HTTPS to it",
        )
    return CheckResult(
        "SuperLink",
        OK,
        f"{federation.superlink} answers over {version}; certificate {common_name} verifies against the pinned CA",
    )


def _common_name(peer_certificate: Mapping[str, Any] | None) -> str:
    """The subject's commonName in ``SSLSocket.getpeercert()``'s layout, or "?"."""
    for relative_name in (peer_certificate or {}).get("subject", ()):
        for attribute, value in relative_name:
            if attribute == "commonName":
                return str(value)
    return "?"


def run_site_checks(site_dir: Path, check_connection: bool = True) -> list[CheckResult]:
    site_dir = Path(site_dir)
    if not site_dir.is_dir():
        return [CheckResult("site folder", PROBLEM, f"{site_dir}: not found", "cmrfl site init --site-dir ...")]
    results = [check_python(), *check_packages(), check_compute(), check_disk(site_dir)]
    results += check_case_store(site_dir)
    config_result, federation = check_site_config(site_dir)
    results.append(config_result)
    if federation is not None:
        checks: list[Callable[[], CheckResult | list[CheckResult]]] = [
            lambda: check_private_key(federation),
            lambda: check_pinned_trust(federation),
        ]
        if check_connection:
            checks.append(lambda: check_superlink(federation))
        for check in checks:
            outcome = check()
            results += outcome if isinstance(outcome, list) else [outcome]
    return results


def has_problems(results: list[CheckResult]) -> bool:
    return any(r.status == PROBLEM for r in results)
