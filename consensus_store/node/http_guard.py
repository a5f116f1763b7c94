"""A header deadline for aiohttp's server, which has none (a slowloris sending one header byte
every few seconds would hold its connection for ever).

``GuardedHttp`` stands between the transport and aiohttp's ``RequestHandler`` and passes every
event on.  A timer starts when the connection opens (its first request head is due, as with
nginx's ``client_header_timeout``) and whenever bytes arrive while the handler waits for a
request (a later head has begun); if the handler still waits ``header_timeout_s`` later, the
connection is closed.  The timer stops once aiohttp has parsed the head.  The parsing stays
aiohttp's.

The other HTTP timeouts: between requests, aiohttp's own keep-alive timeout (``idle_timeout_s``,
which counts from the last answer, however many bytes trickle in); for a body, ``api._body``
reads under ``body_timeout_s``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("consensus_store.api")


def heads_parsed(handler: RequestHandler) -> int:
    """How many request heads aiohttp's handler has parsed on this connection."""
    return handler._request_count


def waiting_for_request(handler: RequestHandler) -> bool:
    """True while aiohttp's handler waits for a request head: none parsed yet, or it waits for
    the next (the state its own keep-alive check uses: ``_waiter`` is the future
    ``RequestHandler.start`` awaits)."""
    waiter = handler._waiter
    return heads_parsed(handler) == 0 or (waiter is not None and not waiter.done())


class GuardedHttp(asyncio.Protocol):
    """One HTTP connection: aiohttp's handler behind a header deadline."""

    __slots__ = ("handler", "header_timeout_s", "loop", "deadline", "heads")

    def __init__(self, handler: RequestHandler, header_timeout_s: float) -> None:
        self.handler = handler
        self.header_timeout_s = header_timeout_s
        self.loop = asyncio.get_running_loop()
        self.deadline: asyncio.TimerHandle | None = None
        self.heads = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler.connection_made(transport)
        self.deadline = self.loop.call_later(self.header_timeout_s, self._expired)

    def data_received(self, data: bytes) -> None:
        handler = self.handler
        handler.data_received(data)
        heads = heads_parsed(handler)
        if heads > self.heads:                  # a head is in
            self.heads = heads
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None
        elif self.deadline is None and waiting_for_request(handler):
            # part of a head (not of a body): it must complete in time
            self.deadline = self.loop.call_later(self.header_timeout_s, self._expired)

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
