"""The raft port (issue #10): what a frame, a connection or a flood of them can do to a node.

Attacks on real node processes: a frame sealed with the right key that unpickles into
``os.mkdir`` (as the first frame and after a valid handshake), the same payload as a log
command forwarded to the leader, a 64 MiB frame to the leader,
connections that never authenticate, more of them than the cap, and a node run out of file
descriptors.  The attacker's frames are built here from peer_frames' primitives, the way anyone
holding the peer secret could build them.
"""
from __future__ import annotations

import os
import pickle
import resource
import socket
import struct
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from consensus_store.launcher import LocalCluster, NodeProcess
from consensus_store.node.engine.peer_frames import FrameOpener, FrameSealer, ask_raft_port, master_key
from integration.support import ClusterPool, node_client, wait_until

# The node's limits (peer_connection.PortLimits, defaults), restated: a test must not pass just
# because a constant changed with it.
HANDSHAKE_DEADLINE_S = 3.0
MAX_UNAUTHENTICATED = 32


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3, name="peer-port")


def raft_endpoint(node: NodeProcess) -> tuple[str, int]:
    address = node.config.raft_address
    return address.host, address.port


def seal_verbatim(sealer: FrameSealer, payload: bytes) -> bytes:
    """A frame whose sealed plaintext is ``payload`` as it is (FrameSealer.seal without its
    encoding; reaches into the sealer's key and counter, as an attacker's own code would)."""
    header = bytes((1,)) + sealer._salt if sealer._counter == 0 else b"\x00"
    sealed = sealer._aead.encrypt(sealer._counter.to_bytes(12, "big"), payload, header)
    sealer._counter += 1
    return struct.pack("<I", len(header) + len(sealed)) + header + sealed


def receive_message(sock: socket.socket, opener: FrameOpener) -> Any:
    buffer = b""
    while (opened := opener.open(buffer)) is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    return opened[0]


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the other side closes ``sock`` within ``timeout`` (anything it sends is read)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def is_closed_now(sock: socket.socket) -> bool:
    sock.setblocking(False)        # a socket with a timeout would wait for data first
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def rss_kib(node: NodeProcess) -> int:
    assert node.process is not None
    for line in Path(f"/proc/{node.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def leader_and_term(cluster: LocalCluster) -> tuple[str, int]:
    leader = cluster.wait_for_leader(timeout=20.0)
    with node_client(cluster, leader) as client:
        return leader, client.status(timeout=2.0).term


def assert_serves_writes(cluster: LocalCluster, key: str) -> None:
    with cluster.client(timeout=10.0) as client:
        client.put(key, "still serving")
    for node_id in cluster.nodes:
        with node_client(cluster, node_id, timeout=3.0) as client:
            wait_until(lambda: [kv.value for kv in client.range(key, consistency="local",
                                                                   timeout=2.0).kvs],
                       10.0, what=f"{key} on {node_id}")


class RunsCode:
    """Unpickling this calls os.mkdir(marker): the payload of the attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("when", ["first frame", "after the handshake"])
def test_a_sealed_pickle_runs_nothing_on_any_node(cluster: LocalCluster, tmp_path: Path,
                                                  when: str) -> None:
    marker = tmp_path / "payload-ran"
    for node in cluster.nodes.values():
        master = master_key(node.config.peer_secret)
        sealer, opener = FrameSealer(master), FrameOpener(master)
        with socket.create_connection(raft_endpoint(node), timeout=5.0) as sock:
            if when == "first frame":
                payload = pickle.dumps(RunsCode(marker), protocol=5)
            else:
                own_key = os.urandom(32)
                sock.sendall(sealer.seal(own_key))
                answer = receive_message(sock, opener)          # (own key, their key)
                assert answer[0] == own_key
                payload = pickle.dumps((answer[1], RunsCode(marker)), protocol=5)
            sock.sendall(seal_verbatim(sealer, payload))
            closed = closed_by_peer(sock, 5.0)
        assert not marker.exists(), f"the payload ran on {node.id}"
        assert closed, f"{node.id} kept the connection"
        assert node.alive
    assert_serves_writes(cluster, f"pickle-attack/{when}")


def test_a_log_command_that_would_run_code_never_reaches_the_log(cluster: LocalCluster,
                                                                 tmp_path: Path) -> None:
    # Frames are plain data, but pysyncobj unpickles log commands when it applies them: a
    # key holder that joins as a read-only node forwards one to the leader.
    marker = tmp_path / "payload-ran"
    node = cluster.nodes[cluster.wait_for_leader()]
    master = master_key(node.config.peer_secret)
    sealer, opener = FrameSealer(master), FrameOpener(master)
    command = b"\x00" + pickle.dumps((0, (RunsCode(marker),)), protocol=2)
    with socket.create_connection(raft_endpoint(node), timeout=5.0) as sock:
        own_key = os.urandom(32)
        sock.sendall(sealer.seal(own_key))
        their_key = receive_message(sock, opener)[1]
        sock.sendall(sealer.seal((their_key, "readonly")))
        sock.sendall(sealer.seal((their_key, {"type": "apply_command", "command": command,
                                              "request_id": 1})))
        closed = closed_by_peer(sock, 5.0)
    assert_serves_writes(cluster, "command-attack")    # applied after the payload would be
    assert not marker.exists(), "the payload ran"
    assert closed, "the node kept the connection"


@pytest.mark.parametrize("when", ["first frame", "after the handshake"])
def test_a_64_mib_frame_to_the_leader_is_refused_at_its_length(cluster: LocalCluster,
                                                               when: str) -> None:
    leader, term = leader_and_term(cluster)
    node = cluster.nodes[leader]
    rss_before = rss_kib(node)
    announced = 64 << 20
    junk = b"\x00" * (1 << 20)
    sent = 0
    with socket.create_connection(raft_endpoint(node), timeout=5.0) as sock:
        if when == "after the handshake":
            master = master_key(node.config.peer_secret)
            sealer = FrameSealer(master)
            sock.sendall(sealer.seal(os.urandom(32)))
            receive_message(sock, FrameOpener(master))
        started = time.monotonic()
        try:
            sock.sendall(struct.pack("<I", announced))
            while sent < announced:
                sock.sendall(junk)
                sent += len(junk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_by_peer(sock, 5.0)
        took = time.monotonic() - started
    # Refused from the length prefix: what went in before the reset is what the kernel's
    # buffers took, not the frame.
    assert sent < 16 << 20, f"the node took {sent >> 20} MiB of the frame ({took:.1f} s)"
    assert node.alive
    assert rss_kib(node) - rss_before < 32 * 1024, "the node's memory grew by the frame"
    assert leader_and_term(cluster) == (leader, term), "leadership changed"
    assert_serves_writes(cluster, f"big-frame/{when}")


@pytest.mark.parametrize("sends", [b"", struct.pack("<I", 100) + b"\x01" * 10],
                         ids=["nothing", "part of a first frame"])
def test_a_connection_that_does_not_authenticate_is_closed_at_the_deadline(
        cluster: LocalCluster, sends: bytes) -> None:
    node = cluster.nodes[cluster.wait_for_leader()]
    with socket.create_connection(raft_endpoint(node), timeout=5.0) as sock:
        sock.sendall(sends)
        started = time.monotonic()
        assert closed_by_peer(sock, HANDSHAKE_DEADLINE_S + 5.0), "still open"
        assert time.monotonic() - started > HANDSHAKE_DEADLINE_S - 1.0   # not at once
    assert node.alive


def test_connections_beyond_the_cap_are_closed_at_once_and_the_cluster_works_on(
        cluster: LocalCluster) -> None:
    leader, term = leader_and_term(cluster)
    node = cluster.nodes[leader]
    opened = 2 * MAX_UNAUTHENTICATED
    started = time.monotonic()
    sockets = [socket.create_connection(raft_endpoint(node), timeout=5.0)
               for _ in range(opened)]
    try:
        # Closed at accept: long before the first connection's handshake deadline.
        budget = started + HANDSHAKE_DEADLINE_S - 1.0 - time.monotonic()
        assert budget > 0, "opening the connections took longer than the deadline"
        wait_until(lambda: sum(map(is_closed_now, sockets)) >= opened - MAX_UNAUTHENTICATED,
                   budget, what="the connections beyond the cap closed")
        assert_serves_writes(cluster, "cap/while-full")
        assert leader_and_term(cluster) == (leader, term)
        wait_until(lambda: all(map(is_closed_now, sockets)), HANDSHAKE_DEADLINE_S + 5.0,
                   what="every unauthenticated connection closed after the deadline")
    finally:
        for sock in sockets:
            sock.close()
    address = node.config.raft_address
    assert ask_raft_port(address.host, address.port, node.config.peer_secret, ["status"], 5.0)


@pytest.fixture
def restore_limits() -> Iterator[list[tuple[int, tuple[int, int]]]]:
    saved: list[tuple[int, tuple[int, int]]] = []
    yield saved
    for pid, limits in saved:
        try:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        except ProcessLookupError:
            pass


def test_the_listener_survives_running_out_of_descriptors(
        cluster_pool: ClusterPool, restore_limits: list) -> None:
    cluster = cluster_pool.start(3, name="emfile")
    # The node with the lowest address: pysyncobj's other nodes dial it, it dials nobody.
    target = min(cluster.nodes.values(), key=lambda n: str(n.config.raft_address))
    pid = target.process.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    restore_limits.append((pid, limits))
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 6, limits[1]))
    flood = []
    try:
        for _ in range(20):            # more than it has descriptors for
            try:
                flood.append(socket.create_connection(raft_endpoint(target), timeout=1.0))
            except OSError:
                break                  # its accept queue is full: it stopped accepting
        wait_until(lambda: len(os.listdir(f"/proc/{pid}/fd")) >= in_use + 5, 5.0,
                   what="the node's descriptors used up")
        wait_until(lambda: "Too many open files" in target.log_path.read_text(), 5.0,
                   what="a log line about the failed accept")
    finally:
        for sock in flood:
            sock.close()
    resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
    # Its peers reconnect: restart each, so that each dials the node afresh.
    for peer in cluster.nodes.values():
        if peer is not target:
            peer.stop()
            peer.start()
    expected = {p.id for p in cluster.nodes.values() if p is not target}
    with node_client(cluster, target.id, timeout=3.0) as client:
        wait_until(lambda: set(client.status(timeout=2.0).connected_peers) == expected, 30.0,
                   what="both peers connected to the node again")
    leader = cluster.wait_for_leader(timeout=20.0)
    with node_client(cluster, leader, timeout=3.0) as client:
        assert target.id in {leader, *client.status(timeout=2.0).connected_peers}
    assert_serves_writes(cluster, "emfile/after")
    assert target.alive
