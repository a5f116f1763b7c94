"""Watches: long-polls for changes under a prefix after a revision (node-local, not replicated).

Every replica sees every applied change, so each node keeps the recent ones in a bounded
buffer.  It knows all changes with revision > ``floor``; a watcher asking for older history gets
``Compacted`` and must re-read (range) and watch from the revision that read returned.  A
snapshot install skips events, so it raises the floor to the snapshot's index.
"""
from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

from consensus_store.errors import ConsensusStoreError
from consensus_store.node.bridge import LoopBridge

MAX_BUFFERED_EVENTS = 100_000
MAX_EVENTS_PER_ANSWER = 1000


class Compacted(ConsensusStoreError):
    http_status = 410
    code = "compacted"


class WatchHub:
    """The buffer is filled on the raft thread, under a lock; the loop is woken only when a
    watcher waits (a wake-up per applied entry cost followers a tenth of their raft thread)."""

    def __init__(self, bridge: LoopBridge, max_events: int = MAX_BUFFERED_EVENTS) -> None:
        self._bridge = bridge
        self._lock = threading.Lock()
        self._events: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self._max_events = max_events
        self.floor = 0        # all changes with a revision above this are known
        self.latest = 0       # revision of the newest change seen
        self._waiters: list[tuple[str, int, asyncio.Future]] = []

    # ---- raft thread ----------------------------------------------------------------------------
    def on_events(self, index: int, events: list[dict[str, Any]]) -> None:
        with self._lock:
            if index <= self.floor:
                return
            for event in events:
                self._events.append((index, event))
            while len(self._events) > self._max_events:
                self.floor = self._events.popleft()[0]
            self.latest = index
            wake = bool(self._waiters)
        if wake:
            self._bridge.post(self._wake, lambda prefix: any(_matches(e, prefix) for e in events))

    def on_reset(self, index: int) -> None:
        """The state was replaced wholesale (snapshot) at ``index``: history below is gone."""
        with self._lock:
            self._events.clear()
            self.floor = self.latest = max(self.latest, index)
            wake = bool(self._waiters)
        if wake:   # their `after` may now be compacted: let them re-check
            self._bridge.post(self._wake, lambda prefix: True)

    # ---- loop -----------------------------------------------------------------------------------
    def _wake(self, concerns: Any) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        still_waiting = []
        for prefix, after, future in waiters:
            if future.done():
                continue
            if concerns(prefix):
                future.set_result(None)
            else:
                still_waiting.append((prefix, after, future))
        with self._lock:
            self._waiters.extend(still_waiting)

    def _events_after(self, prefix: str, after: int) -> list[dict[str, Any]]:
        """Call with the lock held (the raft thread appends to the buffer)."""
        if after < self.floor:
            raise Compacted(f"history before revision {self.floor} is gone; re-read and watch "
                            f"from the revision of that read", floor=self.floor)
        found = []
        for revision, event in reversed(self._events):
            if revision <= after:
                break
            if _matches(event, prefix):
                found.append(event)
        found.reverse()
        return found[:MAX_EVENTS_PER_ANSWER]

    async def watch(self, prefix: str, after: int, timeout: float) -> list[dict[str, Any]]:
        """Changes under ``prefix`` with revision > ``after``; waits up to ``timeout`` for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._lock:   # look and register as one step: no change slips in between
                events = self._events_after(prefix, after)
                remaining = deadline - loop.time()
                if events or remaining <= 0:
                    return events
                future = loop.create_future()
                self._waiters.append((prefix, after, future))
            try:
                await asyncio.wait_for(future, remaining)
            except asyncio.TimeoutError:
                return []


def _matches(event: dict[str, Any], prefix: str) -> bool:
    key = event["kv"]["key"] if event["type"] == "put" else event["key"]
    return key.startswith(prefix)
