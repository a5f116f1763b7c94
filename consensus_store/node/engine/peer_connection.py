"""The raft port: connections that carry sealed frames (peer_frames.py), with limits that hold
before a peer has proven it knows the cluster secret, and a listener that stays up.

What someone without the secret can make a node do, and what it costs the node:
- a connection may send one frame of at most ``peer_frames.FIRST_FRAME_MAX_BYTES`` (4 KiB);
  nothing is read past it until it opens (``SealedConnection`` reads exactly up to its end);
- later frames are checked against ``PortLimits.frame_bytes`` on their length prefix, before
  their body is buffered;
- a connection whose first frame has not opened within ``handshake_deadline_s`` is closed, and
  at most ``max_unauthenticated`` such connections exist at a time (more are closed on accept);
- nothing is sent to a peer before the key exchange of its connection is over;
- every message is checked (peer_messages.py) before pysyncobj reads it: the handshake's, a
  Raft message's fields, and the log commands in it, which pysyncobj unpickles on apply;
- the listener survives EMFILE/ENFILE/ENOMEM on accept: it pauses accepting for
  ``ACCEPT_BACKOFF_S`` and tries again (pysyncobj's TcpServer closes itself for good on any
  accept error, and the node then never hears from a peer that reconnects).

Everything here runs on the node's loop thread (runner.py).  Private pysyncobj names used
(pinned 0.3.17):
TcpConnection's ``_TcpConnection__socket``, ``_TcpConnection__recvBufferSize``,
``_TcpConnection__writeBuffer``, ``_TcpConnection__trySendBuffer``,
``_TcpConnection__processRead``, ``_TcpConnection__processParseMessage``; TcpServer's
``_TcpServer__socket``, ``_TcpServer__fileno``, ``_TcpServer__poller``,
``_TcpServer__onNewConnection``, ``_TcpServer__onNewConnectionCallback``,
``_TcpServer__sendBufferSize``, ``_TcpServer__recvBufferSize``,
``_TcpServer__connectionTimeout``, ``_TcpServer__keepalive``.  Connections and the server are
pysyncobj's objects with their class swapped (``adopt``) before first use, because
TCPTransport and TcpServer construct them.
"""
from __future__ import annotations

import errno
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.tcp_server import TcpServer
from pysyncobj.transport import TCPTransport

from consensus_store.node.engine.peer_frames import (LENGTH_BYTES, FrameError, FrameOpener, FrameSealer,
                                              frame_length, master_key, unwrap_keyed)
from consensus_store.node.engine.peer_messages import Phase, UnsafeMessage, check_peer_message

log = logging.getLogger("consensus_store.raft.port")

ACCEPT_BACKOFF_S = 0.2          # after accept() ran out of descriptors or memory
ACCEPTS_PER_EVENT = 64          # one poll event accepts at most this many connections
ACCEPT_BACKLOG = 128
# A read replica (pysyncobj's read-only node) announces itself as
# "readonly:<id> <api endpoint> <native address or ->" rather than pysyncobj's bare "readonly",
# so that the voters can name it, and say where clients reach it, in their status.
REPLICA_PREFIX = "readonly:"
MAX_REPLICA_ANNOUNCEMENT = 512
REPLICA_FIELDS = ("id", "endpoint", "native_address")
# accept() failed for that one connection only: take the next.
_ONE_CONNECTION_FAILED = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM,
                                    errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTUNREACH,
                                    errno.EHOSTDOWN, errno.ENONET, errno.ENOPROTOOPT,
                                    errno.EOPNOTSUPP, errno.ETIMEDOUT})


@dataclass(frozen=True)
class PortLimits:
    frame_bytes: int                      # the largest frame after the first
    handshake_deadline_s: float = 3.0     # to open the first frame
    max_unauthenticated: int = 32         # connections whose first frame has not opened

    @classmethod
    def for_conf(cls, conf: Any) -> "PortLimits":
        """The largest legitimate message, generously: an AppendEntries holds entries up to
        ``appendEntriesBatchSizeBytes`` plus the one that crosses it (never larger than the
        batch size: raft.py's ``syncobj_conf``), with msgpack's few bytes per entry; a
        snapshot piece holds ``logCompactionBatchSize`` bytes."""
        batch = conf.appendEntriesBatchSizeBytes
        return cls(frame_bytes=max(4 * batch, 2 * conf.logCompactionBatchSize) + 64 * 1024)


class _Throttled:
    """A warning at most once per ``interval_s``, saying how many were left out."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval_s = interval_s
        self._next = 0.0
        self._left_out = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._left_out += 1
            return
        if self._left_out:
            message += f" (and {self._left_out} more like it)"
        log.warning(message, *args)
        self._next, self._left_out = now + self._interval_s, 0


class SealedConnection(TcpConnection):
    """A TcpConnection that frames messages with peer_frames instead of pickle + zlib + Fernet,
    buffers what it reads in a bytearray (consumed from the front: no quadratic copying), and
    checks every frame's length before reading its body.  Installed with ``adopt``."""

    frame_key: bytes
    limits: PortLimits
    check: Callable[[Phase, Any], None]    # raises UnsafeMessage
    phase: Phase                           # what the next message may be
    _sealer: FrameSealer | None
    _opener: FrameOpener
    _inbox: bytearray
    _checked_to: int        # offset in _inbox of the first frame whose length is unchecked
    _frames_checked: int    # frames of this connection whose length was checked
    _dropped = _Throttled()
    _dial_trouble = _Throttled()

    @classmethod
    def adopt(cls, connection: TcpConnection, key: bytes, limits: PortLimits,
              check: Callable[[Phase, Any], None]) -> "SealedConnection":
        """Turn one of pysyncobj's connections (not used yet) into a sealed one."""
        connection.__class__ = cls
        assert isinstance(connection, SealedConnection)
        connection.frame_key, connection.limits, connection.check = key, limits, check
        connection._reset_frames()
        return connection

    @property
    def authenticated(self) -> bool:
        """The other side has proven it holds the cluster secret (a frame of it opened)."""
        return self._opener.authenticated

    def _reset_frames(self) -> None:
        self._sealer = None
        self._opener = FrameOpener(self.frame_key, self.limits.frame_bytes)
        self._inbox = bytearray()
        self._checked_to = self._frames_checked = 0
        self.phase = Phase.KEY

    def send(self, message: Any) -> None:
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        if self._sealer is None:
            self._sealer = FrameSealer(self.frame_key)
        self._TcpConnection__writeBuffer += self._sealer.seal(message)
        self._TcpConnection__trySendBuffer()

    def _TcpConnection__processRead(self) -> bool:
        """Read once; False when there is nothing more to read now (or the connection ended)."""
        wanted = self._read_size()
        if wanted == 0:
            return False        # the first frame is in: open it before reading any more
        try:
            incoming = self._TcpConnection__socket.recv(wanted)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.disconnect()
            return False
        if not incoming:
            self.disconnect()
            return False
        self._inbox += incoming
        try:
            self._check_lengths()
        except FrameError as exc:
            self._drop(exc)
            return False
        return True

    def _read_size(self) -> int:
        if self.authenticated:
            return self._TcpConnection__recvBufferSize
        length = frame_length(self._inbox)
        end = LENGTH_BYTES + length if length is not None else LENGTH_BYTES
        return max(0, end - len(self._inbox))

    def _check_lengths(self) -> None:
        """Every frame length that has arrived, checked before its body is read."""
        inbox = self._inbox
        while (length := frame_length(inbox, self._checked_to)) is not None:
            limit = self._opener.limit_for(self._frames_checked)
            if not 1 <= length <= limit:
                raise FrameError(f"frame of {length} bytes announced (limit {limit})")
            self._checked_to += LENGTH_BYTES + length
            self._frames_checked += 1

    def _TcpConnection__processParseMessage(self) -> Any:
        try:
            opened = self._opener.open(self._inbox)
            if opened is None:
                return None
            message, consumed = opened
            del self._inbox[:consumed]
            self._checked_to -= consumed
            if self.recvRandKey:
                message = unwrap_keyed(message, self.recvRandKey)
            self.check(self.phase, message)
            return message
        except (FrameError, UnsafeMessage) as exc:
            self._drop(exc)
            return None

    def _drop(self, reason: Exception) -> None:
        self._dropped.warning("dropping a raft port connection: %s", reason)
        self.disconnect()

    def disconnect(self) -> None:
        super().disconnect()
        self._reset_frames()                 # a new connection, new keys

    def connect(self, host: str, port: int) -> bool:
        self._reset_frames()
        try:
            return super().connect(host, port)
        except OSError as exc:               # e.g. no descriptor left: try again later
            self._dial_trouble.warning("cannot dial %s:%s: %s", host, port, exc)
            return False


def announced(text: str) -> dict[str, str | None]:
    """What a replica's announcement says (missing or "-" fields are None)."""
    words = text[:MAX_REPLICA_ANNOUNCEMENT].split()
    values = [w if w != "-" else None for w in words[:len(REPLICA_FIELDS)]]
    values += [None] * (len(REPLICA_FIELDS) - len(values))
    return dict(zip(REPLICA_FIELDS, values))


class RaftListener(TcpServer):
    """pysyncobj's TcpServer, but an accept error never closes the port: out of descriptors
    or memory, it stops accepting for ``ACCEPT_BACKOFF_S`` (the waiting connections stay in
    the kernel's queue) and tries again.  ``admit`` says whether one more connection that has
    not authenticated may come in; if not, it is closed at once."""

    admit: Callable[[], bool]
    _paused_until: float | None
    _trouble = _Throttled()

    @classmethod
    def adopt(cls, server: TcpServer, admit: Callable[[], bool]) -> "RaftListener":
        """Install on pysyncobj's server before it binds."""
        server.__class__ = cls
        assert isinstance(server, RaftListener)
        server.admit, server._paused_until = admit, None
        return server

    def bind(self) -> None:
        super().bind()
        # pysyncobj listens with a backlog of 5: a burst of connections (peers and utilities
        # reconnecting, or a flood being closed at accept) would wait for SYN retries.
        self._TcpServer__socket.listen(ACCEPT_BACKLOG)

    def _TcpServer__onNewConnection(self, descr: int, event: int) -> None:
        if event & POLL_EVENT_TYPE.READ:
            for _ in range(ACCEPTS_PER_EVENT):
                if not self._accept_one():
                    break
        if event & POLL_EVENT_TYPE.ERROR and self._paused_until is None:
            self._pause("the listening socket reports an error")

    def _accept_one(self) -> bool:
        """Accept one connection; False when there is none (or accepting has paused)."""
        try:
            sock, _ = self._TcpServer__socket.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in _ONE_CONNECTION_FAILED:
                return True
            self._pause(f"accept failed: {exc}")
            return False
        if not self.admit():
            sock.close()
            self._trouble.warning("raft port: too many connections that have not "
                                  "authenticated; closing new ones")
            return True
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._TcpServer__sendBufferSize)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._TcpServer__recvBufferSize)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            connection = TcpConnection(poller=self._TcpServer__poller, socket=sock,
                                       timeout=self._TcpServer__connectionTimeout,
                                       sendBufferSize=self._TcpServer__sendBufferSize,
                                       recvBufferSize=self._TcpServer__recvBufferSize,
                                       keepalive=self._TcpServer__keepalive)
        except OSError as exc:
            sock.close()
            self._trouble.warning("raft port: cannot set up an accepted connection: %s", exc)
            return True
        self._TcpServer__onNewConnectionCallback(connection)
        return True

    def _pause(self, reason: str) -> None:
        self._trouble.warning("raft port: %s; not accepting for %.1f s", reason,
                              ACCEPT_BACKOFF_S)
        if self._TcpServer__fileno is not None:
            self._TcpServer__poller.unsubscribe(self._TcpServer__fileno)
        self._paused_until = time.monotonic() + ACCEPT_BACKOFF_S

    def resume_if_due(self) -> None:
        """Call on every tick: accept again once the pause is over."""
        if self._paused_until is None or time.monotonic() < self._paused_until:
            return
        self._paused_until = None
        if self._TcpServer__fileno is not None:
            self._TcpServer__poller.subscribe(self._TcpServer__fileno,
                                              self._TcpServer__onNewConnection,
                                              POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)


class SealedTransport(TCPTransport):
    """pysyncobj's TCPTransport with sealed connections, a listener that stays up, and the
    limits on connections that have not authenticated (see the module docstring)."""

    def __init__(self, syncObj: Any, *args: Any, **kwargs: Any) -> None:
        password = syncObj.conf.password
        if not password:
            raise ValueError("the raft port needs the peer secret (conf.password)")
        # Set before TCPTransport.__init__, which creates the server and the outgoing
        # connections.
        self._frame_key = master_key(password)
        self.port_limits = PortLimits.for_conf(syncObj.conf)
        self._handshake_deadlines: dict[SealedConnection, float] = {}   # accepted ones
        self._dial_deadlines: dict[SealedConnection, float] = {}        # dialed ones
        self._late = _Throttled()
        self.replica_announcement: str | None = getattr(syncObj.conf, "replica_announcement",
                                                          None)
        # voter side: read-only node -> what it announced (REPLICA_FIELDS)
        self.replicas_announced: dict[Any, dict[str, str | None]] = {}
        super().__init__(syncObj, *args, **kwargs)

    def _createServer(self) -> None:
        super()._createServer()
        RaftListener.adopt(self._server, self._admit_unauthenticated)

    def _check_peer_message(self, phase: Phase, message: Any) -> None:
        check_peer_message(phase, message, self._syncObj._idToMethod,
                           self._onUtilityMessageCallbacks)

    def _onNewIncomingConnection(self, conn: TcpConnection) -> None:
        connection = SealedConnection.adopt(conn, self._frame_key, self.port_limits,
                                            self._check_peer_message)
        self._handshake_deadlines[connection] = (time.monotonic()
                                                 + self.port_limits.handshake_deadline_s)
        super()._onNewIncomingConnection(connection)

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        connection = self._connections.get(node)
        if connection is not None and type(connection) is TcpConnection:
            SealedConnection.adopt(connection, self._frame_key, self.port_limits,
                                   self._check_peer_message)

    def _sendSelfAddress(self, conn: TcpConnection) -> None:
        if self._selfIsReadonlyNode and self.replica_announcement is not None:
            conn.send(REPLICA_PREFIX + self.replica_announcement)
        else:
            super()._sendSelfAddress(conn)

    def _onIncomingMessageReceived(self, conn: TcpConnection, message: Any) -> None:
        phase = conn.phase if isinstance(conn, SealedConnection) else None
        name = None
        if (phase is Phase.IDENTITY and type(message) is str
                and message.startswith(REPLICA_PREFIX)):
            name = announced(message[len(REPLICA_PREFIX):])
            message = "readonly"
        super()._onIncomingMessageReceived(conn, message)
        if name is not None and (node := self._connToNode(conn)) is not None:
            self.replicas_announced[node] = name
        if phase is None or conn.state == CONNECTION_STATE.DISCONNECTED:
            return
        if phase is Phase.KEY:
            conn.phase = Phase.IDENTITY
        elif conn not in self._unknownConnections:       # it named a node: Raft from now on
            conn.phase = Phase.RAFT

    def _onOutgoingMessageReceived(self, conn: TcpConnection, message: Any) -> None:
        super()._onOutgoingMessageReceived(conn, message)
        if isinstance(conn, SealedConnection):
            conn.phase = Phase.RAFT

    def _onDisconnected(self, conn: TcpConnection) -> None:
        node = self._connToNode(conn)
        super()._onDisconnected(conn)
        if node is not None and node not in self._nodes:
            # A read-only node comes back under a new local id: forget this one (pysyncobj
            # keeps its connection in ``_connections`` for ever).
            self._connections.pop(node, None)
            self.replicas_announced.pop(node, None)
            self.forget_node(node)

    def forget_node(self, node: Any) -> None:
        """A read-only node is gone for good: drop what is kept per node (replication.py)."""

    def _onOutgoingConnected(self, conn: TcpConnection) -> None:
        # Nothing is sent before the key exchange is over, so pysyncobj's timeout (checked on
        # sends and reads) would never close a dial that the other side leaves unanswered.
        if isinstance(conn, SealedConnection):
            self._dial_deadlines[conn] = (time.monotonic()
                                          + self.port_limits.handshake_deadline_s)
        super()._onOutgoingConnected(conn)

    def send(self, node: Any, message: Any) -> bool:
        connection = self._connections.get(node)
        if connection is not None and not connection.sendRandKey:
            # pysyncobj marks a dialed connection connected before the key exchange is over:
            # a message sent then would go out without the key, and the other side drops the
            # connection (seen with a request_vote during an election).
            return False
        return super().send(node, message)

    def _onTick(self) -> None:
        super()._onTick()
        if self._handshake_deadlines:
            self._close_late_handshakes()
        if self._dial_deadlines:
            self._close_late_dials()
        if isinstance(self._server, RaftListener):
            self._server.resume_if_due()

    def _waiting_handshakes(self) -> int:
        """Forget connections that authenticated or closed; count the others."""
        for connection in [c for c in self._handshake_deadlines
                           if c.authenticated or c.state == CONNECTION_STATE.DISCONNECTED]:
            del self._handshake_deadlines[connection]
        return len(self._handshake_deadlines)

    def _admit_unauthenticated(self) -> bool:
        return self._waiting_handshakes() < self.port_limits.max_unauthenticated

    def _close_late_handshakes(self) -> None:
        self._waiting_handshakes()
        now = time.monotonic()
        late = [c for c, deadline in self._handshake_deadlines.items() if deadline <= now]
        for connection in late:
            del self._handshake_deadlines[connection]
            connection.disconnect()
        if late:
            self._late.warning("raft port: closed %d connection(s) that did not authenticate "
                               "within %.1f s", len(late), self.port_limits.handshake_deadline_s)

    def _close_late_dials(self) -> None:
        now = time.monotonic()
        for connection, deadline in list(self._dial_deadlines.items()):
            if connection.sendRandKey or connection.state == CONNECTION_STATE.DISCONNECTED:
                del self._dial_deadlines[connection]
            elif deadline <= now:
                del self._dial_deadlines[connection]
                self._late.warning("raft port: a peer did not answer the handshake within "
                                   "%.1f s; dialing again", self.port_limits.handshake_deadline_s)
                connection.disconnect()          # pysyncobj redials
