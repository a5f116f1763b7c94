"""The node's client ports (HTTP API, native protocol): listening, TLS, and how many
connections they may hold.

Every accepted connection gets an ``_Admission`` protocol, made at accept (before any TLS
handshake), which takes a count in the port's ``ConnectionGate`` until the connection closes:
over the port's cap, the connection is closed as soon as it is made (with TLS, once its
handshake is over: the count already covers it meanwhile).  Admitted connections are
handed to the port's own protocol (uvicorn's httptools one, behind ``http_guard``, or the
native one).  With TLS (``ssl=`` of ``create_server``, handshake bounded by
``HANDSHAKE_TIMEOUT_S``) a failed handshake never reaches the protocol, so its count is given
back once the handshake's deadline has passed: counting from accept is what keeps descriptors bounded, as a peer that connects and
never says hello holds one too.

Descriptors: the node raises its soft ``RLIMIT_NOFILE`` to the hard limit at start and keeps
``RESERVED_FDS`` of them for itself (journal, snapshots, meta file, peer sockets, log files):
``connection_caps`` shrinks the configured per-port caps to fit, and a connection whose socket
got one of the last ``LAST_FDS`` descriptor numbers is refused too (descriptors are handed out
lowest first, so a number that high means that many are open).  Raft (ticked on the same loop)
then never meets EMFILE because of clients.  Nor does the accept loop, which matters under uvloop: asyncio's
pauses a second and retries after EMFILE, but when libuv reports an accept error (for EMFILE,
once its spare-descriptor trick fails) uvloop closes the listening socket for good.
"""
from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from dataclasses import dataclass
from typing import Callable

from consensus_store.config import Address, Limits

log = logging.getLogger("consensus_store.ports")

RESERVED_FDS = 128               # the caps leave these for the node (it uses ~20 at rest)
LAST_FDS = 64                    # a client connection is refused rather than take one of these
MIN_CAP = 16                     # a port keeps at least this many even when descriptors are short
HANDSHAKE_TIMEOUT_S = 10.0       # TLS handshake of a new connection
REFUSAL_LOG_INTERVAL_S = 10.0    # at most one "refused" line per port this often
BACKLOG = 1024


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:   # e.g. above the kernel's nr_open
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    return soft


@dataclass(frozen=True)
class Caps:
    http: int
    native: int
    fd_ceiling: int     # a client socket with a descriptor number at or above this is refused


def connection_caps(limits: Limits, fd_limit: int, native: bool = True) -> Caps:
    """The configured caps, shrunk in proportion when both ports full would eat into the
    reserve of ``RESERVED_FDS`` descriptors."""
    http, native_cap = limits.max_http_connections, limits.max_native_connections if native else 0
    budget = max(0, fd_limit - RESERVED_FDS)
    if http + native_cap > budget:
        scale = budget / (http + native_cap)
        http = max(MIN_CAP, int(http * scale))
        native_cap = max(MIN_CAP, int(native_cap * scale)) if native else 0
    return Caps(http, native_cap, max(RESERVED_FDS, fd_limit - LAST_FDS))


class ConnectionGate:
    """How many connections one port holds (counted from accept to close, refused ones too),
    and whether one more may be served."""

    def __init__(self, name: str, limit: int, fd_ceiling: int) -> None:
        self.name, self.limit, self.fd_ceiling = name, limit, fd_ceiling
        self.open = 0
        self.refused = 0                 # since the last log line
        self._logged_at = -REFUSAL_LOG_INTERVAL_S

    def take(self) -> bool:
        """Count one more connection; False: over the cap, close it."""
        self.open += 1
        return self.open <= self.limit

    def release(self) -> None:
        self.open -= 1

    def fd_allowed(self, transport: asyncio.BaseTransport) -> bool:
        return _fd_of(transport) < self.fd_ceiling

    def refuse(self, transport: asyncio.BaseTransport) -> None:
        fd = _fd_of(transport)
        transport.abort()
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= REFUSAL_LOG_INTERVAL_S:
            reason = (f"{self.open} open, the limit is {self.limit}" if fd < self.fd_ceiling
                      else f"descriptor {fd} is inside the reserve (from {self.fd_ceiling})")
            log.warning("%s port: refused %d connection(s) since the last such line (%s)",
                        self.name, self.refused, reason)
            self._logged_at, self.refused = now, 0


def _fd_of(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    try:
        return sock.fileno() if sock is not None else -1
    except (OSError, ValueError):
        return -1


ProtocolFactory = Callable[[], asyncio.Protocol]


class _Admission(asyncio.Protocol):
    """The protocol of every accepted connection: it holds the connection's count in the gate
    and passes each event on to the port's protocol."""

    __slots__ = ("port", "app", "admitted", "counted", "deadline")

    def __init__(self, port: "ClientPort") -> None:
        self.port = port
        self.app: asyncio.Protocol | None = None
        self.admitted = port.gate.take()
        self.counted = True
        self.deadline: asyncio.TimerHandle | None = None
        if port.ssl_context is not None:
            self.deadline = asyncio.get_running_loop().call_later(
                HANDSHAKE_TIMEOUT_S + 1.0, self._handshake_over)

    def _handshake_over(self) -> None:
        """No connection_made by now: the handshake failed (or timed out) and the connection is
        gone; give its count back."""
        self.deadline = None
        self._release()

    def _release(self) -> None:
        if self.counted:
            self.counted = False
            self.port.gate.release()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        gate = self.port.gate
        if not self.counted:          # made after its deadline: count it again
            self.counted, self.admitted = True, gate.take()
        if not self.admitted or not gate.fd_allowed(transport):
            gate.refuse(transport)    # connection_lost follows and gives the count back
            return
        self.app = app = self.port.factory()
        app.connection_made(transport)

    # ---- passed on ------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.app is not None:
            self.app.data_received(data)

    def eof_received(self) -> bool | None:
        return self.app.eof_received() if self.app is not None else None

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self._release()
        app, self.app = self.app, None
        if app is not None:
            app.connection_lost(exc)


class ClientPort:
    """One listening client port: its gate, its TLS context and the protocol it serves."""

    def __init__(self, name: str, factory: ProtocolFactory, gate: ConnectionGate,
                 ssl_context: ssl.SSLContext | None) -> None:
        self.factory, self.gate, self.ssl_context = factory, gate, ssl_context
        self._server: asyncio.AbstractServer | None = None

    async def listen(self, address: Address) -> None:
        loop = asyncio.get_running_loop()
        tls = {} if self.ssl_context is None else {
            "ssl": self.ssl_context, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT_S}
        self._server = await loop.create_server(lambda: _Admission(self), address.host,
                                                address.port, reuse_address=True,
                                                backlog=BACKLOG, **tls)

    async def close(self) -> None:
        """Stop listening.  Served connections are their protocol's to close (not awaited here:
        uvloop's ``wait_closed`` waits for every connection)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
