"""Watches: long-polls for changes under a prefix after a revision (node-local, not replicated).

Every replica sees every applied change, so each node keeps the recent ones in a bounded
history, bounded in events and in bytes (``[limits] watch_history_events`` and
``watch_history_bytes``: a few large values must not keep megabytes alive).  It knows all
changes with revision > ``floor``; a watcher asking for older history gets ``Compacted`` and
must re-read (range) and watch from the revision that read returned.  A snapshot install skips
events, so it raises the floor to the snapshot's index.

The history is a list of segments, each append-only and never changed once full; the oldest
whole segment is dropped when a bound is passed.  A watcher takes the list (and the length of
the last segment) under the lock, a copy of a few hundred references, and scans without it:
apply, which appends under that lock, never waits for a scan.
"""
from __future__ import annotations

import asyncio
import bisect
import threading
from typing import Any, Callable

from consensus_store.errors import ConsensusStoreError
from consensus_store.state.keyspace import value_bytes

MAX_BUFFERED_EVENTS = 100_000
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
MAX_EVENTS_PER_ANSWER = 1000
SEGMENT_EVENTS = 1024
SEGMENT_BYTES = 1024 * 1024
EVENT_OVERHEAD_BYTES = 96     # the event's dicts and revision numbers


class Compacted(ConsensusStoreError):
    http_status = 410
    code = "compacted"


class _Segment:
    """Events in apply order with their revisions; only the newest segment is appended to."""

    __slots__ = ("revisions", "events", "bytes")

    def __init__(self) -> None:
        self.revisions: list[int] = []
        self.events: list[dict[str, Any]] = []
        self.bytes = 0


class WatchHub:
    """The history is filled in apply (on the loop, inside a Raft tick); waiting watchers are
    woken after the tick (``post``: the loop's ``call_soon``), and only when some wait."""

    def __init__(self, post: Callable[..., Any], max_events: int = MAX_BUFFERED_EVENTS,
                 max_bytes: int = MAX_BUFFERED_BYTES) -> None:
        self._post = post
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._events = 0
        self._bytes = 0
        self._max_events, self._max_bytes = max_events, max_bytes
        # Segments small against the bounds: dropping a whole one keeps most of the history.
        self._segment_events = max(1, min(SEGMENT_EVENTS, max_events // 8))
        self._segment_bytes = max(1, min(SEGMENT_BYTES, max_bytes // 8))
        self.floor = 0        # all changes with a revision above this are known
        self.latest = 0       # revision of the newest change seen
        self._waiters: list[tuple[str, int, asyncio.Future]] = []

    @property
    def history(self) -> tuple[int, int]:
        """(events, estimated bytes) kept now."""
        with self._lock:
            return self._events, self._bytes

    # ---- apply (inside a tick) ----------------------------------------------------------------
    def on_events(self, index: int, events: list[dict[str, Any]]) -> None:
        sizes = [_event_bytes(event) for event in events]   # outside the lock: may encode
        with self._lock:
            if index <= self.floor:
                return
            segments = self._segments
            for event, size in zip(events, sizes):
                last = segments[-1] if segments else None
                if (last is None or len(last.events) >= self._segment_events
                        or last.bytes >= self._segment_bytes):
                    last = _Segment()
                    segments.append(last)
                last.revisions.append(index)
                last.events.append(event)
                last.bytes += size
            self._events += len(events)
            self._bytes += sum(sizes)
            while len(segments) > 1 and (self._events > self._max_events
                                         or self._bytes > self._max_bytes):
                oldest = segments.pop(0)
                self._events -= len(oldest.events)
                self._bytes -= oldest.bytes
                self.floor = oldest.revisions[-1]
            self.latest = index
            wake = bool(self._waiters)
        if wake:
            self._post(self._wake, lambda prefix: any(_matches(e, prefix) for e in events))

    def on_reset(self, index: int) -> None:
        """The state was replaced wholesale (snapshot) at ``index``: history below is gone."""
        with self._lock:
            self._segments = []
            self._events = self._bytes = 0
            self.floor = self.latest = max(self.latest, index)
            wake = bool(self._waiters)
        if wake:   # their `after` may now be compacted: let them re-check
            self._post(self._wake, lambda prefix: True)

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

    def _view(self) -> tuple[list[_Segment], int, int, int]:
        """What a scan reads: (segments, length of the last, floor, latest).  Call with the
        lock held; O(segments)."""
        segments = list(self._segments)
        return segments, (len(segments[-1].events) if segments else 0), self.floor, self.latest

    async def watch(self, prefix: str, after: int, timeout: float) -> list[dict[str, Any]]:
        """Changes under ``prefix`` with revision > ``after``; waits up to ``timeout`` for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        scanned = after      # no match up to this revision (scans do not start over)
        while True:
            with self._lock:
                segments, last_length, floor, latest = self._view()
            if scanned < floor:
                raise Compacted(f"history before revision {floor} is gone; re-read and watch "
                                f"from the revision of that read", floor=floor)
            events = _scan(segments, last_length, prefix, scanned)
            remaining = deadline - loop.time()
            if events or remaining <= 0:
                return events
            scanned = max(scanned, latest)
            with self._lock:   # nothing new since the scan: wait, registered in the same step
                if self.latest != latest or self.floor != floor:
                    continue
                future = loop.create_future()
                self._waiters.append((prefix, after, future))
            try:
                await asyncio.wait_for(future, remaining)
            except asyncio.TimeoutError:
                return []


def _scan(segments: list[_Segment], last_length: int, prefix: str,
          after: int) -> list[dict[str, Any]]:
    """The first MAX_EVENTS_PER_ANSWER events under ``prefix`` with revision > ``after``."""
    # The first segment holding a revision above `after` (each segment's last revision).
    low, high = 0, len(segments)
    while low < high:
        middle = (low + high) // 2
        segment = segments[middle]
        length = last_length if middle == len(segments) - 1 else len(segment.events)
        if length and segment.revisions[length - 1] > after:
            high = middle
        else:
            low = middle + 1
    found: list[dict[str, Any]] = []
    for position in range(low, len(segments)):
        segment = segments[position]
        length = last_length if position == len(segments) - 1 else len(segment.events)
        start = bisect.bisect_right(segment.revisions, after, 0, length)
        for event in segment.events[start:length]:
            if _matches(event, prefix):
                found.append(event)
                if len(found) >= MAX_EVENTS_PER_ANSWER:
                    return found
    return found


def _event_bytes(event: dict[str, Any]) -> int:
    if event["type"] == "put":
        kv = event["kv"]
        return len(kv["key"]) + value_bytes(kv["value"]) + EVENT_OVERHEAD_BYTES
    return len(event["key"]) + EVENT_OVERHEAD_BYTES


def _matches(event: dict[str, Any], prefix: str) -> bool:
    key = event["kv"]["key"] if event["type"] == "put" else event["key"]
    return key.startswith(prefix)
