"""The native protocol against real node processes on 127.0.0.1: the blocking and asyncio
clients, pipelining from many threads and tasks, protocol errors, auth, and failover after a
kill -9.  Every wait polls a condition with a deadline."""
from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from consensus_store.client import AsyncClient, Client
from consensus_store.wire import FrameReader, decode, encode_auth, encode_request, frame
from consensus_store.config import load_config
from consensus_store.errors import (AuthError, CompareFailed, ConsensusStoreError,
                                    InvalidRequest, PayloadTooLarge)
from consensus_store.launcher import LocalCluster, write_cluster_configs

MAX_VALUE = 64 * 1024      # small limit so that oversized frames are cheap to send


def _deadline_wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (ConsensusStoreError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g}s")
        time.sleep(0.05)


def _launch(root: Path) -> tuple[LocalCluster, list[Path]]:
    paths = write_cluster_configs(root / "configs")
    for path in paths:
        path.write_text(path.read_text() + f"\n[limits]\nmax_value_bytes = {MAX_VALUE}\n")
    cluster = LocalCluster(paths, data_root=root / "data", log_dir=root / "logs")
    return cluster, paths


def _started(cluster: LocalCluster) -> LocalCluster:
    cluster.start()
    cluster.wait_for_leader(timeout=30)
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> LocalCluster:
    cluster, paths = _launch(tmp_path_factory.mktemp("native"))
    request.addfinalizer(cluster.stop)
    cluster.paths = paths   # type: ignore[attr-defined]
    return _started(cluster)


def native_endpoint(cluster: LocalCluster, node_id: str) -> str:
    return f"tcp://{cluster.nodes[node_id].config.native_address}"


def native_client(cluster: LocalCluster, first: str | None = None, **options: Any) -> Client:
    """A native client of every node, ``first`` preferred."""
    ids = sorted(cluster.nodes, key=lambda node_id: node_id != first)
    return Client([native_endpoint(cluster, i) for i in ids], token=cluster.token, **options)


# ---- raw protocol helpers ---------------------------------------------------------------------
class Raw:
    """One raw native connection (for protocol-level checks)."""

    def __init__(self, cluster: LocalCluster, node_id: str) -> None:
        address = cluster.nodes[node_id].config.native_address
        assert address is not None
        self.sock = socket.create_connection((address.host, address.port), timeout=10)
        self.frames = FrameReader()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answers(self, count: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while len(got) < count:
            while (payload := self.frames.next()) is not None:
                got.append(decode(payload))
            if len(got) >= count:
                break
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"closed after {len(got)} answers")
            self.frames.feed(data)
        return got

    def closed_by_node(self) -> bool:
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


# ---- tests --------------------------------------------------------------------------------------
def test_from_config_prefers_the_native_protocol(cluster: LocalCluster) -> None:
    path = cluster.paths[0]   # type: ignore[attr-defined]
    with Client.from_config(path) as client:
        assert all(e.startswith("tcp://") for e in client.endpoints)
        assert client.endpoints == load_config(path).native_endpoints
        client.put("native/from_config", 1)
    with Client.from_config(path, protocol="http") as client:
        assert all(e.startswith("http://") for e in client.endpoints)
        assert client.get("native/from_config").value == 1
    with pytest.raises(InvalidRequest):
        Client.from_config(path, protocol="carrier-pigeon")


def test_every_operation_over_native(cluster: LocalCluster) -> None:
    with native_client(cluster) as client:
        first = client.put("native/ops/a", {"n": 1, "s": "é"})
        assert first.value == {"n": 1, "s": "é"} and first.version == 1
        assert client.get("native/ops/a") == first
        assert client.get("native/ops/missing") is None
        assert client.get("native/ops/a", consistency="linearizable") == first
        assert client.get("native/ops/a", consistency="local").value == first.value

        second = client.cas("native/ops/a", 2, expect_value={"n": 1, "s": "é"})
        assert (second.value, second.version) == (2, 2)
        with pytest.raises(CompareFailed) as caught:
            client.cas("native/ops/a", 3, expect_mod_revision=first.mod_revision)
        assert caught.value.current == second  # type: ignore[attr-defined]
        created = client.cas("native/ops/b", "new", expect_mod_revision=0)
        assert created.version == 1

        txn = client.txn(compare=[{"key": "native/ops/a", "target": "value", "value": 2}],
                         success=[{"op": "put", "key": "native/ops/c", "value": [1, 2]},
                                  {"op": "get", "key": "native/ops/b"}],
                         failure=[{"op": "put", "key": "native/ops/c", "value": "no"}])
        assert txn.succeeded and txn.results[1]["kv"]["value"] == "new"
        assert txn.revision >= created.mod_revision

        result = client.range("native/ops/", consistency="linearizable")
        assert [kv.key for kv in result.kvs] == ["native/ops/a", "native/ops/b", "native/ops/c"]
        limited = client.range("native/ops/", limit=2)
        assert len(limited.kvs) == 2 and limited.count == 3 and limited.more

        assert client.delete("native/ops/a") is True
        assert client.delete("native/ops/a") is False
        assert client.delete_prefix("native/ops/") == 2
        assert client.range("native/ops/").count == 0

        status = client.status()
        assert status.endpoint == client.endpoints[0] and status.applied_index > 0
        assert {s.id for s in client.cluster_status()} == set(cluster.nodes)
        assert client.seen_index >= status.applied_index - 5

        with pytest.raises(InvalidRequest):
            client.put("", 1)
        with pytest.raises(InvalidRequest):
            client.get("native/ops/a", consistency="eventual")


def test_size_limits_over_native(cluster: LocalCluster) -> None:
    with native_client(cluster) as client:
        with pytest.raises(PayloadTooLarge):            # the service's own value check
            client.put("native/big", "x" * (MAX_VALUE + 10))
        with pytest.raises(PayloadTooLarge):            # the frame itself is over the limit
            client.put("native/big", "x" * (MAX_VALUE + 70 * 1024))
        assert client.put("native/big", "fits").value == "fits"   # reconnected


def test_session_reads_see_own_writes_through_a_follower(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = next(n for n in sorted(cluster.nodes) if n != leader)
    with Client([native_endpoint(cluster, follower)], token=cluster.token) as client:
        for i in range(30):
            client.put("native/session", i)
            assert client.get("native/session").value == i


def test_64_threads_pipeline_on_one_connection(cluster: LocalCluster) -> None:
    threads, per_thread = 64, 15
    errors: list[BaseException] = []
    with native_client(cluster) as client:
        start = threading.Barrier(threads)

        def work(t: int) -> None:
            try:
                start.wait(10)
                for i in range(per_thread):
                    kv = client.put(f"native/threads/{t:02d}/{i:02d}", [t, i])
                    assert kv.value == [t, i]
                    assert client.get(f"native/threads/{t:02d}/{i:02d}").value == [t, i]
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert not errors, errors[:3]
        assert not any(w.is_alive() for w in workers)
        assert client.range("native/threads/", consistency="linearizable").count == \
            threads * per_thread
        links = [e.link for e in client._transports["tcp"]._endpoints.values()]
        assert sum(link is not None and link.alive for link in links) == 1


def test_async_client_gathers_64_puts(cluster: LocalCluster) -> None:
    path = cluster.paths[0]   # type: ignore[attr-defined]

    async def scenario(protocol: str, count: int) -> None:
        async with AsyncClient.from_config(path, protocol=protocol) as client:
            prefix = f"native/async/{protocol}/"
            kvs = await asyncio.gather(*(client.put(f"{prefix}{i:02d}", i) for i in range(count)))
            assert [kv.value for kv in kvs] == list(range(count))
            gets = await asyncio.gather(*(client.get(f"{prefix}{i:02d}") for i in range(count)))
            assert [kv.value for kv in gets] == list(range(count))  # type: ignore[union-attr]
            assert (await client.range(prefix)).count == count
            assert (await client.cas(f"{prefix}00", "x", expect_value=0)).value == "x"
            with pytest.raises(CompareFailed):
                await client.cas(f"{prefix}00", "y", expect_value=0)
            txn = await client.txn([{"key": f"{prefix}01", "value": 1}],
                                   [{"op": "delete", "key": f"{prefix}01"}])
            assert txn.succeeded and await client.get(f"{prefix}01") is None
            assert await client.delete(f"{prefix}02") is True
            assert await client.delete_prefix(prefix) == count - 2
            assert (await client.status()).id in cluster.nodes
            assert (await client.wait_for_leader(10)).role.value == "leader"

    asyncio.run(scenario("native", 64))
    asyncio.run(scenario("http", 16))


def test_bad_frames_get_400_and_the_node_stays_up(cluster: LocalCluster) -> None:
    raw = Raw(cluster, "n1")
    try:
        raw.send(encode_auth(cluster.token))
        assert raw.answers(1)[0]["status"] == 200
        raw.send(frame(b"{nope") + frame(b'"a string"') + frame(b'{"op":"get","key":"k"}')
                 + encode_request(5, "frobnicate", {}) + frame(b'{"id":6}')
                 + encode_request(7, "get", {"key": "native/raw"}))
        answers = raw.answers(6)
        assert [(a["id"], a["status"]) for a in answers] == [
            (None, 400), (None, 400), (None, 400), (5, 400), (6, 400), (7, 200)]
        assert all(a["body"]["error"] == "invalid_request" for a in answers[:5])
        assert all(a["body"]["header"]["node"] == "n1" for a in answers)

        # over the frame limit: 413 naming the request, then the node hangs up
        raw.send(encode_request(8, "put", {"key": "k", "value": "x" * (MAX_VALUE + 70 * 1024)}))
        [error] = raw.answers(1)
        assert (error["id"], error["status"], error["body"]["error"]) == (
            8, 413, "payload_too_large")
        assert raw.closed_by_node()
    finally:
        raw.close()
    assert cluster.nodes["n1"].alive
    with Client([native_endpoint(cluster, "n1")], token=cluster.token) as client:
        assert client.put("native/raw/after", 1).value == 1


def test_client_gone_mid_request_leaves_the_node_serving(cluster: LocalCluster) -> None:
    raw = Raw(cluster, "n2")
    raw.send(encode_auth(cluster.token) + b"".join(
        encode_request(i, "put", {"key": f"native/gone/{i}", "value": i}) for i in range(1, 50))
        + encode_request(50, "put", {"key": "native/gone/half", "value": "x" * 1000})[:300])
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()                                        # RST, with requests in flight
    with native_client(cluster, first="n2") as client:
        assert client.put("native/gone/after", 1).value == 1
        _deadline_wait(lambda: client.range("native/gone/", consistency="linearizable").count
                       >= 2, 10, "writes of the vanished client applied")
    assert cluster.nodes["n2"].alive


def test_wrong_token_is_an_auth_error(cluster: LocalCluster) -> None:
    started = time.monotonic()
    with Client([native_endpoint(cluster, "n1")], token="wrong-token-wrong-token") as client:
        with pytest.raises(AuthError):
            client.put("native/auth", 1)
    with Client([native_endpoint(cluster, "n1")]) as client:   # no token at all
        with pytest.raises(AuthError):
            client.get("native/auth")

    async def scenario() -> None:
        async with AsyncClient([native_endpoint(cluster, "n2")], token="nope" * 5) as client:
            with pytest.raises(AuthError):
                await client.put("native/auth", 1)
    asyncio.run(scenario())
    assert time.monotonic() - started < 5              # not retried

    raw = Raw(cluster, "n3")                           # a request before auth
    try:
        raw.send(encode_request(1, "get", {"key": "k"}))
        [answer] = raw.answers(1)
        assert (answer["id"], answer["status"]) == (1, 401)
        assert raw.closed_by_node()
    finally:
        raw.close()


def test_writes_continue_when_the_node_the_client_uses_is_killed(tmp_path: Path,
                                                                request: pytest.FixtureRequest
                                                                ) -> None:
    cluster, _ = _launch(tmp_path)
    request.addfinalizer(cluster.stop)
    leader = _started(cluster).wait_for_leader()
    acked: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    client = native_client(cluster, first=leader, timeout=20.0)
    request.addfinalizer(client.close)
    counter = itertools.count()

    def writer() -> None:
        while not stop.is_set():
            key = f"failover/{next(counter):06d}"
            try:
                client.put(key, key)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            acked.append(key)

    writers = [threading.Thread(target=writer) for _ in range(8)]
    for thread in writers:
        thread.start()
    try:
        _deadline_wait(lambda: len(acked) >= 100, 20, "100 writes before the kill")
        assert client.preferred_endpoint == native_endpoint(cluster, leader)
        cluster.nodes[leader].kill()                   # kill -9 the node the client talks to
        at_kill = len(acked)
        _deadline_wait(lambda: len(acked) >= at_kill + 200 or errors, 30,
                       "200 more writes after the kill")
    finally:
        stop.set()
        for thread in writers:
            thread.join(30)
    assert not errors, errors[:3]
    assert client.preferred_endpoint != native_endpoint(cluster, leader)
    survivors = [n for n in sorted(cluster.nodes) if n != leader]
    with Client([native_endpoint(cluster, n) for n in survivors], token=cluster.token) as check:
        stored = {kv.key for kv in check.range("failover/", consistency="linearizable").kvs}
    assert set(acked) <= stored
