"""Minimal reproduction: a replica whose log ends in a conflicting, uncommitted suffix (it was
a leader cut off from the majority) must catch up after heal, also when the leader it meets was
elected later and is more than one AppendEntries batch (64 KB) ahead.

Known to fail on pysyncobj 0.3.17 (see the fault suite report): the leader's nextIndex for that
replica livelocks.  In one burst the leader sends the whole suffix as several AppendEntries;
the first is refused for the term mismatch (reset to prevLogIdx, one step back) and every later
one because its prevLogIdx is past the replica's log end (reset to the replica's last index +
1, back up).  The leader applies every reset as it comes, so the last one wins: no progress,
forever.  While the replica is needed for a majority the cluster cannot commit at all.
"""
from __future__ import annotations

import threading
from pathlib import Path

from consensus_store.errors import ConsensusStoreError
from consensus_store.testing import ProxiedCluster, node_state, poll_until, raft_diagnostics

MAJORITY_WRITES = 600        # x ~250 bytes: several 64 KB batches
CATCH_UP_S = 20.0


def test_replica_with_conflicting_suffix_catches_up_after_heal(fault_root: Path) -> None:
    with ProxiedCluster(fault_root, 3, seed=21) as cluster:
        old = cluster.start()
        a, b = [n for n in cluster.ids if n != old]

        # 1. Cut the leader off and give it a few entries no one else gets (never committed).
        cluster.proxy.isolate(old)

        def minority_write(i: int) -> None:
            try:
                with cluster.client([old], timeout=1.0) as client:
                    client.put(f"minority/{i}", "x" * 100)
            except ConsensusStoreError:
                pass                       # expected: no majority
        threads = [threading.Thread(target=minority_write, args=(i,)) for i in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

        # 2. The majority goes on well past one AppendEntries batch.
        with cluster.client([a, b], timeout=10.0) as client:
            def writer(w: int) -> None:
                for _ in range(MAJORITY_WRITES // 10):
                    client.put(f"majority/{w}", "y" * 100)
            threads = [threading.Thread(target=writer, args=(w,)) for w in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            last = client.put("majority/last", "z")

        # 3. A new leader is elected while the old leader can reach it (and only it): its
        #    nextIndex for the old leader starts at its own log end.
        leader = poll_until(cluster.leader, CATCH_UP_S)
        other = b if leader == a else a
        cluster.proxy.partition([{old, other}, {leader}])
        assert poll_until(lambda: cluster.statuses(node_ids=[other])[other].role.value
                          == "leader", CATCH_UP_S), cluster.describe()

        # 4. Heal everything: every replica must reach the same state.
        cluster.proxy.heal()
        caught_up = poll_until(
            lambda: (node_state(cluster, old).get("majority/last") or (None, 0))[1]
            >= last.mod_revision, CATCH_UP_S)
        statuses = {n: (s.role.value, s.applied_index, s.log_length)
                    for n, s in cluster.statuses().items()}
        assert caught_up, (f"{old} did not catch up within {CATCH_UP_S:g}s after heal: "
                           f"{statuses}\nraft status:\n{raft_diagnostics(cluster)}")
