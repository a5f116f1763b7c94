"""The fault-injecting TCP proxy of ``consensus_store.testing``, with plain sockets.

An echo server stands in for the acceptor node; the test plays the dialer.  Every wait has a
deadline (socket timeouts), never a fixed sleep.
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from consensus_store.config import load_config
from consensus_store.testing import (NODE_PORT_RANGE, PROXY_PORT_RANGE, FaultProxy,
                                     write_proxied_cluster_configs)

IO_TIMEOUT_S = 5.0


class EchoServer:
    """Echoes every byte back on each accepted connection (one thread per connection)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.accepted = 0
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(IO_TIMEOUT_S)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(seed=1) as p:
        yield p


def dial(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=IO_TIMEOUT_S)
    sock.settimeout(IO_TIMEOUT_S)
    return sock


def roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def is_closed(sock: socket.socket) -> bool:
    """True if the peer closed (EOF or reset) within the socket timeout."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return True
    except socket.timeout:
        return False


def test_forwards_bytes_both_ways(proxy: FaultProxy, echo: EchoServer) -> None:
    address = proxy.add_link("a", "b", echo.address)
    port = int(address.rpartition(":")[2])
    assert PROXY_PORT_RANGE[0] <= port <= PROXY_PORT_RANGE[1]
    with dial(address) as sock:
        payload = bytes(range(256)) * 1000
        assert roundtrip(sock, payload) == payload
    stats = proxy.stats()[("a", "b")]
    assert stats.accepted == 1
    assert stats.bytes_forward >= len(payload) and stats.bytes_back >= len(payload)


def test_partition_closes_live_connections_and_refuses_new_ones(
        proxy: FaultProxy, echo: EchoServer) -> None:
    address = proxy.add_link("a", "b", echo.address)
    live = dial(address)
    assert roundtrip(live, b"hello") == b"hello"
    assert proxy.live_connections("a", "b") == 1

    proxy.partition([{"a"}, {"b"}])
    assert not proxy.allowed("a", "b")
    assert is_closed(live)
    live.close()
    assert proxy.live_connections("a", "b") == 0
    assert proxy.stats()[("a", "b")].cut == 1

    accepted_before = echo.accepted
    with dial(address) as refused:          # the TCP handshake succeeds, then it is closed
        assert is_closed(refused)
    assert proxy.stats()[("a", "b")].refused >= 1
    assert echo.accepted == accepted_before  # nothing reached the acceptor

    proxy.heal()
    with dial(address) as again:
        assert roundtrip(again, b"back") == b"back"


def test_partition_cuts_only_links_between_groups(proxy: FaultProxy, echo: EchoServer) -> None:
    addresses = {}
    for dialer, acceptor in [("c", "a"), ("c", "b"), ("b", "a")]:
        addresses[(dialer, acceptor)] = proxy.add_link(dialer, acceptor, echo.address)
    socks = {link: dial(address) for link, address in addresses.items()}
    try:
        for sock in socks.values():
            assert roundtrip(sock, b"ping") == b"ping"
        proxy.isolate("a")
        assert is_closed(socks[("c", "a")]) and is_closed(socks[("b", "a")])
        assert roundtrip(socks[("c", "b")], b"still") == b"still"
    finally:
        for sock in socks.values():
            sock.close()


def test_topology_rules(proxy: FaultProxy, echo: EchoServer) -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            proxy.add_link(b, a, echo.address)
    assert all(proxy.allowed(a, b) for a in nodes for b in nodes if a != b)

    proxy.partition([{"n1", "n2"}, {"n3", "n4", "n5"}])
    assert proxy.allowed("n1", "n2") and proxy.allowed("n3", "n5")
    assert not proxy.allowed("n1", "n3") and not proxy.allowed("n5", "n2")

    proxy.bridge({"n1", "n2"}, "n3", {"n4", "n5"})      # n3 sees both halves
    assert proxy.allowed("n3", "n1") and proxy.allowed("n3", "n5")
    assert not proxy.allowed("n1", "n4") and not proxy.allowed("n2", "n5")
    assert proxy.allowed("n1", "n2") and proxy.allowed("n4", "n5")

    proxy.isolate("n4")
    assert not any(proxy.allowed("n4", other) for other in nodes if other != "n4")
    assert proxy.allowed("n1", "n5")

    proxy.partition([{"n1", "n2", "n3"}])               # n4, n5 in no group: alone
    assert not proxy.allowed("n4", "n5") and proxy.allowed("n1", "n3")

    proxy.heal()
    proxy.cut("n1", "n2")
    assert not proxy.allowed("n2", "n1") and proxy.allowed("n1", "n3")
    proxy.connect("n1", "n2")
    assert proxy.allowed("n1", "n2")
    assert proxy.describe() == "healed"

    with pytest.raises(ValueError):
        proxy.partition([{"n1", "nobody"}])
    with pytest.raises(ValueError):
        proxy.add_link("n2", "n1", echo.address)        # one link per pair


def test_latency_delays_and_keeps_order(proxy: FaultProxy, echo: EchoServer) -> None:
    address = proxy.add_link("a", "b", echo.address)
    with dial(address) as sock:
        assert roundtrip(sock, b"warm") == b"warm"
        proxy.set_latency(0.1, jitter=0.05)
        started = time.monotonic()
        assert roundtrip(sock, b"slow") == b"slow"
        elapsed = time.monotonic() - started
        assert elapsed >= 0.2, f"round trip took {elapsed:.3f}s with 2 x 100 ms latency"
        # Many small chunks, each with its own jitter, still arrive in order.
        payload = b"".join(b"%05d" % i for i in range(400))
        for i in range(0, len(payload), 50):
            sock.sendall(payload[i:i + 50])
        received = b""
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            received += chunk
        assert received == payload
        proxy.set_latency(0.0)
        started = time.monotonic()
        assert roundtrip(sock, b"fast") == b"fast"
        assert time.monotonic() - started < 0.2


def test_target_down_closes_the_dialer(proxy: FaultProxy) -> None:
    with socket.socket() as probe:       # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        dead = "127.0.0.1:%d" % probe.getsockname()[1]
    address = proxy.add_link("a", "b", dead)
    with dial(address) as sock:
        assert is_closed(sock)
    assert proxy.stats()[("a", "b")].dial_failures == 1


def test_acceptor_closing_closes_the_dialer(proxy: FaultProxy, echo: EchoServer) -> None:
    address = proxy.add_link("a", "b", echo.address)
    with dial(address) as sock:
        assert roundtrip(sock, b"x") == b"x"
        echo.close()                      # like kill -9 of the acceptor
        assert is_closed(sock)


def test_cluster_configs_route_every_link_through_the_proxy(proxy: FaultProxy,
                                                            tmp_path: Path) -> None:
    paths = write_proxied_cluster_configs(tmp_path, 5, proxy, seed=3)
    configs = {c.id: c for c in map(load_config, paths)}
    real = {node_id: str(c.raft_address) for node_id, c in configs.items()}
    for node_id, config in configs.items():
        port = config.raft_address.port
        assert NODE_PORT_RANGE[0] <= port <= NODE_PORT_RANGE[1]
        for peer in config.peers:
            seen = str(peer.raft_address)
            if real[node_id] > real[peer.id]:
                # this node dials: through the proxy, and it must still compare greater
                assert seen != real[peer.id] and real[node_id] > seen
            else:
                # the peer dials us: we must know its real (announced) address
                assert seen == real[peer.id]
    assert len(proxy.stats()) == 10      # one proxied link per pair
