"""uvicorn's httptools protocol with what it lacks: a header deadline (a slowloris sending one
header byte every few seconds would otherwise hold its connection for ever) and a head size cap
(llhttp has none); and ``OneWritePerAnswer``, so an answer's head and body leave in one write.

The other HTTP timeouts: between requests, uvicorn's keep-alive timeout (``idle_timeout_s``,
which counts from the last answer); for a body, ``http_front`` reads under ``body_timeout_s``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("consensus_store.api")
# A request line and headers (aiohttp, which the node used before, allowed about this much).
MAX_HEAD_BYTES = 64 * 1024
_HEAD_TOO_LARGE_BODY = (b'{"error": "payload_too_large", "message": "request head over %d bytes"}'
                        % MAX_HEAD_BYTES)
HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json"
                  b"\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                  % (len(_HEAD_TOO_LARGE_BODY), _HEAD_TOO_LARGE_BODY))


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a head size cap (llhttp bounds
    neither).  The deadline runs from the connection's start and from the first byte of each
    later head, and stops when the head is parsed.  A head still incomplete after more than
    ``max_head_bytes`` arrived gets 431 and the connection closes (so a head never holds more
    than that plus one socket read).  Between requests uvicorn's keep-alive timeout applies."""

    def __init__(self, *args: Any, header_timeout_s: float, max_head_bytes: int,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.max_head_bytes = max_head_bytes
        self.deadline: asyncio.TimerHandle | None = None
        self.in_head = False        # a head has begun and is not parsed yet
        self.idle = True            # no request running: the next bytes start a head
        self.head_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.deadline = self.loop.call_later(self.header_timeout_s, self._expired)

    def data_received(self, data: bytes) -> None:
        if self.in_head or self.idle:
            self.head_bytes += len(data)
        super().data_received(data)
        if not (self.in_head or self.idle) or self.transport.is_closing():
            return
        if self.head_bytes > self.max_head_bytes:     # and the head is still not complete
            log.debug("closing an HTTP connection: request head over %d bytes",
                      self.max_head_bytes)
            self.transport.write(HEAD_TOO_LARGE)
            self.transport.close()
        elif self.deadline is None:
            self.deadline = self.loop.call_later(self.header_timeout_s, self._expired)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.idle = True, False

    def on_headers_complete(self) -> None:
        self.in_head, self.head_bytes = False, 0
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        super().on_headers_complete()
        cycle = self.cycle     # the new request's (HEAD answers have no body write to wait for)
        if (cycle is not None and cycle.transport is self.transport
                and self.scope["method"] != "HEAD"):
            cycle.transport = OneWritePerAnswer(self.transport)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.idle = not self.in_head and not self.pipeline

    def _expired(self) -> None:
        self.deadline = None
        if (self.in_head or self.idle) and not self.transport.is_closing():
            log.debug("closing an HTTP connection: no complete request head within %gs",
                      self.header_timeout_s)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        super().connection_lost(exc)


class OneWritePerAnswer:
    """What one request's uvicorn cycle writes through: an answer's head is held until its body
    comes, so both go out in one write (one system call, one segment) instead of two.  uvicorn
    writes the body (maybe empty) right after the head of every answer but HEAD's, and closing
    writes what is held."""

    __slots__ = ("transport", "held")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.held is not None:
            data, self.held = self.held + data, None
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100 "):
            self.held = data          # a final answer's head: its body follows at once
            return
        self.transport.write(data)

    def flush(self) -> None:
        if self.held is not None:
            data, self.held = self.held, None
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()
