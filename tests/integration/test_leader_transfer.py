"""Leader transfer with real node processes: SIGTERM of the leader hands leadership over.

Each test owns its cluster (it stops nodes).  The clusters run with long election timeouts
(2-3 s), so that a pause caused by an election (the next leader waits for its election
deadline) and one caused by a handover (a round trip or two) are far apart on a noisy machine.
"""
from __future__ import annotations

import threading
import time

from consensus_store.client import RetryPolicy
from consensus_store.errors import ConsensusStoreError
from consensus_store.launcher import LocalCluster

from .support import ClusterPool, local_range, wait_until

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
