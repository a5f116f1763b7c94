"""Session reads: read-your-writes and monotonic reads across nodes.

The protocol: every answer carries ``header.applied_index``; a session read sent with
``min_index=N`` is served only once that replica applied N, or fails with 503 after a bounded wait.
The ``Client`` sends the highest index it has seen as ``min_index``.

The shared cluster has ``limits.session_read_wait_s = 1``; tests that pause (SIGSTOP) a follower
to make it lag own their cluster.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from consensus_store.client import Client
from consensus_store.launcher import LocalCluster

from .support import (ClusterPool, followers, local_range, node_client, prefer_endpoint, raw_post,
                      wait_until)

SESSION_WAIT_S = 1.0


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3, name="session",
                             extra_toml=f"[limits]\nsession_read_wait_s = {SESSION_WAIT_S}")


def _run_threads(count: int, target: Any, timeout: float) -> None:
    threads = [threading.Thread(target=target, args=(t,), daemon=True) for t in range(count)]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"load threads still running after {timeout}s"


WRITERS = 4            # concurrent sessions: several entries per apply batch on the nodes
WRITES_PER_WRITER = 40


def test_session_get_with_min_index_sees_the_write_on_every_other_node(
        cluster: LocalCluster) -> None:
    """Protocol: a put via A answers header.applied_index=N; a session get on B with
    min_index=N returns the new value.  N must therefore cover the write itself."""
    nodes = list(cluster.nodes)
    pairs = [(nodes[i], nodes[(i + 1) % len(nodes)]) for i in range(len(nodes))]
    header_behind: list[str] = []
    stale: list[str] = []
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {cluster.token}"}

    def session(thread: int) -> None:
        try:
            with httpx.Client(headers=headers, timeout=10) as http:
                for writer, reader in pairs:
                    for i in range(WRITES_PER_WRITER):
                        key = f"session/ryw/{writer}-{reader}/{thread}/{i}"
                        put = http.post(cluster.nodes[writer].endpoint + "/v1/kv/put",
                                        json={"key": key, "value": i})
                        assert put.status_code == 200, put.text
                        body = put.json()
                        applied = body["header"]["applied_index"]
                        written_at = body["kv"]["mod_revision"]
                        if applied < written_at:
                            header_behind.append(f"{key}: written at {written_at}, "
                                                 f"header.applied_index {applied}")
                        get = http.post(cluster.nodes[reader].endpoint + "/v1/kv/get",
                                        json={"key": key, "consistency": "session",
                                              "min_index": applied, "timeout": 5})
                        assert get.status_code == 200, get.text
                        got = get.json()
                        assert got["header"]["node"] == reader
                        if got["kv"] is None or got["kv"]["value"] != i:
                            stale.append(f"{key}: written via {writer} at {written_at}, "
                                         f"{reader} answered {got['kv']} with min_index={applied}")
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(repr(exc))

    _run_threads(WRITERS, session, 60.0)
    assert not failures, failures[:3]
    total = WRITERS * WRITES_PER_WRITER * len(pairs)
    assert not stale, f"{len(stale)}/{total} session reads missed the write: {stale[:3]}"
    assert not header_behind, (f"{len(header_behind)}/{total} write answers report an "
                               f"applied_index below the write's own index: {header_behind[:3]}")


def test_session_read_beyond_the_log_fails_with_503_after_a_bounded_wait(
        cluster: LocalCluster) -> None:
    node = next(iter(cluster.nodes))
    far = 10**9
    cases: list[tuple[str, dict[str, Any], float]] = [
        ("/v1/kv/get", {"key": "session/none", "timeout": 0.3}, 0.3),          # body timeout
        ("/v1/kv/get", {"key": "session/none"}, SESSION_WAIT_S),              # node's limit
        ("/v1/kv/get", {"key": "session/none", "timeout": 60}, SESSION_WAIT_S),
        ("/v1/kv/range", {"prefix": "session/", "timeout": 0.3}, 0.3),
    ]
    for path, body, expected_wait in cases:
        started = time.monotonic()
        response = raw_post(cluster, node, path,
                            {**body, "consistency": "session", "min_index": far}, timeout=15)
        elapsed = time.monotonic() - started
        assert response.status_code == 503, (body, response.text)
        answer = response.json()
        assert answer["error"] == "unavailable", answer
        assert str(far) in answer["message"]
        assert answer["header"]["applied_index"] < far
        assert expected_wait * 0.9 <= elapsed < expected_wait + 2.5, (body, elapsed)

    # A local read ignores min_index, and the node is fine afterwards.
    response = raw_post(cluster, node, "/v1/kv/get",
                        {"key": "session/none", "consistency": "local", "min_index": far})
    assert response.status_code == 200 and response.json()["kv"] is None
    with node_client(cluster, node) as client:
        assert client.put("session/after-503", 1).value == 1


def test_client_read_your_writes_when_switching_nodes(cluster: LocalCluster) -> None:
    """Each session writes via the leader, then (as after a failover) reads via a follower."""
    leader = cluster.wait_for_leader()
    others = followers(cluster, leader)
    stale: list[str] = []
    seen_behind: list[str] = []
    failures: list[str] = []

    def session(thread: int) -> None:
        other = others[thread % len(others)]
        endpoints = [cluster.nodes[leader].endpoint, cluster.nodes[other].endpoint]
        try:
            with Client(endpoints, token=cluster.token, timeout=10) as client:
                prefer_endpoint(client, 1, verify=True)
                for i in range(WRITES_PER_WRITER):
                    key = f"session/switch/{thread}/{i}"
                    prefer_endpoint(client, 0)          # write via the leader
                    kv = client.put(key, i)
                    if client.seen_index < kv.mod_revision:
                        seen_behind.append(f"{key}: written at {kv.mod_revision}, "
                                           f"seen_index {client.seen_index}")
                    prefer_endpoint(client, 1)          # what failover does: next node
                    got = client.get(key)
                    if got is None or got.value != i:
                        stale.append(f"{key}: {other} answered {got} after the write at "
                                     f"{kv.mod_revision} (seen_index {client.seen_index})")
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(repr(exc))

    _run_threads(WRITERS, session, 60.0)
    assert not failures, failures[:3]
    total = WRITERS * WRITES_PER_WRITER
    assert not stale, f"read-your-writes broken in {len(stale)}/{total} reads: {stale[:3]}"
    assert not seen_behind, (f"{len(seen_behind)}/{total} puts left the client's seen_index "
                             f"below the write's index: {seen_behind[:3]}")


def test_client_monotonic_reads_across_nodes_under_writes(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    readers = followers(cluster, leader) + [leader]
    key = "session/monotonic"
    stop = threading.Event()
    writes: list[int] = []

    def write_counter() -> None:
        with node_client(cluster, leader) as writer:
            for i in range(1, 301):                    # bounded in count ...
                if stop.is_set():
                    return
                writer.put(key, i)
                writes.append(i)

    thread = threading.Thread(target=write_counter, daemon=True)
    endpoints = [cluster.nodes[n].endpoint for n in readers]
    observed: list[tuple[int, int, int]] = []      # (value, seen_index after, endpoint index)
    deadline = time.monotonic() + 20.0              # ... and in time
    thread.start()
    try:
        with Client(endpoints, token=cluster.token, timeout=5.0) as client:
            prefer_endpoint(client, 1, verify=True)
            for i in range(600):
                if time.monotonic() > deadline or (not thread.is_alive() and i > 50):
                    break
                prefer_endpoint(client, i % len(endpoints))   # every read from another node
                kv = client.get(key)
                observed.append((kv.value if kv else 0, client.seen_index, i % len(endpoints)))
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
    assert len(observed) > 50 and writes
    values = [v for v, _, _ in observed]
    seen = [s for _, s, _ in observed]
    assert seen == sorted(seen), "the client's seen_index went backwards"
    regressions = [(a, b) for a, b in zip(observed, observed[1:]) if b[0] < a[0]]
    assert not regressions, f"monotonic reads broken (value, seen_index, node): {regressions[:5]}"
    assert max(values) > 0


def test_read_answers_report_an_applied_index_covering_what_they_return(
        cluster: LocalCluster) -> None:
    """A read's header.applied_index is what a client sends as min_index next time (maybe to
    another node), so it must be at least the mod_revision of every record in the answer."""
    leader = cluster.wait_for_leader()
    writers_via = followers(cluster, leader) + [leader]
    headers = {"Authorization": f"Bearer {cluster.token}"}
    stop = threading.Event()
    behind: list[str] = []
    failures: list[str] = []
    reads = [0]

    def write(thread: int) -> None:
        node = writers_via[thread % len(writers_via)]
        try:
            with httpx.Client(headers=headers, timeout=10) as http:
                for i in range(150):
                    if stop.is_set():
                        return
                    http.post(cluster.nodes[node].endpoint + "/v1/kv/put",
                              json={"key": f"session/hot/{thread % 2}", "value": i})
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(repr(exc))

    def read(thread: int) -> None:
        node = list(cluster.nodes)[thread % len(cluster.nodes)]
        try:
            with httpx.Client(headers=headers, timeout=10) as http:
                for i in range(600):
                    if stop.is_set():
                        return
                    if i % 2:
                        answer = http.post(cluster.nodes[node].endpoint + "/v1/kv/get",
                                           json={"key": "session/hot/0",
                                                 "consistency": "session"}).json()
                        records = [answer["kv"]] if answer["kv"] else []
                    else:
                        answer = http.post(cluster.nodes[node].endpoint + "/v1/kv/range",
                                           json={"prefix": "session/hot/",
                                                 "consistency": "session"}).json()
                        records = answer["kvs"]
                    reads[0] += 1
                    newest = max((r["mod_revision"] for r in records), default=0)
                    if newest > answer["header"]["applied_index"]:
                        behind.append(f"{node}: record at {newest}, header.applied_index "
                                      f"{answer['header']['applied_index']}")
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(repr(exc))

    threads = [threading.Thread(target=write, args=(t,), daemon=True) for t in range(4)]
    threads += [threading.Thread(target=read, args=(t,), daemon=True) for t in range(3)]
    deadline = time.monotonic() + 60.0
    for thread in threads:
        thread.start()
    for thread in threads[:4]:
        thread.join(max(0.1, deadline - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "load threads still running"
    assert not failures, failures[:3]
    assert not behind, (f"{len(behind)}/{reads[0]} read answers report an applied_index below "
                        f"a record they return: {behind[:3]}")


def _paused_read(cluster: LocalCluster, paused: str, request: Any) -> Any:
    """Run ``request()`` in a thread while ``paused`` is stopped, then resume it; its result."""
    result: dict[str, Any] = {}
    sending = threading.Event()

    def run() -> None:
        sending.set()
        try:
            result["value"] = request()
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert sending.wait(5)
    cluster.nodes[paused].resume()
    thread.join(20)
    assert not thread.is_alive(), "read did not finish"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_session_read_on_a_lagging_follower_waits_for_min_index(cluster_pool: ClusterPool) -> None:
    """A follower that missed a write (SIGSTOP) must not answer a session read with stale data."""
    cluster = cluster_pool.start(3, name="session-lagging")
    leader = cluster.wait_for_leader()
    lagging = followers(cluster, leader)[0]
    key = "session/lagging"
    with cluster.client() as client:
        client.put(key, "old")
    wait_until(lambda: local_range(cluster, lagging, key).get(key) == "old", 5.0,
               what="follower has the old value")

    # 1. The HTTP protocol: min_index from the write's answer.
    cluster.nodes[lagging].pause()
    response = raw_post(cluster, leader, "/v1/kv/put", {"key": key, "value": "new"})
    assert response.status_code == 200, response.text
    applied = response.json()["header"]["applied_index"]
    answer = _paused_read(cluster, lagging, lambda: raw_post(
        cluster, lagging, "/v1/kv/get",
        {"key": key, "consistency": "session", "min_index": applied, "timeout": 10}, timeout=20))
    assert answer.status_code == 200, answer.text
    assert answer.json()["kv"]["value"] == "new", "stale session read from a lagging follower"
    assert answer.json()["header"]["applied_index"] >= applied
    cluster.wait_for_leader()

    # 2. The Python client: write via the leader, then read through the lagging follower.
    leader = cluster.wait_for_leader()
    lagging = followers(cluster, leader)[0]
    endpoints = [cluster.nodes[leader].endpoint, cluster.nodes[lagging].endpoint]
    with Client(endpoints, token=cluster.token, timeout=15) as client:
        cluster.nodes[lagging].pause()
        client.put(key, "newer")
        prefer_endpoint(client, 1)         # the next request goes to the paused follower
        kv = _paused_read(cluster, lagging, lambda: client.get(key))
    assert kv is not None and kv.value == "newer", "client session read returned stale data"
    cluster.wait_for_leader()
