"""Screening sites' replies before aggregation: their form, then the site they claim to be.

A reply of the wrong form (server/reply_validation.py), or from a node whose ``site-id``
does not hold (server/site_identity.py), is refused: it becomes a failure that names the
node and says why, and it stays out of aggregation, per-site metrics and fairness
records; the round goes on with the others. A refused reply never raises.

Under SecAgg+ the screen runs on the collect-masked-vectors stage (``SecureStageScreen``,
a Grid wrapper handed to server/secure_aggregation.py): a refused reply is turned into
an error reply there, so that Flower's workflow counts its node as dropped out, removes
its masks like any dropout's, and its vector never enters the sum.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from flwr.app import Message, RecordDict
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.serverapp import Grid

from cmrfl.protocol import site_id_of
from server.failures import as_refused, failed_replies, failure
from server.reply_validation import ReplyForm, masked_vector_problem, reply_problem, secure_train_reply_form
from server.site_identity import SiteIdentities

log = logging.getLogger("cmrfl.server")

# Records Flower's compat layer adds to a SecAgg+ reply (flwr.compat's "fitres.*"); not the site's own.
LEGACY_RECORD_PREFIX = "fitres."


@dataclass
class ReplyScreen:
    """Screens one exchange's replies against its form and the run's site identities."""

    identities: SiteIdentities
    form: ReplyForm
    phase: str  # "train" or "evaluate", as failures record it

    def screen(
        self, server_round: int, replies: list[Message], sent: Iterable[Message] = ()
    ) -> tuple[list[Message], list[dict[str, Any]]]:
        """(accepted replies, failures): error replies and refused replies, each naming its node."""
        refused = self.refusals(server_round, replies)
        failures = failed_replies(replies, self.phase, sent)
        accepted = []
        for reply in replies:
            if reply.has_error():
                continue
            node_id = reply.metadata.src_node_id
            if node_id in refused:
                failures.append(failure(node_id, self.phase, refused[node_id], **self._who(node_id, reply)))
            else:
                accepted.append(reply)
        return accepted, failures

    def refusals(self, server_round: int, replies: Iterable[Message]) -> dict[int, str]:
        """Node id → why its reply is refused, for the replies that are not errors already."""
        refused: dict[int, str] = {}
        claims: dict[int, str | None] = {}
        for reply in replies:
            if reply.has_error():
                continue
            node_id = reply.metadata.src_node_id
            if (problem := self._form_problem(reply.content)) is not None:
                refused[node_id] = problem
            else:
                claims[node_id] = site_id_of(reply.content)
        refused |= self.identities.check_claims(claims)
        for node_id, reason in refused.items():
            log.warning("round %d: %s reply of node %d refused: %s", server_round, self.phase, node_id, reason)
        return refused

    def _form_problem(self, content: RecordDict) -> str | None:
        try:
            return reply_problem(content, self.form)
        except Exception as malformed:  # whatever a decoder makes of hostile bytes is that reply's fault
            return f"malformed {self.form.exchange} reply: {type(malformed).__name__}: {malformed}"

    def _who(self, node_id: int, reply: Message) -> dict[str, str]:
        who = {}
        if (site := self.identities.site_of(node_id)) is not None:
            who["site"] = site
        claimed = site_id_of(reply.content)
        if claimed is not None and claimed != site:
            who["claimed_site"] = claimed
        return who


class SecureStageScreen:
    """A Grid for SecAgg+'s workflow that refuses unfit replies of the masked-vector stage."""

    def __init__(self, grid: Grid, screen: ReplyScreen, server_round: int, shapes: list[tuple[int, ...]]) -> None:
        self._grid = grid
        form = secure_train_reply_form(screen.form)  # the weights travel masked
        self._screen = _MaskedVectorScreen(screen.identities, form, screen.phase, shapes)
        self._round = server_round

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if not any(_stage(message) == Stage.COLLECT_MASKED_VECTORS for message in messages):
            return replies
        refused = self._screen.refusals(self._round, replies)
        return [
            as_refused(reply, refused[reply.metadata.src_node_id])
            if not reply.has_error() and reply.metadata.src_node_id in refused
            else reply
            for reply in replies
        ]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


@dataclass
class _MaskedVectorScreen(ReplyScreen):
    shapes: list[tuple[int, ...]]

    def _form_problem(self, content: RecordDict) -> str | None:
        clear = RecordDict(
            {k: v for k, v in content.items() if k != RECORD_KEY_CONFIGS and not k.startswith(LEGACY_RECORD_PREFIX)}
        )
        if (problem := super()._form_problem(clear)) is not None:
            return problem
        try:
            vector = content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
            masked = [bytes_to_ndarray(part) for part in cast(list[bytes], vector)]
        except Exception as malformed:  # as above: the reply's bytes, not our code
            return f"malformed masked vector: {type(malformed).__name__}: {malformed}"
        return masked_vector_problem(masked, self.shapes)


def _stage(message: Message) -> str | None:
    if not message.has_content() or RECORD_KEY_CONFIGS not in message.content.config_records:
        return None
    stage = message.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE)
    return stage if isinstance(stage, str) else None
