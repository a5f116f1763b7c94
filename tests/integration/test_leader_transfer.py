"""Leader transfer with real node processes: to a named node or any, refusals, the CLI, and
SIGTERM of the leader handing leadership over.

Each test owns its cluster (it stops nodes).  The clusters run with long election timeouts
(2-3 s), so that a pause caused by an election (the next leader waits for its election
deadline) and one caused by a handover (a round trip or two) are far apart on a noisy machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from consensus_store.client import RetryPolicy
from consensus_store.errors import ConsensusStoreError, InvalidRequest
from consensus_store.launcher import LocalCluster

from .support import ClusterPool, followers, local_range, raw_post, wait_until

CLI = [sys.executable, "-m", "consensus_store"]

SLOW_ELECTIONS = {"election_timeout_min_s": 2.0, "election_timeout_max_s": 3.0,
                  "connection_timeout_s": 3.0, "leader_fallback_timeout_s": 2.0}
ELECTION_TIMEOUT_MIN_S = SLOW_ELECTIONS["election_timeout_min_s"]
HANDOVER_PAUSE_BOUND_S = 1.5     # a handover measured 0.1-0.25 s here; an election >= 2 s
FAST_RETRY = RetryPolicy(max_tries=400, backoff_s=0.01, max_backoff_s=0.05)
MAX_WRITES, MAX_WRITER_SECONDS = 5000, 60.0


class Writer(threading.Thread):
    """Unique keys, one at a time; remembers which were acknowledged and when."""

    def __init__(self, cluster: LocalCluster, prefix: str) -> None:
        super().__init__(name=f"writer-{prefix}", daemon=True)
        self.client = cluster.client(retry=FAST_RETRY, timeout=15.0)
        self.prefix = prefix
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.acked: list[tuple[str, float]] = []

    def run(self) -> None:
        started = time.monotonic()
        for i in range(MAX_WRITES):
            if self.stop_event.is_set() or time.monotonic() - started > MAX_WRITER_SECONDS:
                break
            key = f"{self.prefix}{i:05d}"
            try:
                self.client.put(key, i, timeout=15.0)
            except ConsensusStoreError:
                continue
            with self.lock:
                self.acked.append((key, time.monotonic()))
        self.client.close()

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def finish(self) -> dict[str, float]:
        self.stop_event.set()
        self.join(30)
        assert not self.is_alive()
        return dict(self.acked)


def terms(cluster: LocalCluster) -> dict[str, int]:
    with cluster.client() as client:
        return {s.id: s.term for s in client.cluster_status(timeout=1.0) if s.term}


def test_sigterm_of_the_leader_hands_over_without_an_election_timeout(
        cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(3, name="handover", raft_table=SLOW_ELECTIONS)
    old_leader = cluster.wait_for_leader(timeout=30)
    term_before = max(terms(cluster).values())
    writer = Writer(cluster, "handover/")
    writer.start()
    wait_until(lambda: writer.count() >= 50, 30.0, what="writes before the stop")
    stop_began = time.monotonic()
    assert cluster.nodes[old_leader].stop() == 0             # SIGTERM
    stopped = time.monotonic()
    new_leader = cluster.wait_for_leader(timeout=30)
    wait_until(lambda: any(t > stopped for _, t in writer.acked), 30.0,
               what="a write acknowledged after the stop")
    acked = writer.finish()

    assert new_leader != old_leader
    # The survivors agree on a term exactly one above: one campaign, the target's.
    after = terms(cluster)
    assert set(after.values()) == {term_before + 1}, (term_before, after)
    times = sorted(acked.values())
    last_before = max(t for t in times if t <= stop_began)
    first_after = min(t for t in times if t > stop_began)
    assert first_after - last_before < HANDOVER_PAUSE_BOUND_S < ELECTION_TIMEOUT_MIN_S, (
        f"writes paused {first_after - last_before:.3f}s across the leader's SIGTERM "
        f"(the stop took {stopped - stop_began:.3f}s)")
    for node_id, node in cluster.nodes.items():
        if node.alive:
            wait_until(lambda n=node_id: set(acked) <= set(local_range(cluster, n, "handover/")),
                       15.0, what=f"every acknowledged write on {node_id}")


def test_transfer_to_a_named_node_then_to_any_keeps_every_acknowledged_write(
        cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(3, name="transfer")
    first = cluster.wait_for_leader(timeout=30)
    target = followers(cluster, first)[0]
    writer = Writer(cluster, "transfer/")
    writer.start()
    with cluster.client() as admin:
        wait_until(lambda: writer.count() >= 30, 30.0, what="writes before the transfers")
        moved = admin.transfer_leadership(target, timeout=10.0)
        assert moved.leader == target
        assert cluster.wait_for_leader(timeout=10) == target
        count = writer.count()
        wait_until(lambda: writer.count() >= count + 30, 30.0, what="writes after a transfer")
        anywhere = admin.transfer_leadership(timeout=10.0)
        assert anywhere.leader != target and anywhere.term > moved.term
        assert cluster.wait_for_leader(timeout=10) == anywhere.leader
        count = writer.count()
        wait_until(lambda: writer.count() >= count + 30, 30.0, what="writes after a transfer")
        assert admin.transfer_leadership(anywhere.leader).leader == anywhere.leader   # no-op
    acked = writer.finish()
    for node_id in cluster.nodes:
        wait_until(lambda n=node_id: set(acked) <= set(local_range(cluster, n, "transfer/")),
                   15.0, what=f"every acknowledged write on {node_id}")


def test_transfer_to_an_unknown_or_a_down_node_is_refused_and_the_cluster_serves_on(
        cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(3, name="refused")
    leader = cluster.wait_for_leader(timeout=30)
    down = followers(cluster, leader)[0]
    assert cluster.nodes[down].stop() == 0
    with cluster.client() as client:
        wait_until(lambda: down not in client.status(cluster.nodes[leader].endpoint,
                                                     timeout=1.0).connected_peers,
                   10.0, what=f"the leader sees {down} disconnected")
        for target, reason in (("n9", "unknown_target"), (down, "target_down")):
            answer = raw_post(cluster, leader, "/v1/leader/transfer", {"to": target})
            assert answer.status_code == 400, answer.text
            assert answer.json()["reason"] == reason
            with pytest.raises(InvalidRequest):
                client.transfer_leadership(target, timeout=5.0)
        assert client.put("refused/after", 1).value == 1
    assert cluster.wait_for_leader(timeout=10) == leader


def test_cli_leader_transfer_exit_codes(cluster_pool: ClusterPool, tmp_path: Path) -> None:
    cluster = cluster_pool.start(3, name="cli-transfer")
    leader = cluster.wait_for_leader(timeout=30)
    target = followers(cluster, leader)[0]
    env = {"CONSENSUS_STORE_ENDPOINTS": ",".join(cluster.endpoints),
           "CONSENSUS_STORE_TOKEN": cluster.token}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(CLI + list(args), cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, **env})

    moved = cli("leader", "transfer", target)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith(f"leader {target} (term ")
    assert cluster.wait_for_leader(timeout=10) == target
    as_json = cli("leader", "transfer", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["leader"] != target
    for args in (("leader", "transfer", "n9"), ("leader", "some-election", "n2")):
        refused = cli(*args)
        assert refused.returncode == 2, refused
        assert len(refused.stderr.splitlines()) == 1 and "Traceback" not in refused.stderr
