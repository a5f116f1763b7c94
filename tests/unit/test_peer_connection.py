"""The raft port's connection and listener (node/engine/peer_connection.py), on socket pairs and a
recording poller: what is read before a peer has authenticated, and accept errors."""
from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Callable, Iterator

import pytest
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.tcp_server import TcpServer

from consensus_store.node.engine import peer_connection
from consensus_store.node.engine.peer_connection import (ACCEPT_BACKOFF_S, PortLimits, RaftListener,
                                                  SealedConnection)
from consensus_store.node.engine.peer_frames import FrameSealer, master_key
from consensus_store.node.engine.peer_messages import Phase, UnsafeMessage

KEY = master_key("cluster secret")
LIMITS = PortLimits(frame_bytes=100_000)


class RecordingPoller:
    def __init__(self) -> None:
        self.callbacks: dict[int, Callable[[int, int], None]] = {}

    def subscribe(self, descr: int, callback: Callable[[int, int], None], mask: int) -> None:
        self.callbacks[descr] = callback

    def unsubscribe(self, descr: int) -> None:
        self.callbacks.pop(descr, None)

    def readable(self, descr: int) -> None:
        self.callbacks[descr](descr, POLL_EVENT_TYPE.READ)


def accept_all(phase: Phase, message: Any) -> None:
    pass


@pytest.fixture
def pair() -> Iterator[tuple[RecordingPoller, SealedConnection, socket.socket, list[Any]]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    poller = RecordingPoller()
    connection = SealedConnection.adopt(TcpConnection(poller, socket=ours), KEY, LIMITS,
                                        check=accept_all)
    received: list[Any] = []
    connection.setOnMessageReceivedCallback(received.append)
    yield poller, connection, theirs, received
    connection.disconnect()
    theirs.close()


def test_nothing_is_read_past_the_first_frame_until_it_has_opened(pair) -> None:
    poller, connection, theirs, received = pair
    sealer = FrameSealer(KEY)
    first, second = sealer.seal(b"k" * 32), sealer.seal("address")
    theirs.sendall(first + second)
    descr = connection.fileno()
    poller.readable(descr)
    assert received == [b"k" * 32] and connection.authenticated
    assert len(connection._inbox) == 0                   # the second frame is still unread
    poller.readable(descr)
    assert received == [b"k" * 32, "address"]


@pytest.mark.parametrize("authenticate_first", [False, True])
def test_a_frame_over_the_limit_is_refused_from_its_length(pair, authenticate_first: bool) -> None:
    poller, connection, theirs, received = pair
    sealer = FrameSealer(KEY)
    if authenticate_first:
        theirs.sendall(sealer.seal(b"k" * 32))
        poller.readable(connection.fileno())
    limit = LIMITS.frame_bytes if authenticate_first else 4096
    descr = connection.fileno()
    theirs.sendall(struct.pack("<I", limit + 1) + b"\0" * 50_000)
    poller.readable(descr)
    assert connection.state == CONNECTION_STATE.DISCONNECTED
    assert len(received) == int(authenticate_first)


def test_the_whole_stream_of_an_authenticated_peer_is_read(pair) -> None:
    poller, connection, theirs, received = pair
    sealer = FrameSealer(KEY)
    sent = [b"k" * 32] + [{"n": n, "data": b"x" * 5000} for n in range(20)]
    theirs.sendall(b"".join(sealer.seal(m) for m in sent))
    for _ in range(3):
        poller.readable(connection.fileno())
    assert received == sent


def test_a_message_the_check_refuses_drops_the_connection(pair) -> None:
    poller, connection, theirs, received = pair

    def refuse(phase: Phase, message: Any) -> None:
        raise UnsafeMessage(f"{phase.value}: {message!r}")

    connection.check = refuse
    theirs.sendall(FrameSealer(KEY).seal(b"k" * 32))
    poller.readable(connection.fileno())
    assert received == [] and connection.state == CONNECTION_STATE.DISCONNECTED


class FailingSocket:
    """A listening socket whose accept fails with ``error``, then delegates."""

    def __init__(self, real: socket.socket, error: int, times: int) -> None:
        self.real, self.error, self.times = real, error, times

    def accept(self) -> tuple[socket.socket, Any]:
        if self.times > 0:
            self.times -= 1
            raise OSError(self.error, "injected")
        return self.real.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def listener() -> Iterator[tuple[RecordingPoller, RaftListener, list[TcpConnection], list[bool]]]:
    poller = RecordingPoller()
    accepted: list[TcpConnection] = []
    admit = [True]
    server = RaftListener.adopt(TcpServer(poller, "127.0.0.1", 0, accepted.append),
                                lambda: admit[0])
    server.bind()
    yield poller, server, accepted, admit
    for connection in accepted:
        connection.disconnect()
    server.unbind()


def dial(server: RaftListener) -> socket.socket:
    return socket.create_connection(server._TcpServer__socket.getsockname(), timeout=2.0)


@pytest.mark.parametrize("error", [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS])
def test_the_listener_pauses_on_an_accept_error_and_listens_again(
        listener, monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    poller, server, accepted, _ = listener
    now = [1000.0]
    monkeypatch.setattr(peer_connection.time, "monotonic", lambda: now[0])
    descr = server._TcpServer__fileno
    real = server._TcpServer__socket
    server._TcpServer__socket = FailingSocket(real, error, times=1)
    with dial(server):
        poller.readable(descr)
        assert descr not in poller.callbacks and accepted == []     # paused, not closed
        server.resume_if_due()
        assert descr not in poller.callbacks
        now[0] += ACCEPT_BACKOFF_S
        server.resume_if_due()
        poller.readable(descr)
        assert len(accepted) == 1 and real.fileno() == descr


def test_a_connection_over_the_cap_is_closed_at_accept(listener) -> None:
    poller, server, accepted, admit = listener
    admit[0] = False
    with dial(server) as sock:
        poller.readable(server._TcpServer__fileno)
        assert accepted == []
        assert sock.recv(1) == b""
    admit[0] = True
    with dial(server):
        poller.readable(server._TcpServer__fileno)
        assert len(accepted) == 1
