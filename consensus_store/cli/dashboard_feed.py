"""The dashboard's watch: every change under ``_cs/`` as it happens, on a daemon thread.

Polls see only the state at each refresh, so a member that joins and leaves between two of
them is missed; the watch sees both (``client.watch``: in revision order, each once, resuming
on another node when the one it polls dies).  ``drain`` hands the events over to the next
snapshot.  When the watch fails (every node down, or its cursor compacted away) the feed says
it is not live, so the snapshot falls back to comparing polls, and starts a new watch from
the present after a short pause.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any

from consensus_store.cli.dashboard_coordination import RESERVED_PREFIX
from consensus_store.errors import ConsensusStoreError
from consensus_store.models import WatchEvent

MAX_QUEUED = 1000        # between two refreshes; past it the oldest are dropped and counted
RESTART_PAUSE_S = 1.0
POLL_S = 0.5             # how long one get() waits, so close() is noticed promptly


class CoordinationFeed:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._events: deque[WatchEvent] = deque(maxlen=MAX_QUEUED)
        self._dropped = 0
        self._live = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-watch", daemon=True)

    def start(self) -> "CoordinationFeed":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def drain(self) -> tuple[tuple[WatchEvent, ...], int, bool]:
        """(events since the last drain, how many were dropped, whether the watch is live)."""
        with self._lock:
            events, dropped = tuple(self._events), self._dropped
            self._events.clear()
            self._dropped = 0
            return events, dropped, self._live

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                watch = self._client.watch(RESERVED_PREFIX, prev_value=True)
                self._set_live(True)
                while not self._stop.is_set():
                    event = watch.get(timeout=POLL_S)
                    if event is not None:
                        self._add(event)
            except (ConsensusStoreError, OSError):
                self._set_live(False)
                self._stop.wait(RESTART_PAUSE_S)

    def _set_live(self, live: bool) -> None:
        with self._lock:
            self._live = live

    def _add(self, event: WatchEvent) -> None:
        with self._lock:
            if len(self._events) == MAX_QUEUED:
                self._dropped += 1
            self._events.append(event)
