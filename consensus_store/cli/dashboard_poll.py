"""The dashboard's I/O: one poll of the cluster, bounded in time whatever is down.

Every node's status is asked in parallel (``Client.cluster_status``, one thread per node, each
with a short timeout) while, on another thread, one node is asked for the coordination data
(one range read of ``_cs/`` at ``local`` consistency, and the admin-only session list).  A dead
or paused node costs at most the timeout; it never stalls a frame.  Each poll also takes what
the coordination watch (``dashboard_feed``) saw since the previous one.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from consensus_store.cli.dashboard_coordination import (NEEDS_ADMIN, RESERVED_PREFIX,
                                                        Coordination, parse_coordination)
from consensus_store.cli.dashboard_feed import CoordinationFeed
from consensus_store.cli.dashboard_model import Poll
from consensus_store.errors import AuthError, ConsensusStoreError, Forbidden
from consensus_store.models import NodeStatus

COORDINATION_KEYS = 5000     # one read's worth; beyond it the panels say "truncated"


class Poller:
    """Polls through one ``Client``; ``close`` ends its threads."""

    def __init__(self, client: Any, timeout: float = 0.4, *, watch: bool = True) -> None:
        self.client = client
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="dashboard-poll")
        self._feed = CoordinationFeed(client).start() if watch else None

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def poll(self) -> Poll:
        """Statuses, the coordination read and the session list, all three at once."""
        wall, mono = time.time(), time.monotonic()
        statuses: Future[list[NodeStatus]] = self._pool.submit(
            self.client.cluster_status, timeout=self.timeout)
        records: Future[dict[str, Any]] = self._pool.submit(
            self.client.request, "range", {"prefix": RESERVED_PREFIX,
                                           "limit": COORDINATION_KEYS, "consistency": "local"},
            self.timeout)
        sessions: Future[dict[str, Any]] = self._pool.submit(
            self.client.request, "sessions", {}, self.timeout)
        nodes = tuple(statuses.result())
        data: Coordination | None = None
        error = None
        try:
            answer = records.result()
        except ConsensusStoreError as exc:
            error = f"{exc.code}: {exc.message}"
        else:
            session_list, note = _sessions(sessions)
            data = parse_coordination(answer.get("kvs", ()), truncated=bool(answer.get("more")),
                                      sessions=session_list, sessions_note=note)
        watched, dropped, live = self._feed.drain() if self._feed else ((), 0, False)
        return Poll(statuses=nodes, members=tuple(self.client.members), coordination=data,
                    coordination_error=error, wall_time=wall, mono_time=mono,
                    watched=watched, watch_dropped=dropped, watch_live=live)


def _sessions(future: "Future[dict[str, Any]]") -> tuple[list[dict[str, Any]] | None, str]:
    """The session list, or None and why not (``NEEDS_ADMIN`` for a token that may not)."""
    try:
        return future.result()["sessions"], ""
    except (Forbidden, AuthError):
        return None, NEEDS_ADMIN
    except ConsensusStoreError as exc:
        return None, exc.code
