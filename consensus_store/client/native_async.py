"""asyncio native transport (``tcp://`` and ``tls://`` for ``AsyncClient``): a reader task per
connection, one future per request, and the frames of one loop iteration written together.

Imports ``endpoints`` and ``native_common`` from ``client``; never the blocking ``native``.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from typing import Any

from consensus_store.client.endpoints import host_port
from consensus_store.client.native_common import (ANSWER_GRACE_S, CONNECT_TIMEOUT_S, RECV_BYTES,
                                                  ConnectGate, ProtocolError, check_auth_answer,
                                                  connect_error, parse_answer)
from consensus_store.errors import ConsensusStoreError, Timeout, Unavailable
from consensus_store.wire import AUTH_ID, FrameReader, decode, encode_auth, encode_request

log = logging.getLogger("consensus_store.client")


def _expire(future: asyncio.Future, endpoint: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(Timeout(f"{endpoint} did not answer within {timeout:g}s"))


class _AsyncLink:
    def __init__(self, endpoint: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 frames: FrameReader) -> None:
        self.endpoint = endpoint
        self.alive = True
        self.loop = asyncio.get_running_loop()
        self._writer = writer
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(AUTH_ID + 1)
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._reason = ""
        self._task = self.loop.create_task(self._read_loop(reader, frames))

    async def call(self, op: str, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
        if not self.alive:
            raise Unavailable(f"{self.endpoint}: {self._reason}")
        request_id = next(self._ids)
        data = encode_request(request_id, op, body)
        future = self.loop.create_future()
        self._pending[request_id] = future
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        timer = self.loop.call_later(timeout + ANSWER_GRACE_S, _expire, future, self.endpoint,
                                     timeout)
        try:
            return await future
        finally:
            timer.cancel()
            self._pending.pop(request_id, None)

    def _flush(self) -> None:
        """Everything queued during one loop iteration goes out in one write."""
        self._flush_scheduled = False
        out = self._out
        if out and self.alive:
            self._writer.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    async def _read_loop(self, reader: asyncio.StreamReader, frames: FrameReader) -> None:
        pending = self._pending
        reason = "connection closed by the node"
        try:
            while True:
                data = await reader.read(RECV_BYTES)
                if not data:
                    break
                frames.feed(data)
                while (frame := frames.next()) is not None:
                    request_id, status, body = parse_answer(decode(frame))
                    future = pending.pop(request_id, None)
                    if future is not None:
                        if not future.done():
                            future.set_result((status, body))
                    elif request_id is None:
                        raise ProtocolError(f"node error {status}: {body!r:.200}")
        except asyncio.CancelledError:
            reason = "client closed"
            raise
        except (OSError, ValueError, ProtocolError) as exc:
            reason = f"{exc.__class__.__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - never leave callers waiting on a dead reader
            log.exception("native reader for %s failed", self.endpoint)
            reason = f"{exc.__class__.__name__}: {exc}"
        finally:
            self._fail(reason)

    def _fail(self, reason: str) -> None:
        if self.alive:
            self.alive = False
            self._reason = reason
            self._writer.close()
        pending = self._pending
        while pending:
            _, future = pending.popitem()
            if not future.done():
                future.set_exception(Unavailable(f"{self.endpoint}: {self._reason}"))

    async def aclose(self) -> None:
        self._fail("client closed")
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing anyway
            pass
        try:
            await self._writer.wait_closed()
        except (OSError, asyncio.CancelledError):
            pass


class AsyncNativeTransport:
    """asyncio native transport: one pipelined connection per endpoint, on one event loop.

    Connections belong to the loop that opened them; used from another loop, the transport
    starts afresh there.
    """

    def __init__(self, token: str | None, timeout: float | None = None, *,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._token = token
        self._ssl = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[str, _AsyncLink] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._gates: dict[str, ConnectGate] = {}

    async def send(self, endpoint: str, op: str, body: dict[str, Any],
                   timeout: float) -> tuple[int, Any]:
        link = self._links.get(endpoint)
        if link is None or not link.alive or link.loop is not asyncio.get_running_loop():
            deadline = time.monotonic() + timeout
            link = await self._connected(endpoint, timeout)
            timeout = max(0.0, deadline - time.monotonic())
        return await link.call(op, body, timeout)

    async def _connected(self, endpoint: str, timeout: float) -> _AsyncLink:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:             # first use, or a new event loop
            self._loop, self._links, self._locks = loop, {}, {}
        lock = self._locks.setdefault(endpoint, asyncio.Lock())
        gate = self._gates.setdefault(endpoint, ConnectGate())
        started = time.monotonic()
        async with lock:
            link = self._links.get(endpoint)
            if link is not None and link.alive:
                return link
            error = gate.recent_failure(started)
            if error is not None:
                raise error
            try:
                link = await self._open(endpoint, min(timeout, CONNECT_TIMEOUT_S))
            except ConsensusStoreError as exc:
                gate.record(exc)
                raise
            self._links[endpoint] = link
            return link

    async def _open(self, endpoint: str, timeout: float) -> _AsyncLink:
        host, port = host_port(endpoint)
        tls = {} if self._ssl is None else {"ssl": self._ssl, "server_hostname": host}
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, **tls),
                                                    max(0.05, timeout))
        except asyncio.TimeoutError:
            raise Timeout(f"{endpoint}: no connection within {timeout:g}s") from None
        except OSError as exc:
            raise connect_error(endpoint, exc) from None
        try:
            writer.write(encode_auth(self._token))
            frames = FrameReader()
            message = await asyncio.wait_for(_first_frame(reader, frames), max(0.05, timeout))
            check_auth_answer(endpoint, message)
            return _AsyncLink(endpoint, reader, writer, frames)
        except BaseException as exc:
            writer.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise Timeout(f"{endpoint}: no answer to auth within {timeout:g}s") from None
            if isinstance(exc, (OSError, ValueError, ProtocolError)):
                raise connect_error(endpoint, exc) from None
            raise

    async def aclose(self) -> None:
        links, self._links = list(self._links.values()), {}
        running = asyncio.get_running_loop()
        for link in links:
            if link.loop is running:
                await link.aclose()
            else:
                link.alive = False


async def _first_frame(reader: asyncio.StreamReader, frames: FrameReader) -> Any:
    while (frame := frames.next()) is None:
        data = await reader.read(65536)
        if not data:
            raise Unavailable("connection closed during auth")
        frames.feed(data)
    return decode(frame)
