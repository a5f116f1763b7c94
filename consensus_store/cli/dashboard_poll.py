"""The dashboard's I/O: one poll of the cluster, bounded in time whatever is down.

Every node's status is asked in parallel (``Client.cluster_status``, one thread per node, each
with a short timeout) while, on another thread, one node is asked for the coordination data
(one range read of ``_cs/`` at ``local`` consistency, and the admin-only session list).  A dead
or paused node costs at most the timeout; it never stalls a frame.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from consensus_store.cli.dashboard_coordination import (NEEDS_ADMIN, RESERVED_PREFIX,
                                                        Coordination, parse_coordination)
from consensus_store.cli.dashboard_model import Poll
from consensus_store.errors import AuthError, ConsensusStoreError, Forbidden
from consensus_store.models import NodeStatus

COORDINATION_KEYS = 5000     # one read's worth; beyond it the panels say "truncated"


class Poller:
    """Polls through one ``Client``; ``close`` ends its threads."""

    def __init__(self, client: Any, timeout: float = 0.4) -> None:
        self.client = client
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dashboard-poll")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def poll(self) -> Poll:
        wall, mono = time.time(), time.monotonic()
        statuses: Future[list[NodeStatus]] = self._pool.submit(
            self.client.cluster_status, timeout=self.timeout)
        coordination: Future[Coordination] = self._pool.submit(self._coordination)
        nodes = tuple(statuses.result())
        error = None
        try:
            data: Coordination | None = coordination.result()
        except ConsensusStoreError as exc:
            data, error = None, f"{exc.code}: {exc.message}"
        return Poll(statuses=nodes, members=tuple(self.client.members), coordination=data,
                    coordination_error=error, wall_time=wall, mono_time=mono)

    def _coordination(self) -> Coordination:
        answer = self.client.request(
            "range", {"prefix": RESERVED_PREFIX, "limit": COORDINATION_KEYS,
                      "consistency": "local"}, self.timeout)
        sessions: list[dict[str, Any]] | None = None
        note = ""
        try:
            sessions = self.client.request("sessions", {}, self.timeout)["sessions"]
        except (Forbidden, AuthError):
            note = NEEDS_ADMIN
        except ConsensusStoreError as exc:
            note = exc.code
        return parse_coordination(answer.get("kvs", ()), truncated=bool(answer.get("more")),
                                  sessions=sessions, sessions_note=note)
