"""``client.nodes()`` and ``client.monitor_nodes()``: every live member (``member add`` and
``remove`` included), up or down as the cluster's leader sees its peers, and the read replicas
connected to the leader (``replica`` true) (op ``nodes``, answered by the leader; a follower says
NotLeader and the client asks the next node).

``monitor_nodes`` polls that view every ``interval`` seconds and yields ``nodeup`` /
``nodedown`` events (as ``:net_kernel.monitor_nodes``): changes only, unless ``initial`` asks
for a ``nodeup`` of each node up in the first view.  A node that leaves the view while up (it was
removed, or a replica went away) gives a ``nodedown``; an added one a ``nodeup`` once connected.
While no leader answers (an election, a lost majority) it yields nothing and keeps polling.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, AsyncIterator, Iterator

from consensus_store.api.messaging import NodeEvent, NodeInfo, node_events, nodes_from
from consensus_store.api.requester import JsonObject
from consensus_store.errors import ConsensusStoreError

MONITOR_INTERVAL_S = 0.5
NODES_TIMEOUT_S = 3.0


def view_events(before: dict[str, bool], now: dict[str, bool]) -> list[NodeEvent]:
    """The events between two views: up/down changes, and a ``nodedown`` for each node that
    was up and is gone from the view (removed)."""
    gone = [NodeEvent("nodedown", node) for node, up in before.items() if up and node not in now]
    return node_events(before, now) + gone


class NodesApi:
    if TYPE_CHECKING:
        def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject: ...

    def nodes(self, *, timeout: float = NODES_TIMEOUT_S) -> list[NodeInfo]:
        return nodes_from(self.request("nodes", {}, timeout))

    def monitor_nodes(self, *, interval: float = MONITOR_INTERVAL_S, initial: bool = False,
                      timeout: float | None = None) -> Iterator[NodeEvent]:
        """nodeup / nodedown events as they happen (until ``timeout`` seconds, None: for
        ever; ``close()`` the iterator to stop)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        before: dict[str, bool] | None = {} if initial else None
        while deadline is None or time.monotonic() < deadline:
            try:
                now = {n.id: n.up for n in self.nodes(timeout=max(interval, 1.0))}
            except ConsensusStoreError:
                now = None
            if now is not None:
                if before is not None:
                    yield from view_events(before, now)
                before = now
            time.sleep(interval)


class AsyncNodesApi:
    if TYPE_CHECKING:
        async def request(self, op: str, body: JsonObject,
                          timeout: float | None) -> JsonObject: ...

    async def nodes(self, *, timeout: float = NODES_TIMEOUT_S) -> list[NodeInfo]:
        return nodes_from(await self.request("nodes", {}, timeout))

    async def monitor_nodes(self, *, interval: float = MONITOR_INTERVAL_S, initial: bool = False,
                            timeout: float | None = None) -> AsyncIterator[NodeEvent]:
        """As ``NodesApi.monitor_nodes``: ``async for event in client.monitor_nodes()``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        before: dict[str, bool] | None = {} if initial else None
        while deadline is None or loop.time() < deadline:
            try:
                now = {n.id: n.up for n in await self.nodes(timeout=max(interval, 1.0))}
            except ConsensusStoreError:
                now = None
            if now is not None:
                if before is not None:
                    for event in view_events(before, now):
                        yield event
                before = now
            await asyncio.sleep(interval)
