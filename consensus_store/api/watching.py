"""Watches: ``client.watch(prefix)`` yields every change under a prefix, in revision order,
each once, across node failures; ``wait_for_change`` is the recipes' building block.

A watch is a cursor (the last revision it has passed) and a loop of long-polls (op ``watch``)
through the requester: HTTP or native, with its failover.  When the node it was polling dies
or the connection drops, the next poll goes to another node with the same cursor, so nothing
is lost or repeated (every replica holds the same events at the same revisions).  The node says
up to which revision each answer is complete (``through``): the cursor moves past entries that
did not concern the prefix, so a quiet prefix does not fall behind the history kept.  A cursor
older than a node's history gets ``Compacted`` (with ``oldest_revision``): re-read, then watch
from the read's revision.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, AsyncIterator, Iterator

from consensus_store.api.requester import AsyncRequester, Requester
from consensus_store.errors import Compacted, InvalidRequest
from consensus_store.models import WatchEvent

POLL_WAIT_S = 25.0        # one long-poll; well under the node's 60 s bound
POLL_SLACK_S = 5.0        # beyond the wait, for the answer to come back


def wait_for_change(api: Requester, prefix: str, after_revision: int, wait: float,
                    floor_hint: int = 0) -> int:
    """Block until something under ``prefix`` changed after ``after_revision`` (or ``wait``
    passed); returns the revision to wait from next time.  A compacted history counts as a
    change: callers re-read the state after every return anyway."""
    try:
        result = api.request("watch", change_poll(prefix, after_revision, wait), wait + 5.0)
    except Compacted:
        return max(after_revision, floor_hint)
    return wait_from(result, after_revision)


def change_poll(prefix: str, after_revision: int, wait: float) -> dict[str, Any]:
    """The body of ``wait_for_change``'s long-poll (blocking and asyncio)."""
    return {"prefix": prefix, "after_revision": after_revision, "wait": wait}


def wait_from(result: dict[str, Any], after_revision: int) -> int:
    """The revision a ``wait_for_change`` waits from next, after this answer."""
    through = result.get("through")
    if type(through) is int:          # complete up to there: wait from there next time
        return max(after_revision, through)
    events = result["events"]
    if not events:
        return after_revision
    last = events[-1]
    return last["kv"]["mod_revision"] if last["type"] == "put" else last["revision"]


class WatchCursor:
    """What a watch knows, free of I/O (shared by the blocking and the asyncio watch)."""

    def __init__(self, prefix: str, start_revision: int | None, prev_value: bool,
                 wait: float) -> None:
        if not isinstance(prefix, str):
            raise InvalidRequest("'prefix' must be a string")
        if start_revision is not None and (type(start_revision) is not int
                                           or start_revision < 1):
            raise InvalidRequest("'start_revision' must be a positive integer")
        self.prefix = prefix
        self.prev_value = prev_value
        self.wait = wait
        # Events with revision > after are still to come (start_revision is inclusive, as etcd's).
        self.after: int | None = None if start_revision is None else start_revision - 1
        self.pending: deque[WatchEvent] = deque()

    def start_read(self) -> dict[str, Any]:
        """Without a start revision, a watch starts after a linearizable read: every write
        acknowledged before ``watch()`` was called is before it."""
        return {"prefix": self.prefix, "limit": 1, "consistency": "linearizable"}

    def started(self, read: dict[str, Any]) -> None:
        self.after = int(read["read_index"])

    def poll(self, wait: float) -> dict[str, Any]:
        return {"prefix": self.prefix, "after_revision": self.after, "wait": wait,
                "prev_kv": self.prev_value}

    def wait_within(self, deadline: float | None) -> float | None:
        """The next poll's wait (None: the deadline passed)."""
        if deadline is None:
            return self.wait
        remaining = deadline - time.monotonic()
        return None if remaining <= 0 else min(self.wait, remaining)

    def take(self, answer: dict[str, Any]) -> None:
        """Queue the new events of one answer and move the cursor past what it covered."""
        after = self.after or 0
        for body in answer["events"]:
            event = WatchEvent.from_json(body)
            if event.revision > after and (not self.pending
                                           or event.revision >= self.pending[-1].revision):
                self.pending.append(event)
        newest = self.pending[-1].revision if self.pending else after
        through = answer.get("through")
        # A node that predates "through" answers without it: then only what it sent counts.
        self.after = max(after, newest, through if type(through) is int else 0)


class Watch(Iterator[WatchEvent]):
    """A blocking watch: ``for event in client.watch("config/"): ...``; ``close()`` (or leave
    a ``with`` block) to stop.  Not thread-safe: one consumer."""

    def __init__(self, api: Requester, prefix: str, start_revision: int | None = None, *,
                 prev_value: bool = False, wait: float = POLL_WAIT_S) -> None:
        self._api = api
        self._cursor = WatchCursor(prefix, start_revision, prev_value, wait)
        self._closed = False
        if self._cursor.after is None:
            self._cursor.started(api.request("range", self._cursor.start_read(), None))

    @property
    def revision(self) -> int:
        """Every change up to this revision has been yielded or is queued."""
        return self._cursor.after or 0

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> WatchEvent:
        event = self.get()
        if event is None:
            raise StopIteration
        return event

    def get(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event, waiting at most ``timeout`` (None: until one comes or ``close``);
        None if none came."""
        cursor = self._cursor
        deadline = None if timeout is None else time.monotonic() + timeout
        while not cursor.pending:
            wait = cursor.wait_within(deadline)
            if self._closed or wait is None:
                return None
            cursor.take(self._api.request("watch", cursor.poll(wait), wait + POLL_SLACK_S))
        return cursor.pending.popleft()

    def close(self) -> None:
        """Stop after the events already received (a poll in progress still finishes)."""
        self._closed = True

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncWatch(AsyncIterator[WatchEvent]):
    """An asyncio watch: ``async for event in client.watch("config/"): ...``."""

    def __init__(self, api: AsyncRequester, prefix: str, start_revision: int | None = None, *,
                 prev_value: bool = False, wait: float = POLL_WAIT_S) -> None:
        self._api = api
        self._cursor = WatchCursor(prefix, start_revision, prev_value, wait)
        self._closed = False

    @property
    def revision(self) -> int:
        return self._cursor.after or 0

    async def start(self) -> "AsyncWatch":
        """Fix the start now (else at the first ``__anext__``), e.g. before writing."""
        if self._cursor.after is None:
            self._cursor.started(await self._api.request("range", self._cursor.start_read(),
                                                         None))
        return self

    def __aiter__(self) -> "AsyncWatch":
        return self

    async def __anext__(self) -> WatchEvent:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def get(self, timeout: float | None = None) -> WatchEvent | None:
        """As ``Watch.get``."""
        cursor = self._cursor
        deadline = None if timeout is None else time.monotonic() + timeout
        await self.start()
        while not cursor.pending:
            wait = cursor.wait_within(deadline)
            if self._closed or wait is None:
                return None
            cursor.take(await self._api.request("watch", cursor.poll(wait),
                                                wait + POLL_SLACK_S))
        return cursor.pending.popleft()

    async def aclose(self) -> None:
        self._closed = True

    def close(self) -> None:
        self._closed = True


class WatchApi:
    """``watch`` for blocking requesters (``Client``, the embedded ``Node``)."""

    def watch(self: Requester, prefix: str = "", start_revision: int | None = None, *,
              prev_value: bool = False) -> Watch:
        """Every put and delete under ``prefix`` (``WatchEvent``), in revision order, each once,
        from ``start_revision`` (inclusive; None: changes after now).  Survives the death of
        the node it polls (resumes on another from the last revision seen); raises
        ``Compacted`` when ``start_revision`` is older than the history a node keeps."""
        return Watch(self, prefix, start_revision, prev_value=prev_value)


class AsyncWatchApi:
    """``watch`` for ``AsyncClient``."""

    def watch(self: AsyncRequester, prefix: str = "", start_revision: int | None = None, *,
              prev_value: bool = False) -> AsyncWatch:
        """As ``Client.watch``, with ``async for``."""
        return AsyncWatch(self, prefix, start_revision, prev_value=prev_value)
