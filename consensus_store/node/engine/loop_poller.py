"""pysyncobj's poller interface over the node's asyncio loop, so Raft's sockets are served by
the same loop (and thread) as the clients' (docs/pysyncobj.md, "Threads and ticks").

pysyncobj's TcpServer and TcpConnection call ``subscribe(fd, callback, mask)`` and
``unsubscribe(fd)``; here they become ``loop.add_reader`` / ``add_writer`` (level-triggered,
like pysyncobj's own poll), and each event calls ``callback(fd, POLL_EVENT_TYPE bit)`` through
the runner's ``dispatch``, which asks for a tick afterwards.  ``poll`` does nothing: the loop
waits for events, and the runner schedules ticks itself.  Loop thread only.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from pysyncobj.poller import POLL_EVENT_TYPE, Poller

READ, WRITE = POLL_EVENT_TYPE.READ, POLL_EVENT_TYPE.WRITE
EventCallback = Callable[[int, int], None]
# (pysyncobj's callback, fd, event bit): runs it, handles its errors, asks for a tick
Dispatch = Callable[[EventCallback, int, int], None]


class LoopPoller(Poller):
    def __init__(self, loop: asyncio.AbstractEventLoop, dispatch: Dispatch) -> None:
        self._loop = loop
        self._dispatch = dispatch
        # fd -> (reading callback or None, writing callback or None), to skip re-registering
        # what is registered already (pysyncobj re-subscribes after every write event).
        self._subscribed: dict[int, tuple[Any, Any]] = {}

    def subscribe(self, descr: int, callback: EventCallback, eventMask: int) -> None:
        reading, writing = self._subscribed.get(descr, (None, None))
        loop = self._loop
        if eventMask & READ:
            if reading != callback:
                loop.add_reader(descr, self._dispatch, callback, descr, READ)
            reading = callback
        elif reading is not None:
            loop.remove_reader(descr)
            reading = None
        if eventMask & WRITE:
            if writing != callback:
                loop.add_writer(descr, self._dispatch, callback, descr, WRITE)
            writing = callback
        elif writing is not None:
            loop.remove_writer(descr)
            writing = None
        # ERROR alone needs no registration: the loop reports an error as readable/writable,
        # and pysyncobj's read or send then sees it and disconnects.
        self._subscribed[descr] = (reading, writing)

    def unsubscribe(self, descr: int) -> None:
        reading, writing = self._subscribed.pop(descr, (None, None))
        if reading is not None:
            self._loop.remove_reader(descr)
        if writing is not None:
            self._loop.remove_writer(descr)

    def poll(self, timeout: float) -> None:
        """Nothing: the loop polls, and the runner ticks (runner.py)."""

    def close(self) -> None:
        for descr in list(self._subscribed):
            self.unsubscribe(descr)
