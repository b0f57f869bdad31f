"""Joining the federation: Flower's own ``flower-supernode`` with this site's key, data
and pinned CA, exactly as site.toml and ``cmrfl site init`` set them up, run through
client/trusted_supernode.py so that it runs only apps the pinned admin key signed.

The SuperNode only ever connects out (HTTPS to the SuperLink); it listens on
``--port`` on loopback alone, for its own ClientApp processes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from client.site import SiteNotFoundError
from client.site_init import SiteFederation, load_site_federation
from cmr.store import CaseStore

DEFAULT_CLIENTAPP_PORT = 9094  # Flower's default for the SuperNode's local ClientApp API


def supernode_command(
    site_dir: Path, clientapp_port: int = DEFAULT_CLIENTAPP_PORT, extra_args: list[str] | None = None
) -> list[str]:
    """The ``flower-supernode`` command line for SITE_DIR (checks what it needs exists)."""
    site_dir = Path(site_dir).resolve()
    federation: SiteFederation = load_site_federation(site_dir)
    for needed in (federation.private_key, federation.ca_cert):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: missing; run 'cmrfl site init' for {site_dir}")
    if not federation.admin_public_key.is_file():
        raise FileNotFoundError(
            f"{federation.admin_public_key}: missing; the SuperNode runs only apps the consortium admin signed, "
            "so pin the consortium's admin.pub there (cmrfl site init --admin-public-key, or copy it)"
        )
    if not CaseStore(site_dir).exists():
        raise SiteNotFoundError(
            f"{site_dir}: no case store (store/index.sqlite); run "
            f"'cmrfl site ingest DICOM_DIR --site-dir {site_dir}' first"
        )
    return [
        sys.executable,
        "-m",
        "client.trusted_supernode",
        "--admin-public-key",
        str(federation.admin_public_key),
        "--superlink",
        federation.superlink,
        "--root-certificates",
        str(federation.ca_cert),
        "--auth-supernode-private-key",
        str(federation.private_key),
        "--node-config",
        f'site-dir="{site_dir}"',
        "--host",
        "127.0.0.1",
        "--port",
        str(clientapp_port),
        *(extra_args or []),
    ]
