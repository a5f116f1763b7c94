"""A removed node notices it was removed and stops, as etcd's "the member has been permanently
removed from the cluster".

pysyncobj drops a removed node from every member's voter set as soon as the leader appends the
``rem`` entry, so that entry never reaches the removed node: it is left connected to no one,
and the members refuse its raft connections without saying why (a node not added yet is
refused the same way).  So the node asks: once it has been connected to no voter for
``ISOLATED_S``, it asks the members it knows for the leader's member list over their client API
(``POST /v1/members`` with ``from_leader``, the node token, as messaging_peers.py calls them).
A leader's list without this node (neither its id nor its raft address), twice in a row
``CHECK_INTERVAL_S`` apart, means it was removed: one log line (``REMOVED_LINE``), then the
process's handler (``consensus-store node`` exits with code 3, cli/run_node.py).  A node that never applied an entry of the
cluster (an empty data dir waiting for ``member add``) is only told once that it waits.  No
answer (the members are down or unreachable) decides nothing: the node keeps waiting.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any, Callable

import httpx

from consensus_store.config import NodeConfig

if TYPE_CHECKING:
    from consensus_store.node.engine import Engine

log = logging.getLogger("consensus_store.membership")

ISOLATED_S = 2.0            # connected to no voter this long before asking
CHECK_INTERVAL_S = 1.0
ASK_TIMEOUT_S = 1.0
CONFIRMATIONS = 2           # leader answers in a row that leave this node out
MEMBERS_PATH = "/v1/members"
NEVER_JOINED_INDEX = 1      # a fresh data dir holds pysyncobj's first no-op only
REMOVED_LINE = "this node has been removed from the cluster"

_removed_handler: Callable[[str], None] | None = None


def set_removed_handler(handler: Callable[[str], None] | None) -> None:
    """What the process does once this node knows it was removed (``consensus-store node``
    stops with exit code 3); without a handler (an embedded node) the line is logged only."""
    global _removed_handler
    _removed_handler = handler


def leaves_out(answer: Any, node_id: str, raft_address: str) -> bool | None:
    """Whether a leader's member list leaves out this node: neither its id nor its raft
    address (None: not such a list).  Both, as another node may know this one by another
    address (a name or a proxy in front of it) than the one it listens on."""
    rows = answer.get("members") if isinstance(answer, dict) else None
    if not isinstance(rows, list):
        return None
    return all(not (isinstance(r, dict) and (r.get("id") == node_id
                                             or r.get("raft_address") == raft_address))
               for r in rows)


class RemovalWatch:
    """Runs on the node's loop (``run``) from the API's start until it is cancelled."""

    def __init__(self, config: NodeConfig, engine: "Engine", token: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._config = config
        self._engine = engine
        self._token = token
        self._ssl = ssl_context
        self._own = str(config.raft_address)
        self._isolated_since: float | None = None
        self._confirmed = 0
        self._told_waiting = False
        self.removed_by: str | None = None      # the leader that left this node out

    async def run(self) -> None:
        if self._config.is_replica:
            return                          # replicas are not members: nothing to notice
        async with self.http_client() as http:
            while self.removed_by is None:
                await asyncio.sleep(CHECK_INTERVAL_S)
                try:
                    await self._check(http)
                except Exception:  # noqa: BLE001 - a failed check decides nothing
                    log.exception("removal check failed")

    def http_client(self, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
        """The client the members are asked with (node token; ``transport``: tests)."""
        return httpx.AsyncClient(verify=self._ssl if self._ssl is not None else True,
                                 timeout=ASK_TIMEOUT_S, transport=transport,
                                 headers={"Authorization": f"Bearer {self._token}"})

    async def _check(self, http: httpx.AsyncClient) -> None:
        engine = self._engine
        if not engine.started:
            return
        status = await engine.status()
        if status.connected_peers or status.role == "leader":
            self._isolated_since, self._confirmed = None, 0
            return
        now = time.monotonic()
        if self._isolated_since is None:
            self._isolated_since = now
        if now - self._isolated_since < ISOLATED_S:
            return
        leader = await self._leader_leaving_out(http)
        if leader is None:
            self._confirmed = 0
            return
        if engine.applied_index <= NEVER_JOINED_INDEX:
            if not self._told_waiting:
                self._told_waiting = True
                log.info("not a member of the cluster yet (leader %s does not list %s): "
                         "waiting for 'consensus-store member add'", leader, self._config.id)
            return
        self._confirmed += 1
        if self._confirmed < CONFIRMATIONS:
            return
        self.removed_by = leader
        line = (f"{REMOVED_LINE} (leader {leader} no longer lists {self._config.id} "
                f"{self._own}); stopping. To join again: clear its data dir, then "
                f"'consensus-store member add'")
        log.critical("%s", line)
        if _removed_handler is not None:
            _removed_handler(line)

    async def _leader_leaving_out(self, http: httpx.AsyncClient) -> str | None:
        """The id of a leader whose member list leaves this node out, or None (no leader
        answered, or it lists this node)."""
        scheme = self._config.scheme
        peers = [m for m in self._engine.membership.table()
                 if m["raft_address"] != self._own and m["membership"] == "voter"]
        answers = await asyncio.gather(*(self._ask(http, f"{scheme}://{m['api_address']}")
                                         for m in peers))
        for member, answer in zip(peers, answers):
            if answer is None:
                continue
            verdict = leaves_out(answer, self._config.id, self._own)
            if verdict is not None:
                return str(answer.get("leader") or member["id"]) if verdict else None
        return None

    async def _ask(self, http: httpx.AsyncClient, endpoint: str) -> Any:
        try:
            reply = await http.post(endpoint + MEMBERS_PATH, json={"from_leader": True})
            return reply.json() if reply.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
