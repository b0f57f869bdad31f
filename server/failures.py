"""How a site's failed reply is recorded: which node, when, and a one-line reason."""

from __future__ import annotations

import re
from typing import Any

from flwr.app import Message

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLIENTAPP_MESSAGE = "occurred. Message: "  # how Flower wraps a ClientApp's exception
MAX_REASON_CHARS = 500


def concise_reason(reason: str) -> str:
    """The site's own words, without the runtime's traceback around them.

    A ClientApp that raised reaches the server as the runtime's traceback (in simulation,
    Ray's) ending in Flower's ``ClientAppException ... Message: <the exception>``.
    """
    text = _ANSI.sub("", reason)
    if _CLIENTAPP_MESSAGE in text:
        text = text.rsplit(_CLIENTAPP_MESSAGE, 1)[1].strip().removesuffix("'>").strip()
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else text.strip()
    return text[:MAX_REASON_CHARS]


def failure(node_id: int, phase: str, reason: str, **where: Any) -> dict[str, Any]:
    """One entry of a round's ``failures`` list (``where``: site, SecAgg+ stage, ...)."""
    return {"node_id": node_id, "phase": phase, **where, "reason": concise_reason(reason)}


def failed_replies(replies: list[Message], phase: str) -> list[dict[str, Any]]:
    return [
        failure(reply.metadata.src_node_id, phase, reply.error.reason)
        for reply in replies
        if reply.has_error()
    ]
