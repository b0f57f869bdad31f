"""The ``flwr`` CLI's connection to a SuperLink: a FLWR_HOME holding config.toml.

Flower 1.42 reads SuperLink connections from ``$FLWR_HOME/config.toml``
(``[superlink.NAME] address, root-certificates, insecure, federation``); ``flwr run``
and ``flwr supernode register`` take the connection's NAME. We write a private
FLWR_HOME per use so a person's own Flower configuration is never touched.
"""

from __future__ import annotations

from pathlib import Path

CONNECTION_NAME = "cmrfl"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_flwr_home(
    flwr_home: Path,
    superlink: str,
    root_certificates: Path | None,
    insecure: bool = False,
    federation: str | None = None,
) -> Path:
    """Write FLWR_HOME/config.toml with one connection, ``cmrfl``, as the default.

    ``root_certificates`` (the consortium CA) is what the CLI verifies the SuperLink's
    TLS certificate against; without it and without ``insecure`` gRPC falls back to the
    system's trust store, which does not know a consortium's private CA.
    """
    flwr_home = Path(flwr_home)
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f"default = {_quoted(CONNECTION_NAME)}",
        "",
        f"[superlink.{CONNECTION_NAME}]",
        f"address = {_quoted(superlink)}",
    ]
    if insecure:
        lines.append("insecure = true")
    elif root_certificates is not None:
        lines.append(f"root-certificates = {_quoted(str(Path(root_certificates).resolve()))}")
    if federation:
        lines.append(f"federation = {_quoted(federation)}")
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
