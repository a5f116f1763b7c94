"""Native-protocol transports (``tcp://host:port``): pipelined JSON frames, see ``wire``.

``NativeTransport`` (blocking) keeps one TCP connection per endpoint, shared by every thread of
the client.  A caller writes its frame and waits on its own lock; one reader thread per
connection hands each answer to the caller with the same id, so 64 threads calling ``put`` at once
have 64 requests in flight on one connection.  Frames queued while another thread is writing go
out together in one ``sendall`` (the writer that finds the queue non-empty sends it all).

``AsyncNativeTransport`` (``native_async``, re-exported here) is the same over asyncio streams:
a reader task per connection, one future per request, and frames written in one batch per loop
iteration.  What both share is in ``native_common``.

A connection that fails (EOF, reset, garbage) is dropped and every request in flight on it fails
with ``Unavailable`` (retryable: ``core`` retries writes with the same ids); the next request
reconnects.  A caller that waits longer than its timeout gets ``Timeout``; a late answer is
dropped.

``tls://`` endpoints are the same over TLS (the node's certificate and host name verified with
the client's ``ssl.SSLContext``; a certificate it does not trust is ``TlsError``, not retried).
The blocking transport runs TLS through ``TlsSocket`` (``native_tls``): OpenSSL objects must not
be used by two threads at once, and its reader thread and writers would.
"""
from __future__ import annotations

import itertools
import logging
import socket
import ssl
import threading
import time
from typing import Any

from consensus_store.client.endpoints import host_port
from consensus_store.client.native_async import AsyncNativeTransport, _AsyncLink
from consensus_store.client.native_common import (ANSWER_GRACE_S, CLOSED_AFTER_HANDSHAKE,
                                                  CONNECT_TIMEOUT_S, RECV_BYTES, SEND_TIMEOUT_S,
                                                  ConnectGate, ProtocolError, check_auth_answer,
                                                  connect_error, parse_answer)
from consensus_store.client.native_tls import TlsSocket
from consensus_store.errors import ConsensusStoreError, Timeout, Unavailable
from consensus_store.wire import AUTH_ID, FrameReader, decode, encode_auth, encode_request

log = logging.getLogger("consensus_store.client")

__all__ = ["AsyncNativeTransport", "NativeTransport", "ProtocolError"]
_TlsSocket = TlsSocket       # the name it had here


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
                    data = sock.recv(RECV_BYTES)
                except socket.timeout:
                    continue
                if not data:
                    break
                frames.feed(data)
                while (frame := frames.next()) is not None:
                    request_id, status, body = parse_answer(decode(frame))
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


class _Endpoint:
    def __init__(self, endpoint: str, token: str | None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.endpoint = endpoint
        self.token = token
        self.ssl_context = ssl_context
        self.link: _Link | None = None
        self._lock = threading.Lock()
        self._gate = ConnectGate()

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
                sock = TlsSocket(sock, self.ssl_context, host)  # type: ignore[assignment]
                sock.handshake()  # type: ignore[attr-defined]
            frames = FrameReader()
            sock.sendall(encode_auth(self.token))
            while (frame := frames.next()) is None:
                data = sock.recv(65536)
                if not data:
                    raise Unavailable(f"{self.endpoint}: connection closed during auth"
                                      + (CLOSED_AFTER_HANDSHAKE if self.ssl_context else ""))
                frames.feed(data)
            check_auth_answer(self.endpoint, decode(frame))
            sock.settimeout(SEND_TIMEOUT_S)
            return _Link(self.endpoint, sock, frames)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, socket.timeout):
                raise Timeout(f"{self.endpoint}: no answer to auth within {timeout:g}s") from None
            if isinstance(exc, (OSError, ValueError, ProtocolError)):
                raise connect_error(self.endpoint, exc) from None
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
