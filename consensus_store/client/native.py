"""Native-protocol transports (``tcp://host:port``): pipelined JSON frames, see ``wire``.

``NativeTransport`` (blocking) keeps one TCP connection per endpoint, shared by every thread of
the client.  A caller writes its frame and waits on its own lock; one reader thread per
connection hands each answer to the caller with the same id, so 64 threads calling ``put`` at once
have 64 requests in flight on one connection.  Frames queued while another thread is writing go
out together in one ``sendall`` (the writer that finds the queue non-empty sends it all).

``AsyncNativeTransport`` is the same over asyncio streams: a reader task per connection, one
future per request, and frames written in one batch per loop iteration.

A connection that fails (EOF, reset, garbage) is dropped and every request in flight on it fails
with ``Unavailable`` (retryable: ``core`` retries writes with the same ids); the next request
reconnects.  A caller that waits longer than its timeout gets ``Timeout``; a late answer is
dropped.

``tls://`` endpoints are the same over TLS (the node's certificate and host name verified with
the client's ``ssl.SSLContext``; a certificate it does not trust is ``TlsError``, not retried).
The blocking transport runs TLS through ``_TlsSocket``: OpenSSL objects must not be used by two
threads at once, and its reader thread and writers would.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
import threading
import time
from typing import Any

from consensus_store.client.endpoints import host_port
from consensus_store.wire import (AUTH_ID, FrameReader, decode, encode_auth,
                                         encode_request)
from consensus_store.errors import (ConsensusStoreError, Timeout, TlsError, Unavailable,
                                    error_from_json)
from consensus_store.tls import certificate_problem

log = logging.getLogger("consensus_store.client")

CONNECT_TIMEOUT_S = 2.0     # at most this much of a request's time goes to (re)connecting
SEND_TIMEOUT_S = 10.0       # a node that accepts no bytes for this long is given up
ANSWER_GRACE_S = 0.5        # the node answers by the request's "timeout"; allow for the trip
_RECV_BYTES = 256 * 1024


class ProtocolError(Exception):
    """The node sent something the protocol does not allow; the connection is dropped."""


def _answer(message: Any) -> tuple[Any, int, Any]:
    """(id, status, body) of an answer frame."""
    if not isinstance(message, dict) or type(message.get("status")) is not int:
        raise ProtocolError(f"not an answer: {message!r:.200}")
    request_id = message.get("id")
    if request_id is not None and type(request_id) is not int:
        raise ProtocolError(f"answer id {request_id!r:.50} is not an integer")
    return request_id, message["status"], message.get("body")


def _auth_result(endpoint: str, message: Any) -> None:
    request_id, status, body = _answer(message)
    if request_id != AUTH_ID and request_id is not None:
        raise ProtocolError(f"expected the answer to auth, got id {request_id}")
    if status != 200:
        raise error_from_json(status, body)


class _ConnectGate:
    """One connection attempt at a time per endpoint; callers that queued behind a failed
    attempt fail at once with its error instead of trying again one by one."""

    def __init__(self) -> None:
        self.failed_at = -1.0
        self.failure: tuple[type[ConsensusStoreError], str] | None = None

    def recent_failure(self, started: float) -> ConsensusStoreError | None:
        if self.failure is not None and self.failed_at >= started:
            cls, message = self.failure
            return cls(message)
        return None

    def record(self, error: ConsensusStoreError) -> None:
        self.failed_at = time.monotonic()
        self.failure = (type(error), error.message)


# ---- blocking ---------------------------------------------------------------------------------
class _Waiter:
    __slots__ = ("lock", "status", "body", "error")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.status = 0
        self.body: Any = None
        self.error: ConsensusStoreError | None = None


class _Link:
    """One authenticated connection, its reader thread and the requests in flight on it."""

    def __init__(self, endpoint: str, sock: socket.socket, frames: FrameReader) -> None:
        self.endpoint = endpoint
        self.alive = True
        self._sock = sock
        self._frames = frames
        self._pending: dict[int, _Waiter] = {}
        self._ids = itertools.count(AUTH_ID + 1)
        self._out: list[bytes] = []
        self._out_lock = threading.Lock()
        self._writing = False
        self._reader_done = False       # then the socket is closed by whoever is last
        self._reason = ""
        self._thread = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"consensus-store-native-{endpoint}")
        self._thread.start()

    def call(self, op: str, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
        request_id = next(self._ids)
        data = encode_request(request_id, op, body)
        waiter = _Waiter()
        self._pending[request_id] = waiter
        if self.alive:
            self._write(data)
        elif self._pending.pop(request_id, None) is not None:   # died before we registered
            raise Unavailable(f"{self.endpoint}: {self._reason}")
        if not waiter.lock.acquire(True, timeout + ANSWER_GRACE_S):
            self._pending.pop(request_id, None)
            raise Timeout(f"{self.endpoint} did not answer within {timeout:g}s")
        if waiter.error is not None:
            raise waiter.error
        return waiter.status, waiter.body

    def _write(self, data: bytes) -> None:
        """Queue ``data``; the first thread to find no writer active sends the whole queue."""
        out = self._out
        with self._out_lock:
            out.append(data)
            if self._writing:
                return
            self._writing = True
        try:
            while True:
                with self._out_lock:
                    if not out:                  # checked and released in one step: a frame
                        self._writing = False    # queued after this finds no writer
                        release = self._reader_done
                        break
                    chunk = out[0] if len(out) == 1 else b"".join(out)
                    out.clear()
                self._sock.sendall(chunk)
        except OSError as exc:
            self.close(f"send failed: {exc.__class__.__name__}: {exc}")
            with self._out_lock:
                self._writing = False
                out.clear()
                release = self._reader_done
        if release:
            self._sock.close()

    def _release_socket(self) -> None:
        """The reader is done: close the socket unless a writer still uses it (it then does)."""
        with self._out_lock:
            self._reader_done = True
            if self._writing:
                return
        self._sock.close()

    def _read_loop(self) -> None:
        sock, frames, pending = self._sock, self._frames, self._pending
        reason = "connection closed by the node"
        try:
            while self.alive:
                try:
                    data = sock.recv(_RECV_BYTES)
                except socket.timeout:
                    continue
                if not data:
                    break
                frames.feed(data)
                while (frame := frames.next()) is not None:
                    request_id, status, body = _answer(decode(frame))
                    waiter = pending.pop(request_id, None)
                    if waiter is not None:
                        waiter.status, waiter.body = status, body
                        waiter.lock.release()
                    elif request_id is None:
                        raise ProtocolError(f"node error {status}: {body!r:.200}")
                    # else: the answer to a call that timed out: dropped
        except (OSError, ValueError, ProtocolError) as exc:
            reason = f"{exc.__class__.__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - never leave callers waiting on a dead reader
            log.exception("native reader for %s failed", self.endpoint)
            reason = f"{exc.__class__.__name__}: {exc}"
        finally:
            self.close(reason)
            self._release_socket()

    def close(self, reason: str = "client closed") -> None:
        """Drop the connection; every request in flight fails with Unavailable."""
        if self.alive:
            self._reason = reason
            self.alive = False
            try:
                self._sock.shutdown(socket.SHUT_RDWR)   # wakes the reader thread
            except OSError:
                pass
        pending = self._pending
        for request_id in list(pending):
            waiter = pending.pop(request_id, None)
            if waiter is not None:
                waiter.error = Unavailable(f"{self.endpoint}: {self._reason}")
                waiter.lock.release()


class _TlsSocket:
    """TLS over a blocking socket, for one reader thread and any writer threads at once.

    CPython's ``SSLSocket`` is not safe with a ``recv`` in one thread and a ``send`` in another
    (one OpenSSL object must not be used by two threads at once).  Here an ``ssl.SSLObject``
    over memory buffers is touched only under ``_lock``, never while blocking on the socket; the
    ciphertext a writer makes goes out before any later one (``_send_lock``).  The socket's
    methods the link uses are the same (``recv``, ``sendall``, ``settimeout``, ``shutdown``,
    ``close``).
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, hostname: str) -> None:
        self._sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=hostname)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()

    def handshake(self) -> None:
        """Before the socket is shared (under its current timeout)."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._sock.sendall(self._outgoing.read())
                data = self._sock.recv(65536)
                if not data:
                    raise ConnectionResetError("connection closed during the TLS handshake")
                self._incoming.write(data)
        self._sock.sendall(self._outgoing.read())

    def sendall(self, data: bytes) -> None:
        with self._send_lock:
            with self._lock:
                self._tls.write(data)
                out = self._outgoing.read()
            self._sock.sendall(out)

    def recv(self, size: int) -> bytes:
        """Up to ``size`` plaintext bytes; b"" once the node closed (raises ``socket.timeout``
        like the socket)."""
        while True:
            with self._lock:
                try:
                    data: bytes | None = self._tls.read(size)
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:
                    return b""
                answer_due = self._outgoing.pending > 0   # e.g. a key update reply (rare)
            if answer_due:
                self._send_from_reader()
            if data is not None:
                return data
            raw = self._sock.recv(size)
            if not raw:
                return b""
            with self._lock:
                self._incoming.write(raw)

    def _send_from_reader(self) -> None:
        # A writer sending now takes it with its next frame: the reader must never wait on a
        # writer (that writer may be waiting for the node, which waits for us to read).
        if self._send_lock.acquire(blocking=False):
            try:
                with self._lock:
                    out = self._outgoing.read()
                self._sock.sendall(out)
            finally:
                self._send_lock.release()

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


# TLS 1.3: a node that refuses the client's certificate (or its absence) closes after the
# handshake, without an alert the client can read
_CLOSED_AFTER_HANDSHAKE = (" (after the TLS handshake: a node whose tls.client_ca_file did not "
                           "sign the client's certificate, or that got none, closes like this)")


def _transport_error(endpoint: str, exc: BaseException) -> ConsensusStoreError:
    """The typed error for a failed connection attempt (``TlsError`` is not retried)."""
    problem = certificate_problem(exc)
    if problem is not None:
        return TlsError(f"{endpoint}: {problem}")
    return Unavailable(f"{endpoint}: {exc.__class__.__name__}: {exc}")


class _Endpoint:
    def __init__(self, endpoint: str, token: str | None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.endpoint = endpoint
        self.token = token
        self.ssl_context = ssl_context
        self.link: _Link | None = None
        self._lock = threading.Lock()
        self._gate = _ConnectGate()

    def connected(self, timeout: float) -> _Link:
        link = self.link
        if link is not None and link.alive:
            return link
        started = time.monotonic()
        if not self._lock.acquire(True, max(0.0, timeout)):
            raise Timeout(f"{self.endpoint}: still connecting after {timeout:g}s")
        try:
            link = self.link
            if link is not None and link.alive:
                return link
            error = self._gate.recent_failure(started)
            if error is not None:
                raise error
            try:
                self.link = link = self._open(min(timeout, CONNECT_TIMEOUT_S))
            except ConsensusStoreError as exc:
                self._gate.record(exc)
                raise
            return link
        finally:
            self._lock.release()

    def _open(self, timeout: float) -> _Link:
        host, port = host_port(self.endpoint)
        try:
            sock = socket.create_connection((host, port), timeout=max(0.05, timeout))
        except socket.timeout:
            raise Timeout(f"{self.endpoint}: no connection within {timeout:g}s") from None
        except OSError as exc:
            raise Unavailable(f"{self.endpoint}: {exc.__class__.__name__}: {exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = _TlsSocket(sock, self.ssl_context, host)  # type: ignore[assignment]
                sock.handshake()  # type: ignore[attr-defined]
            frames = FrameReader()
            sock.sendall(encode_auth(self.token))
            while (frame := frames.next()) is None:
                data = sock.recv(65536)
                if not data:
                    raise Unavailable(f"{self.endpoint}: connection closed during auth"
                                      + (_CLOSED_AFTER_HANDSHAKE if self.ssl_context else ""))
                frames.feed(data)
            _auth_result(self.endpoint, decode(frame))
            sock.settimeout(SEND_TIMEOUT_S)
            return _Link(self.endpoint, sock, frames)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, socket.timeout):
                raise Timeout(f"{self.endpoint}: no answer to auth within {timeout:g}s") from None
            if isinstance(exc, (OSError, ValueError, ProtocolError)):
                raise _transport_error(self.endpoint, exc) from None
            raise

    def close(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close()


class NativeTransport:
    """Blocking native transport: one pipelined connection per endpoint, shared by threads."""

    def __init__(self, token: str | None, timeout: float | None = None, *,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._token = token
        self._ssl = ssl_context
        self._endpoints: dict[str, _Endpoint] = {}
        self._lock = threading.Lock()

    def _endpoint(self, endpoint: str) -> _Endpoint:
        state = self._endpoints.get(endpoint)
        if state is None:
            with self._lock:
                state = self._endpoints.setdefault(endpoint,
                                                   _Endpoint(endpoint, self._token, self._ssl))
        return state

    def send(self, endpoint: str, op: str, body: dict[str, Any],
             timeout: float) -> tuple[int, Any]:
        deadline = time.monotonic() + timeout
        link = self._endpoint(endpoint).connected(timeout)
        return link.call(op, body, max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        with self._lock:
            endpoints = list(self._endpoints.values())
        for state in endpoints:
            state.close()


# ---- asyncio ----------------------------------------------------------------------------------
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
                data = await reader.read(_RECV_BYTES)
                if not data:
                    break
                frames.feed(data)
                while (frame := frames.next()) is not None:
                    request_id, status, body = _answer(decode(frame))
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
        self._gates: dict[str, _ConnectGate] = {}

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
        gate = self._gates.setdefault(endpoint, _ConnectGate())
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
            raise _transport_error(endpoint, exc) from None
        try:
            writer.write(encode_auth(self._token))
            frames = FrameReader()
            message = await asyncio.wait_for(_first_frame(reader, frames), max(0.05, timeout))
            _auth_result(endpoint, message)
            return _AsyncLink(endpoint, reader, writer, frames)
        except BaseException as exc:
            writer.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise Timeout(f"{endpoint}: no answer to auth within {timeout:g}s") from None
            if isinstance(exc, (OSError, ValueError, ProtocolError)):
                raise _transport_error(endpoint, exc) from None
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

