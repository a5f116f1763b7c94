"""Linearizable reads served by followers return the latest acknowledged write."""
from __future__ import annotations

import threading
import time

import pytest

from consensus_store.launcher import LocalCluster

from .support import ClusterPool, followers, local_range, node_client, raw_post, wait_until


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3, name="linearizable")


def test_follower_linearizable_get_returns_the_write_just_acknowledged(
        cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    readers = {f: node_client(cluster, f) for f in followers(cluster, leader)}
    try:
        with node_client(cluster, leader) as writer:
            for i in range(40):
                writer.put("lin/seq", i)
                for follower, reader in readers.items():
                    kv = reader.get("lin/seq", consistency="linearizable")
                    assert kv is not None and kv.value == i, (
                        f"{follower} returned {kv and kv.value} after write {i} was acknowledged")
            writer.put("lin/other", "x")
            writer.delete("lin/other")
            for reader in readers.values():
                assert reader.get("lin/other", consistency="linearizable") is None
                result = reader.range("lin/", consistency="linearizable")
                assert [(kv.key, kv.value) for kv in result.kvs] == [("lin/seq", 39)]
    finally:
        for reader in readers.values():
            reader.close()


def test_linearizable_reads_never_older_than_a_write_acknowledged_before_they_began(
        cluster: LocalCluster) -> None:
    """Concurrent writer and follower readers: a read that started after write i was
    acknowledged returns i or later."""
    leader = cluster.wait_for_leader()
    key = "lin/concurrent"
    acked_at: list[tuple[float, int]] = []     # (monotonic ack time, value), in order
    lock = threading.Lock()
    stop = threading.Event()
    problems: list[str] = []

    def write() -> None:
        with node_client(cluster, leader) as client:
            for i in range(1, 201):
                if stop.is_set():
                    return
                client.put(key, i)
                with lock:
                    acked_at.append((time.monotonic(), i))

    def read(node_id: str) -> None:
        with node_client(cluster, node_id) as client:
            for _ in range(200):
                if stop.is_set():
                    return
                started = time.monotonic()
                with lock:
                    floor = max((v for t, v in acked_at if t < started), default=0)
                kv = client.get(key, consistency="linearizable")
                value = kv.value if kv else 0
                if value < floor:
                    problems.append(f"{node_id}: read {value} after {floor} was acknowledged")

    threads = [threading.Thread(target=write, daemon=True)]
    threads += [threading.Thread(target=read, args=(f,), daemon=True)
                for f in followers(cluster, leader)]
    deadline = time.monotonic() + 30.0
    for thread in threads:
        thread.start()
    threads[0].join(max(0.0, deadline - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join(max(1.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "load threads did not finish in time"
    assert not problems, problems[:5]
    assert len(acked_at) > 20


def test_linearizable_read_on_a_lagging_follower_is_not_stale(cluster_pool: ClusterPool) -> None:
    """Pause a follower, write, resume it: its very first linearizable read sees the write even
    though its local memory is behind at that moment."""
    cluster = cluster_pool.start(3, name="linearizable-lagging")
    leader = cluster.wait_for_leader()
    lagging = followers(cluster, leader)[0]
    with cluster.client() as client:
        client.put("lin/lag", "old")
    wait_until(lambda: local_range(cluster, lagging, "lin/lag").get("lin/lag") == "old", 5.0,
               what="follower has the old value")

    cluster.nodes[lagging].pause()
    try:
        with node_client(cluster, leader) as client:
            client.put("lin/lag", "new")
        result: dict = {}

        def read() -> None:
            try:
                result["response"] = raw_post(cluster, lagging, "/v1/kv/get",
                                              {"key": "lin/lag", "consistency": "linearizable",
                                               "timeout": 10}, timeout=20)
            except Exception as exc:  # noqa: BLE001 - reported below
                result["error"] = exc

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
    finally:
        cluster.nodes[lagging].resume()
    thread.join(25)
    assert not thread.is_alive()
    assert "error" not in result, result
    response = result["response"]
    assert response.status_code == 200, response.text
    assert response.json()["kv"]["value"] == "new"
    cluster.wait_for_leader()
