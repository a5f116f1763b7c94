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
import os
from typing import Any, Callable

from pysyncobj.poller import POLL_EVENT_TYPE, Poller

READ, WRITE = POLL_EVENT_TYPE.READ, POLL_EVENT_TYPE.WRITE
EventCallback = Callable[[int, int], None]
# (pysyncobj's callback, fd, event bit): runs it, handles its errors, asks for a tick
Dispatch = Callable[[EventCallback, int, int], None]


class LoopPoller(Poller):
    """The loop watches a duplicate of each descriptor: pysyncobj closes a socket *before* it
    unsubscribes it, and asyncio's selector cannot then drop a closed descriptor's half of a
    read+write registration (EBADF, and the stale half keeps firing).  The duplicate keeps the
    socket open until ``unsubscribe`` has removed it from the loop and closed it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, dispatch: Dispatch) -> None:
        self._loop = loop
        self._dispatch = dispatch
        # pysyncobj's fd -> (the duplicate the loop watches, reading callback or None,
        # writing callback or None): re-registering what is registered already is skipped
        # (pysyncobj re-subscribes after every write event).
        self._subscribed: dict[int, tuple[int, Any, Any]] = {}

    def subscribe(self, descr: int, callback: EventCallback, eventMask: int) -> None:
        watched, reading, writing = self._subscribed.get(descr, (-1, None, None))
        if watched < 0:
            watched = os.dup(descr)
        loop = self._loop
        if eventMask & READ:
            if reading != callback:
                loop.add_reader(watched, self._dispatch, callback, descr, READ)
            reading = callback
        elif reading is not None:
            loop.remove_reader(watched)
            reading = None
        if eventMask & WRITE:
            if writing != callback:
                loop.add_writer(watched, self._dispatch, callback, descr, WRITE)
            writing = callback
        elif writing is not None:
            loop.remove_writer(watched)
            writing = None
        # ERROR alone needs no registration: the loop reports an error as readable/writable,
        # and pysyncobj's read or send then sees it and disconnects.
        self._subscribed[descr] = (watched, reading, writing)

    def unsubscribe(self, descr: int) -> None:
        watched, reading, writing = self._subscribed.pop(descr, (-1, None, None))
        if watched < 0:
            return
        if reading is not None:
            self._loop.remove_reader(watched)
        if writing is not None:
            self._loop.remove_writer(watched)
        os.close(watched)

    def poll(self, timeout: float) -> None:
        """Nothing: the loop polls, and the runner ticks (runner.py)."""

    def close(self) -> None:
        for descr in list(self._subscribed):
            self.unsubscribe(descr)
