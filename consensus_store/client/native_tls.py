"""TLS over a blocking socket shared by one reader thread and any writer threads (the blocking
native transport's ``tls://`` connections).  Imports nothing from ``client``."""
from __future__ import annotations

import socket
import ssl
import threading


class TlsSocket:
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
