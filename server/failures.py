"""How a site's failed reply is recorded: which node, when, and a one-line reason.

A reply can fail at the site (an error reply: the ClientApp raised, a mod refused, the
node went offline) or at the server, which refuses a reply of the wrong form or from a
node whose site-id does not hold (server/reply_screening.py). Both are recorded the same
way, in the round's ``failures``: node id, phase, where known the site (and the site it
claimed to be, when that was refused), and the reason.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from flwr.app import Error, Message
from flwr.app.message import make_message
from flwr.common.constant import SUPERLINK_NODE_ID

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLIENTAPP_MESSAGE = "occurred. Message: "  # how Flower wraps a ClientApp's exception
MAX_REASON_CHARS = 500
# The Error code of a reply the server refused; Flower's own codes are 0-8 (cf. privacy.budget's 4030).
REPLY_REFUSED_ERROR_CODE = 4220


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


def failure(node_id: int, phase: str, reason: str | None, **where: Any) -> dict[str, Any]:
    """One entry of a round's ``failures`` list (``where``: site, SecAgg+ stage, ...)."""
    text = "no reason given" if reason is None else concise_reason(reason)
    return {"node_id": node_id, "phase": phase, **where, "reason": text}


def replying_node(reply: Message, sent: Iterable[Message] = ()) -> int:
    """The SuperNode a reply is about.

    When a SuperNode goes offline (killed, network gone), the SuperLink answers in its
    place: that error reply comes from the SuperLink's own node id, and the node it is
    about is the destination of the message it replies to.
    """
    if reply.metadata.src_node_id != SUPERLINK_NODE_ID:
        return reply.metadata.src_node_id
    for message in sent:
        if message.metadata.message_id == reply.metadata.reply_to_message_id:
            return message.metadata.dst_node_id
    return reply.metadata.src_node_id


def failed_replies(replies: list[Message], phase: str, sent: Iterable[Message] = ()) -> list[dict[str, Any]]:
    sent = list(sent)
    return [failure(replying_node(reply, sent), phase, reply.error.reason) for reply in replies if reply.has_error()]


def as_refused(reply: Message, reason: str) -> Message:
    """``reply`` as an error reply (same node, same message ids): Flower's workflows count it as failed."""
    return make_message(metadata=copy.copy(reply.metadata), error=Error(code=REPLY_REFUSED_ERROR_CODE, reason=reason))


def describe(failures: Iterable[dict[str, Any]]) -> list[str]:
    """One line per failure, naming the node (and its site, and the stage, where known)."""
    lines = []
    for entry in failures:
        site = f" ({entry['site']})" if "site" in entry else ""
        stage = f" at {entry['stage']}" if "stage" in entry else ""
        lines.append(f"node {entry['node_id']}{site}{stage}: {entry['reason']}")
    return lines
