"""Which site each SuperNode serves: decided by the server, never by a reply on its own word.

Per-site metrics, failures and fairness statistics are filed under a site's name, so a
node that could name itself could overwrite another site's records. What the server
can trust depends on the runtime:

- Deployment (``flower-superlink --enable-supernode-auth``, server/superlink.py): the
  SuperLink admits a SuperNode only if the consortium registered its public key
  (``cmrfl server register-site``, i.e. ``flwr supernode register``), and the node signs
  every request with the matching private key, so its node id stands for that key.
  The name given at registration (``--name``; ``cmrfl local-deployment`` gives the site's
  name) is stored with the key by the SuperLink and reaches the ServerApp as
  ``NodeInfo.name`` in ``grid.get_nodes()``. That name, set by the consortium and not by
  the site, *is* the site: a reply claiming another ``site-id`` is refused.
- A node registered without a name, and every node of a simulation (Flower creates them
  with random keys and no names; the partition a node serves is not told to the
  ServerApp): the node id is all the server can trust. The first ``site-id`` a node
  claims is pinned to it for the run (trust on first use). A later reply claiming
  another name is refused; so is a claim of a name that is registered for, or pinned
  to, another node. Nodes that newly claim one name in the same exchange are all
  refused, so that the faster reply cannot win a name.

Pins live as long as the ServerApp's process: a resumed run pins again from its first
replies. Register every site with a name to leave nothing to first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class RegisteredNode(Protocol):
    """What the server reads of Flower's ``NodeInfo`` (``grid.get_nodes()``)."""

    @property
    def node_id(self) -> int: ...

    @property
    def name(self) -> str: ...


@dataclass
class SiteIdentities:
    """Node id → site name: registered names first, then names pinned at first claim."""

    registered: dict[int, str] = field(default_factory=dict)
    pinned: dict[int, str] = field(default_factory=dict)

    def learn_registrations(self, nodes: Iterable[RegisteredNode]) -> None:
        """The names the SuperLink holds for connected nodes (none in simulation)."""
        for node in nodes:
            if node.name:
                self.registered[int(node.node_id)] = str(node.name)

    def site_of(self, node_id: int) -> str | None:
        return self.registered.get(node_id) or self.pinned.get(node_id)

    def known(self) -> dict[int, str]:
        return {**self.pinned, **self.registered}

    def check_claims(self, claims: Mapping[int, str | None]) -> dict[int, str]:
        """Pins the first claims that are sound; returns node id → why its claim is refused."""
        refused: dict[int, str] = {}
        new_claims: dict[str, list[int]] = {}
        for node_id, claimed in claims.items():
            known = self.site_of(node_id)
            others = self._holders(claimed, besides=node_id) if claimed else []
            if claimed is None:
                refused[node_id] = "its reply names no site (no 'site-id' in its 'site' record)"
            elif known is not None and claimed != known:
                how = self._how(node_id)
                refused[node_id] = f"claims site-id {claimed!r}, but node {node_id} is site {known!r} ({how})"
            elif others:
                refused[node_id] = (
                    f"claims site-id {claimed!r}, which is node {others[0]}'s ({self._how(others[0])})"
                    if known is None
                    else f"site-id {claimed!r} is registered for nodes {node_id} and {others[0]}"
                )
            elif known is None:
                new_claims.setdefault(claimed, []).append(node_id)
        for claimed, node_ids in new_claims.items():
            if len(node_ids) == 1:
                self.pinned[node_ids[0]] = claimed
                continue
            for node_id in node_ids:
                rivals = ", ".join(str(n) for n in node_ids if n != node_id)
                refused[node_id] = f"claims site-id {claimed!r} in the same exchange as node(s) {rivals}"
        return refused

    def _holders(self, site: str, besides: int) -> list[int]:
        return sorted(node_id for node_id, name in self.known().items() if name == site and node_id != besides)

    def _how(self, node_id: int) -> str:
        return "registered with the SuperLink" if node_id in self.registered else "by its first reply"
