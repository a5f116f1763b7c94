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

Waiting watchers are grouped by prefix: one applied entry is matched once per distinct prefix,
not once per watcher (10,000 watchers on one prefix cost one match, then one wake each).
The entries applied before a wake-up runs share it.  Woken watchers, and streams with more to
send (``turn``), take turns: each loop pass runs at most ``PASS_BUDGET_S`` of them (measured:
scans, and sends: ``charge``), the rest wait for the next pass.  Raft, and the requests on
the same loop, run in every pass: a put's answer never waits behind the whole fan-out.  A
woken watcher learns the revision before its prefix's first change (it skips what other
prefixes wrote while it waited), and one scan looks at ``MAX_SCANNED_PER_TURN`` events at
most (then goes on in a later turn), so no turn is long either.  An answer never ends inside a revision (the events of one entry go out together), and says up to
which revision it is complete (``through``), so a client's cursor moves past entries that did
not concern it.  ``watcher_count`` counts the long-polls and streams attached now; past
``max_watchers`` a new one gets 503 (the client tries another node).
"""
from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

from consensus_store.errors import Compacted, Unavailable
from consensus_store.state.keyspace import value_bytes

MAX_BUFFERED_EVENTS = 100_000
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
MAX_EVENTS_PER_ANSWER = 1000
SEGMENT_EVENTS = 1024
SEGMENT_BYTES = 1024 * 1024
EVENT_OVERHEAD_BYTES = 96     # the event's dicts and revision numbers
MAX_WATCHERS = 20_000         # long-polls and streams attached to one node at once
WAKE_COST_S = 20e-6           # the least one watcher's turn costs the loop (task step, scan)
PASS_BUDGET_S = 0.002         # watchers' turns per loop pass: the rest of it is Raft's, requests'
MAX_SCANNED_PER_TURN = 4096   # events one scan looks at (then "complete through" so far)


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
                 max_bytes: int = MAX_BUFFERED_BYTES, max_watchers: int = MAX_WATCHERS) -> None:
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
        # By prefix.  A group's futures are woken with the revision before the first change
        # under it since the group formed: its watchers skip the other prefixes' events.
        self._waiters: dict[str, set[asyncio.Future]] = {}
        self.max_watchers = max_watchers
        self._attached = 0
        self._unmatched: list[tuple[int, list[dict[str, Any]]]] = []   # since the wake-up
        self._wake_posted = False
        self._turns: deque[tuple[asyncio.Future, Any]] = deque()   # (waiting for a turn, result)
        self._grant_posted = False
        self._granted = 0         # turns granted in the last pass (they run before the next)
        self._turn_cost = WAKE_COST_S
        self._spent = 0.0         # loop time watchers spent since the last grant

    @property
    def watcher_count(self) -> int:
        """Long-polls and streams attached to this node now."""
        return self._attached

    def attach(self) -> "_Attached":
        """Count one watcher while the ``with`` block runs; 503 past ``max_watchers``."""
        if self._attached >= self.max_watchers:
            raise Unavailable(f"this node already serves {self.max_watchers} watchers; "
                              f"try another node")
        return _Attached(self)

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
            if not self._waiters:
                return
            # One wake-up for all the entries applied before it runs (a tick applies many).
            self._unmatched.append((index, events))
            if self._wake_posted:
                return
            self._wake_posted = True
        self._post(self._wake_for_new)

    def _wake_for_new(self) -> None:
        with self._lock:
            entries, self._unmatched, self._wake_posted = self._unmatched, [], False

        def before_first_change(prefix: str) -> int | None:
            for index, events in entries:
                for event in events:
                    if _matches(event, prefix):
                        return index - 1
            return None
        self._wake(before_first_change)

    def on_reset(self, index: int) -> None:
        """The state was replaced wholesale (snapshot) at ``index``: history below is gone."""
        with self._lock:
            self._segments = []
            self._events = self._bytes = 0
            self.floor = self.latest = max(self.latest, index)
            wake = bool(self._waiters)
        if wake:   # their `after` may now be compacted: let them re-check
            self._post(self._wake, lambda prefix: 0)

    # ---- loop -----------------------------------------------------------------------------------
    def _wake(self, concerns: Callable[[str], int | None]) -> None:
        """Wake the watchers of every prefix the events concern (one match per prefix:
        ``concerns`` gives the revision before the first change, or None): they queue for
        their turns."""
        with self._lock:
            woken = []
            for prefix in list(self._waiters):
                quiet_through = concerns(prefix)
                if quiet_through is not None:
                    woken.append((self._waiters.pop(prefix), quiet_through))
        self._queue((future, quiet_through) for futures, quiet_through in woken
                    for future in futures)

    async def turn(self) -> None:
        """Wait for this watcher's next turn (a stream with more to send takes turns with the
        others rather than sending all it has in one go)."""
        future = asyncio.get_running_loop().create_future()
        self._queue(((future, None),))
        await future

    def _queue(self, turns: Iterable[tuple[asyncio.Future, Any]]) -> None:
        self._turns.extend(turns)
        if self._turns and not self._grant_posted:
            self._grant_posted = True
            asyncio.get_running_loop().call_soon(self._grant)

    def _grant(self) -> None:
        """One loop pass's turns: as many as fit in ``PASS_BUDGET_S`` at what the turns of the
        last pass cost (they ran just before this: their wake-ups were queued first)."""
        if self._granted:
            self._turn_cost = max(WAKE_COST_S, self._spent / self._granted)
        self._spent = 0.0
        allowed = max(1, int(PASS_BUDGET_S / self._turn_cost))
        turns, granted = self._turns, 0
        while turns and granted < allowed:
            future, result = turns.popleft()
            if not future.done():        # not expired, not cancelled
                future.set_result(result)
                granted += 1
        self._granted = granted
        if turns:
            asyncio.get_running_loop().call_soon(self._grant)   # after the next pass's I/O
        else:
            self._grant_posted = False
            self._granted = 0

    def _view(self, after: int) -> tuple[list[_Segment], int, int, int]:
        """What a scan from ``after`` reads: (the segments from the first holding a revision
        above ``after``, length of the last, floor, latest).  Call with the lock held; a
        caught-up watcher copies one or two segment references, not the whole list."""
        all_segments = self._segments
        low, high = 0, len(all_segments)
        while low < high:
            middle = (low + high) // 2
            if all_segments[middle].revisions[-1] > after:
                high = middle
            else:
                low = middle + 1
        segments = all_segments[max(0, low - 1):] if all_segments else []
        return segments, (len(segments[-1].events) if segments else 0), self.floor, self.latest

    async def watch(self, prefix: str, after: int, timeout: float) -> list[dict[str, Any]]:
        """Changes under ``prefix`` with revision > ``after``; waits up to ``timeout`` for one."""
        return (await self.watch_through(prefix, after, timeout))[0]

    def charge(self, seconds: float) -> None:
        """Loop time a woken watcher spent outside the hub (encoding, sending)."""
        self._spent += seconds

    async def watch_through(self, prefix: str, after: int, timeout: float,
                            max_events: int = MAX_EVENTS_PER_ANSWER
                            ) -> tuple[list[dict[str, Any]], int]:
        """(changes under ``prefix`` with revision > ``after``, the revision up to which that
        answer is complete); waits up to ``timeout`` for a change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        scanned = after      # no match up to this revision (scans do not start over)
        while True:
            with self._lock:
                segments, last_length, floor, latest = self._view(scanned)
            if scanned < floor:
                raise Compacted(f"history before revision {floor} is gone; re-read and watch "
                                f"from the revision of that read", floor=floor)
            started = time.perf_counter()
            events, cut_at = _scan(segments, last_length, prefix, scanned, max_events)
            self._spent += time.perf_counter() - started
            remaining = deadline - loop.time()
            if events or remaining <= 0:
                return events, (cut_at if cut_at is not None else max(scanned, latest))
            if cut_at is not None:       # looked at MAX_SCANNED_PER_TURN: the rest next turn
                scanned = cut_at
                await self.turn()
                continue
            scanned = max(scanned, latest)
            with self._lock:   # nothing new since the scan: wait, registered in the same step
                if self.latest != latest or self.floor != floor:
                    continue
                future = loop.create_future()
                self._waiters.setdefault(prefix, set()).add(future)
            # A plain timer, not wait_for (a quarter of a wake-up's cost with 10,000 waiting).
            timer = loop.call_at(deadline, _expire, future)
            try:
                quiet_through = await future
            finally:
                timer.cancel()
                if future.cancelled() or future.result() is _EXPIRED:   # still registered
                    self._forget(prefix, future)
            if quiet_through is _EXPIRED:
                return [], scanned
            scanned = max(scanned, quiet_through)   # nothing under prefix up to there

    def _forget(self, prefix: str, future: asyncio.Future) -> None:
        with self._lock:
            futures = self._waiters.get(prefix)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._waiters[prefix]


_EXPIRED = object()


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(_EXPIRED)


class _Attached:
    __slots__ = ("hub",)

    def __init__(self, hub: WatchHub) -> None:
        self.hub = hub
        hub._attached += 1

    def __enter__(self) -> "_Attached":
        return self

    def __exit__(self, *exc: object) -> None:
        self.hub._attached -= 1


def _scan(segments: list[_Segment], last_length: int, prefix: str, after: int,
          max_events: int = MAX_EVENTS_PER_ANSWER,
          max_scanned: int = MAX_SCANNED_PER_TURN) -> tuple[list[dict[str, Any]], int | None]:
    """(the first ``max_events`` events under ``prefix`` with revision > ``after``,
    completed to the end of the last one's revision; the revision the answer is complete
    through if it was cut there, by ``max_events`` or after ``max_scanned`` events looked at,
    else None)."""
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
    cut_at: int | None = None
    examined, last_revision = 0, after
    for position in range(low, len(segments)):
        segment = segments[position]
        length = last_length if position == len(segments) - 1 else len(segment.events)
        start = bisect.bisect_right(segment.revisions, after, 0, length)
        revisions = segment.revisions
        for offset in range(start, length):
            revision = revisions[offset]
            if revision != last_revision:
                if cut_at is not None:
                    return found, cut_at
                if examined >= max_scanned:
                    return found, last_revision
                last_revision = revision
            examined += 1
            event = segment.events[offset]
            if _matches(event, prefix):
                found.append(event)
                if cut_at is None and len(found) >= max_events:
                    cut_at = revisions[offset]      # finish this revision, then stop
    return found, cut_at


def without_prev(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events as sent to a watcher that did not ask for previous values."""
    return [{k: v for k, v in e.items() if k != "prev_kv"} if "prev_kv" in e else e
            for e in events]


def _event_bytes(event: dict[str, Any]) -> int:
    prev = event.get("prev_kv")
    size = EVENT_OVERHEAD_BYTES + (value_bytes(prev["value"]) if prev else 0)
    if event["type"] == "put":
        kv = event["kv"]
        return size + len(kv["key"]) + value_bytes(kv["value"])
    return size + len(event["key"])


def _matches(event: dict[str, Any], prefix: str) -> bool:
    key = event["kv"]["key"] if event["type"] == "put" else event["key"]
    return key.startswith(prefix)
