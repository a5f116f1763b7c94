"""Issue #10 item 6: resource limits of the replicated state, against real node processes.

The attacks as measured on a live cluster: a 31 KB txn of 1,000 ``range ""`` ops over 500 keys
(~100 MB on every replica, a 39 MB answer); 100 puts of 512 KiB to one key keeping 100 MiB alive
and a 50 MiB snapshot for 0.5 MiB of live data; and every count (sessions, groups, members,
names, lock waiters, candidates) growing without bound.  RSS is read from /proc/PID/status.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest

from consensus_store.errors import LimitExceeded
from consensus_store.launcher import LocalCluster
from consensus_store.node.engine.storage import SNAPSHOT_NAME
from integration.support import ClusterPool, raw_post, wait_converged, wait_until

MIB = 1024 * 1024
SMALL_LIMITS = """
[limits]
max_sessions = 4
max_groups = 2
max_members_per_group = 2
max_members = 3
max_names = 1
max_lock_waiters_per_lock = 2
max_lock_waiters = 3
max_candidates_per_election = 1
max_range_keys = 50
max_range_bytes = 20000
"""


def rss_bytes(cluster: LocalCluster) -> dict[str, int]:
    """Resident memory of every node process."""
    sizes = {}
    for node_id, node in cluster.nodes.items():
        status = Path(f"/proc/{node.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        sizes[node_id] = int(line.split()[1]) * 1024
    return sizes


def grew(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    return {node_id: round((after[node_id] - before[node_id]) / MIB, 1) for node_id in before}


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3)


@pytest.fixture(scope="module")
def small(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3, extra_toml=SMALL_LIMITS)


def _fill(cluster: LocalCluster, prefix: str, count: int) -> None:
    with cluster.client(timeout=20) as client:
        for start in range(0, count, 100):
            client.txn(success=[{"op": "put", "key": f"{prefix}{i:04d}", "value": "v" * 60}
                                for i in range(start, min(count, start + 100))])


# ---- txn ----------------------------------------------------------------------------------------
def test_the_txn_of_1000_ranges_is_refused_and_no_replica_grows(cluster: LocalCluster) -> None:
    _fill(cluster, "r/", 500)
    wait_converged(cluster)
    before = rss_bytes(cluster)
    body = {"success": [{"op": "range", "prefix": ""}] * 1000}
    leader = cluster.wait_for_leader()
    answer = raw_post(cluster, leader, "/v1/kv/txn", body, timeout=60)
    assert answer.status_code == 400, answer.text[:200]
    assert answer.json()["error"] == "invalid_request"
    assert "at most 128" in answer.json()["message"]
    growth = grew(before, rss_bytes(cluster))
    assert max(growth.values()) < 8, growth


def test_a_txn_s_reads_are_bounded_in_apply(cluster: LocalCluster) -> None:
    _fill(cluster, "r/", 500)
    wait_converged(cluster)
    before = rss_bytes(cluster)
    body = {"success": [{"op": "range", "prefix": ""}] * 128}   # the most a txn may hold
    answer = raw_post(cluster, cluster.wait_for_leader(), "/v1/kv/txn", body, timeout=60)
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert sum(len(r["kvs"]) for r in results) <= 10_000          # not 128 x 500
    assert results[-1]["more"] is True and results[-1]["count"] >= 500
    assert len(answer.content) < 5 * MIB
    wait_converged(cluster)
    growth = grew(before, rss_bytes(cluster))
    assert max(growth.values()) < 20, growth


# ---- memory bounded by live data ----------------------------------------------------------------
def test_big_overwrites_keep_memory_and_snapshot_near_the_live_size(
        cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(3, raft_table={"log_compaction_max_bytes": 4 * MIB})
    leader = cluster.wait_for_leader()
    with cluster.client(timeout=30) as client:
        client.put("warm", "up")
    wait_converged(cluster)
    before = rss_bytes(cluster)
    for i in range(100):        # 100 puts of 512 KiB (incompressible) to one key, at most once
        value = base64.b64encode(os.urandom(384 * 1024)).decode()
        body = {"key": "big", "value": value, "client_id": "overwriter", "request_id": i + 1}
        wait_until(lambda: raw_post(cluster, leader, "/v1/kv/put", body, timeout=30).is_success,
                   60.0, what=f"put {i} answered")     # a retry is safe: same request id
    with cluster.client(timeout=30) as client:
        for i in range(20):     # small writes: the log moves past the big ones
            client.put(f"small/{i}", i)
    wait_converged(cluster)
    snapshots = {node_id: node.data_dir / SNAPSHOT_NAME
                 for node_id, node in cluster.nodes.items()}
    sizes: dict[str, int] = {}

    def snapshots_small() -> bool:
        sizes.update({node_id: path.stat().st_size for node_id, path in snapshots.items()})
        return max(sizes.values()) < 2 * MIB     # live 0.5 MiB (+ the last entry, pysyncobj's)

    try:
        wait_until(snapshots_small, 20.0, what="every snapshot near the live data size")
    except AssertionError:
        raise AssertionError(f"snapshot bytes {sizes}") from None
    growth = grew(before, rss_bytes(cluster))
    print(f"snapshot bytes {sizes}, RSS growth MiB {growth}")
    # Live data 0.5 MiB; the watch history keeps up to 16 MiB by default; the rest is slack for
    # the allocator and the raft log between compactions.  Before: +100-150 MiB per node.
    assert max(growth.values()) < 45, (growth, sizes)



# ---- range replies ------------------------------------------------------------------------------
def test_a_range_read_is_cut_and_says_more(small: LocalCluster) -> None:
    _fill(small, "m/", 120)
    wait_converged(small)
    for node_id in small.nodes:
        answer = raw_post(small, node_id, "/v1/kv/range",
                          {"prefix": "m/", "consistency": "local"}).json()
        assert len(answer["kvs"]) == 50 and answer["count"] == 120 and answer["more"] is True
    with small.client() as client:
        result = client.range("m/")
        assert len(result.kvs) == 50 and result.more
        assert not client.range("m/", limit=5).kvs[5:] and client.range("m/0000").more is False
        client.put("m/0000big", "b" * 30_000)      # past max_range_bytes alone
        assert [kv.key for kv in client.range("m/0000big").kvs] == ["m/0000big"]  # one fits
        cut = client.range("m/")
        assert [kv.key for kv in cut.kvs] == ["m/0000"] and cut.more   # the bytes cut it


# ---- counts -------------------------------------------------------------------------------------
def test_groups_beyond_the_limit_get_429(small: LocalCluster) -> None:
    leader = small.wait_for_leader()
    for group in ("g1", "g2"):
        assert raw_post(small, leader, "/v1/groups/create", {"group": group}).status_code == 200
    refused = raw_post(small, leader, "/v1/groups/create", {"group": "g3"})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "limit_exceeded"
    assert refused.json()["limit"] == "max_groups"
    follower = next(n for n in small.nodes if n != leader)   # the same through any node
    assert raw_post(small, follower, "/v1/groups/create", {"group": "g4"}).status_code == 429


def test_sessions_members_names_locks_and_candidates_are_bounded(small: LocalCluster) -> None:
    with small.client(timeout=10) as client:
        one, two = client.session(ttl=30), client.session(ttl=30)
        try:
            request = client._request
            for member in ("a", "b"):
                request("group_join", {"group": "g1", "member": member, **one.auth}, None)
            with pytest.raises(LimitExceeded, match="max_members_per_group"):
                request("group_join", {"group": "g1", "member": "c", **one.auth}, None)
            request("group_join", {"group": "g2", "member": "a", **two.auth}, None)
            with pytest.raises(LimitExceeded, match="max_members"):
                request("group_join", {"group": "g2", "member": "b", **two.auth}, None)
            assert request("name_register", {"name": "n1", **one.auth}, None)["registered"]
            with pytest.raises(LimitExceeded, match="max_names"):
                request("name_register", {"name": "n2", **one.auth}, None)
            for _ in range(2):
                request("lock_acquire", {"name": "l1", **one.auth}, None)
            with pytest.raises(LimitExceeded, match="max_lock_waiters_per_lock"):
                request("lock_acquire", {"name": "l1", **two.auth}, None)
            request("lock_acquire", {"name": "l2", **two.auth}, None)
            with pytest.raises(LimitExceeded, match="max_lock_waiters"):
                request("lock_acquire", {"name": "l3", **two.auth}, None)
            request("election_campaign", {"name": "e", "member": "a", **one.auth}, None)
            with pytest.raises(LimitExceeded, match="max_candidates_per_election"):
                request("election_campaign", {"name": "e", "member": "b", **two.auth}, None)
            extra = [client.session(ttl=30) for _ in range(2)]       # 4 sessions in all
            with pytest.raises(LimitExceeded, match="max_sessions") as caught:
                client.session(ttl=30)
            assert caught.value.http_status == 429
            for session in extra:
                session.close()
        finally:
            one.close()
            two.close()
        client.session(ttl=30).close()           # room again once sessions ended
    digests = {httpx.get(node.endpoint + "/v1/digest", timeout=10,
                         headers={"Authorization": f"Bearer {small.token}"}).json()["digest"]
               for node in small.nodes.values()}
    assert len(wait_converged(small)) == 3 and len(digests) <= 3
