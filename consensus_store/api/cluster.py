"""Calls that operate the cluster itself (admin role), shared by ``Client``, ``AsyncClient`` and
the embedded ``Node``: ``transfer_leadership``, ``sessions`` (every open session).

Imports ``errors`` and ``requester`` only (see the package docstring).
"""
from __future__ import annotations

from dataclasses import dataclass

from consensus_store.api.requester import JsonObject
from consensus_store.errors import InvalidRequest

TRANSFER_OP = "leader_transfer"
SESSIONS_OP = "sessions"


@dataclass(frozen=True)
class LeaderTransfer:
    """The outcome of a leadership transfer: who leads now, and in which term."""

    leader: str
    term: int


def transfer_body(to: str | None) -> JsonObject:
    if to is not None and (not isinstance(to, str) or not to):
        raise InvalidRequest("to: a node id, or None for the most caught-up voter")
    return {} if to is None else {"to": to}


def parse_transfer(result: JsonObject) -> LeaderTransfer:
    return LeaderTransfer(str(result["leader"]), int(result["term"]))


_TRANSFER_DOC = """Move Raft leadership to voter ``to`` (a node id; None: the most caught-up
other voter), as etcd's ``move-leader`` does.

The leader stops taking new writes for at most an election timeout, brings the target's log up
to date, then asks it to campaign at once: the target wins without anyone waiting for an
election timeout.  Writes sent meanwhile wait and then go to the new leader; none is lost.
Returns ``LeaderTransfer(leader, term)`` once the target leads (at once if it already did).
Needs the admin role.  Raises InvalidRequest for an id that is no voter or a target that is
not connected to the leader, Unavailable (``details["reason"] == "transfer_failed"``) if the
target did not win in time (the old leader then takes writes again), Forbidden without admin.
The request is retried on another node while the one asked does not lead, up to ``timeout``.
"""


class ClusterAdminApi:
    """The blocking calls; a subclass supplies ``request`` (``Requester``)."""

    def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        raise NotImplementedError

    def transfer_leadership(self, to: str | None = None, *,
                            timeout: float | None = None) -> LeaderTransfer:
        return parse_transfer(self.request(TRANSFER_OP, transfer_body(to), timeout))

    transfer_leadership.__doc__ = _TRANSFER_DOC

    def sessions(self, *, timeout: float | None = None) -> list[JsonObject]:
        """Every open session: id, ttl, node, keys (how many it owns).  Admin role."""
        return self.request(SESSIONS_OP, {}, timeout)["sessions"]


class AsyncClusterAdminApi:
    """``ClusterAdminApi`` for asyncio (``AsyncRequester``)."""

    async def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        raise NotImplementedError

    async def transfer_leadership(self, to: str | None = None, *,
                                  timeout: float | None = None) -> LeaderTransfer:
        return parse_transfer(await self.request(TRANSFER_OP, transfer_body(to), timeout))

    transfer_leadership.__doc__ = _TRANSFER_DOC

    async def sessions(self, *, timeout: float | None = None) -> list[JsonObject]:
        """Every open session: id, ttl, node, keys (how many it owns).  Admin role."""
        return (await self.request(SESSIONS_OP, {}, timeout))["sessions"]


__all__ = ["AsyncClusterAdminApi", "ClusterAdminApi", "LeaderTransfer",
                      "TRANSFER_OP", "parse_transfer", "transfer_body"]
