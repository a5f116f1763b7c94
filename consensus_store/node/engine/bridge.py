"""Hand work from the raft thread to the asyncio loop, one wake-up per batch.

``call_soon_threadsafe`` writes to the loop's self-pipe on every call; at tens of thousands of
completions a second that syscall dominates.  ``post`` queues the call and schedules a single
drain for everything queued until the loop gets to it.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Any, Callable


class LoopBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = collections.deque()
        self._scheduled = False

    def post(self, function: Callable[..., None], *args: Any) -> None:
        """Run ``function(*args)`` on the loop soon (any thread)."""
        self._calls.append((function, args))
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                pass  # loop closed: the node is stopping

    def _drain(self) -> None:
        self._scheduled = False   # first, so a post racing with us schedules another drain
        calls = self._calls
        while calls:
            function, args = calls.popleft()
            function(*args)
