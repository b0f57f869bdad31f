"""The site's egress log: a record, kept in the site folder, of every reply that left it.

A hospital's information-governance officer asks "what exactly did we send?". The
outermost mod writes each reply, as it leaves, to ``SITE_DIR/egress/YYYY-MM-DD.jsonl``:
message type, round and run, every scalar and list verbatim (metrics, the fairness
statistics, configuration), and for arrays and bytes only their shape or length and
SHA-256 (model weights, masked under SecAgg+, and SecAgg+'s key material). The log
stays at the site like the per-case records; ``read_egress_log`` reads it back.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable, Mod

EGRESS_DIR = "egress"


def egress_log_mod(site_dir_of: Callable[[Context], Path]) -> Mod:
    """A mod that logs each reply after every inner mod has shaped it (make it the outermost)."""

    def log_reply(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        try:
            site_dir = site_dir_of(context)
        except RuntimeError:  # no site folder: the reply is that error, and nothing to log into
            return reply
        append_entry(site_dir, describe_reply(msg, reply))
        return reply

    return log_reply


def describe_reply(msg: Message, reply: Message) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_id": int(msg.metadata.run_id),
        "message_type": str(msg.metadata.message_type),
        "to_node": int(reply.metadata.dst_node_id),
    }
    if reply.has_error():
        entry["error"] = {"code": int(reply.error.code), "reason": str(reply.error.reason)}
        return entry
    records: dict[str, Any] = {}
    for name, record in reply.content.items():
        if isinstance(record, ArrayRecord):
            records[name] = {
                "kind": "arrays",
                "arrays": {key: _array_digest(array) for key, array in record.items()},
            }
        elif isinstance(record, (MetricRecord, ConfigRecord)):
            kind = "metrics" if isinstance(record, MetricRecord) else "config"
            records[name] = {"kind": kind, "values": {key: _plain(value) for key, value in record.items()}}
        else:
            records[name] = {"kind": type(record).__name__}
    entry["records"] = records
    return entry


def append_entry(site_dir: Path, entry: dict[str, Any]) -> Path:
    path = Path(site_dir) / EGRESS_DIR / f"{time.strftime('%Y-%m-%d')}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as stream:  # one write per line: lines stay whole
        stream.write(json.dumps(entry, sort_keys=True, allow_nan=True) + "\n")
    return path


def read_egress_log(site_dir: Path) -> list[dict[str, Any]]:
    """Every logged reply of the site, oldest first."""
    entries: list[dict[str, Any]] = []
    for path in sorted((Path(site_dir) / EGRESS_DIR).glob("*.jsonl")):
        with path.open(encoding="utf-8") as stream:
            entries.extend(json.loads(line) for line in stream if line.strip())
    return entries


def _array_digest(array: Any) -> dict[str, Any]:
    return {"shape": list(array.shape), "dtype": str(array.dtype), "sha256": hashlib.sha256(array.data).hexdigest()}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
