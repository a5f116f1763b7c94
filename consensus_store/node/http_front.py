"""The HTTP client port's front end: uvicorn's httptools protocol serving a raw ASGI app whose
answers are ``api.respond``'s (routed from the op table).

No framework sits between the parser and ``respond``: the ASGI app reads the Authorization
header and the body and sends the JSON answer with its length.  With the same per-request
work it took ~15 % less CPU per request than aiohttp's low-level server and ~35 % less than
aiohttp's ``web.Application`` (tools/http_front_cost.py, on a 2-core VM).

``HttpFront.connection`` makes one connection's protocol for ``client_ports.ClientPort`` (which
caps connections, keeps the descriptor reserve and does TLS).  Each connection is
``http_guard.GuardedHttpTools``: a header deadline and a head size cap, which httptools lacks.
Between requests, uvicorn's keep-alive timeout (``idle_timeout_s``); a body must arrive within
``body_timeout_s`` (else 400) and fit in ``max_request_bytes`` (else 413); after either the
connection closes.
"""
from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import uvicorn
from uvicorn.server import ServerState

from consensus_store.node.api import BodyTooLarge, body_timeout, respond
from consensus_store.node.http_guard import MAX_HEAD_BYTES, GuardedHttpTools
from consensus_store.node.watch_stream import WATCH_STREAM_PATH, serve_watch_stream
from consensus_store.node.metrics import METRICS_PATH, metrics_answer, metrics_for
from consensus_store.node.snapshot_export import send_stream

if TYPE_CHECKING:
    from consensus_store.node.service import KVService

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_CLOSE = (b"connection", b"close")
LINGER_S = 2.0      # how long a refused body is read and dropped before the connection closes


def asgi_app(service: "KVService") -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """The raw ASGI app answering every op of the table (HTTP only: no lifespan, no
    websockets)."""
    limits = service.config.limits
    requests = metrics_for(service).requests

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == WATCH_STREAM_PATH:     # a long answer of JSON lines (watch_stream.py)
            return await serve_watch_stream(service, scope, receive, send)
        authorization = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value

        async def read_body() -> bytes:
            if length is not None and length.isdigit() and int(length) > limits.max_request_bytes:
                raise BodyTooLarge("request body is larger than the node accepts")
            if _body_is_in(receive):             # the usual case: no timer (~5 µs) needed
                return await _read_body(receive, limits.max_request_bytes)
            try:
                async with asyncio.timeout(limits.body_timeout_s):
                    return await _read_body(receive, limits.max_request_bytes)
            except TimeoutError:
                raise body_timeout(limits.body_timeout_s) from None

        if scope["path"] == METRICS_PATH:
            answer = await metrics_answer(service, scope["method"], authorization)
        else:
            started = perf_counter()
            answer = await respond(service, scope["method"], scope["path"], authorization,
                                   read_body)
            requests.observe_route(scope["method"], scope["path"], answer.status,
                                   perf_counter() - started)
        if answer.stream is not None:        # the snapshot (snapshot_export.py): chunked
            await send_stream(send, answer.stream)
            return
        headers = [(b"content-type", answer.content_type),
                   (b"content-length", b"%d" % len(answer.body))]
        if answer.allow is not None:
            headers.append((b"allow", answer.allow.encode()))
        if answer.close:
            headers.append(_CLOSE)
            if answer.status == BodyTooLarge.http_status:
                await _discard_body(receive)
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
    return app


def _body_is_in(receive: Receive) -> bool:
    """True when the whole body has arrived: ``receive`` is bound to uvicorn's request cycle,
    whose ``more_body`` turns False once the parser saw the end of the message (any other
    receive, or a uvicorn without that field, gets the timer)."""
    return getattr(getattr(receive, "__self__", None), "more_body", True) is False


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()        # the whole body came with the head (the usual case)
    body = message.get("body", b"")
    if message.get("more_body", False):
        buffer = bytearray(body)
        while message.get("more_body", False):
            if len(buffer) > limit:
                break
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BodyTooLarge("the client left before sending its body")  # to no one
            buffer += message.get("body", b"")
        body = bytes(buffer)
    if len(body) > limit:
        raise BodyTooLarge("request body is larger than the node accepts")
    return body


async def _discard_body(receive: Receive) -> None:
    """Read what is left of a refused body for a moment, so that closing the connection does
    not reset it before the client reads the answer (aiohttp's "lingering close")."""
    try:
        async with asyncio.timeout(LINGER_S):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return
    except TimeoutError:
        pass


class HttpFront:
    """The HTTP API's connections: ``connection`` is the protocol factory for ``ClientPort``;
    ``close`` ends them (running requests get ``shutdown_s`` to answer)."""

    def __init__(self, service: "KVService", header_timeout_s: float | None = None,
                 max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        limits = service.config.limits
        self.header_timeout_s = (limits.header_timeout_s if header_timeout_s is None
                                 else header_timeout_s)
        self.max_head_bytes = max_head_bytes
        # No logging config, no proxy headers, no websockets, no lifespan: the node owns those.
        # (uvicorn types the keep-alive as int; a float works: it goes to call_later.)
        idle: Any = limits.idle_timeout_s
        self.config = uvicorn.Config(asgi_app(service), http="httptools", ws="none",
                                     lifespan="off", interface="asgi3", log_config=None,
                                     access_log=False, proxy_headers=False,
                                     server_header=False, date_header=False,
                                     timeout_keep_alive=idle)
        self.config.load()
        self.state = ServerState()
        _quiet_bad_requests()

    def connection(self) -> asyncio.Protocol:
        return GuardedHttpTools(config=self.config, server_state=self.state, app_state={},
                                header_timeout_s=self.header_timeout_s,
                                max_head_bytes=self.max_head_bytes)

    async def close(self, shutdown_s: float = 3.0) -> None:
        for connection in list(self.state.connections):
            connection.shutdown()         # idle ones close now, busy ones after their answer
        tasks = list(self.state.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=shutdown_s)
        for task in self.state.tasks:
            task.cancel()
        for connection in list(self.state.connections):
            if connection.transport is not None:
                connection.transport.abort()


class _BadRequestFilter(logging.Filter):
    """uvicorn logs a warning for each request it cannot parse: a log flood anyone can cause.
    One debug line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or "Invalid HTTP request" not in record.getMessage():
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_BAD_REQUEST_FILTER = _BadRequestFilter()


def _quiet_bad_requests() -> None:
    logging.getLogger("uvicorn.error").addFilter(_BAD_REQUEST_FILTER)   # once: a set-like add
