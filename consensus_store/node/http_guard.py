"""A header deadline for aiohttp's server, which has none (a slowloris sending one header byte
every few seconds would hold its connection for ever).

``GuardedHttp`` stands between the transport and aiohttp's ``RequestHandler`` and passes every
event on.  When bytes arrive while the handler is still waiting for a request, a request's head
is incomplete: a timer starts, and if the handler is still waiting ``header_timeout_s`` later the
connection is closed.  It stops once aiohttp has parsed the head.  The parsing stays aiohttp's.

The other HTTP timeouts: between requests, aiohttp's own keep-alive timeout (``idle_timeout_s``,
which counts from the connection's start or the last answer, however many bytes trickle in);
for a body, ``api._body`` reads under ``body_timeout_s``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("consensus_store.api")


def waiting_for_request(handler: RequestHandler) -> bool:
    """True while aiohttp's handler waits for the next request's head (the state its own
    keep-alive check uses: ``_waiter`` is the future ``RequestHandler.start`` awaits)."""
    waiter = handler._waiter
    return waiter is not None and not waiter.done()


class GuardedHttp(asyncio.Protocol):
    """One HTTP connection: aiohttp's handler behind a header deadline."""

    __slots__ = ("handler", "header_timeout_s", "loop", "deadline")

    def __init__(self, handler: RequestHandler, header_timeout_s: float) -> None:
        self.handler = handler
        self.header_timeout_s = header_timeout_s
        self.loop = asyncio.get_running_loop()
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        handler = self.handler
        handler.data_received(data)
        if waiting_for_request(handler):        # part of a head: it must complete in time
            if self.deadline is None:
                self.deadline = self.loop.call_later(self.header_timeout_s, self._expired)
        elif self.deadline is not None:         # the head is in
            self.deadline.cancel()
            self.deadline = None

    def _expired(self) -> None:
        self.deadline = None
        if waiting_for_request(self.handler):
            log.debug("closing an HTTP connection: no complete request head within %gs",
                      self.header_timeout_s)
            self.handler.force_close()

    def eof_received(self) -> Any:
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.handler.connection_lost(exc)
