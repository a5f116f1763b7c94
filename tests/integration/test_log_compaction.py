"""Compaction by bytes on real node processes: the journal of every node stays near
``log_compaction_max_bytes`` although the entry-count bound is far away, and a cluster that
compacted many times keeps every write through a full kill -9 and restart."""
from __future__ import annotations

from .support import ClusterPool, local_range, statuses, wait_converged, wait_until

BOUND = 256 * 1024


def _log_lengths_if_compacted(cluster) -> dict[str, int] | None:
    lengths = {node_id: s.log_length for node_id, s in statuses(cluster).items()}
    return lengths if max(lengths.values()) < 50 else None


def test_the_journal_is_bounded_by_bytes_and_compacted_state_survives_kill9(
        cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(raft_table={"log_compaction_max_bytes": BOUND})
    expected = {f"compact/{i:03d}": "z" * 20_000 + str(i) for i in range(100)}
    with cluster.client(timeout=20) as client:
        for key, value in expected.items():      # ~2 MB through the log: 8x the bound
            client.put(key, value)
    wait_converged(cluster)
    # One write per entry here, so without compaction every node would hold 100+ entries.
    lengths = wait_until(lambda: _log_lengths_if_compacted(cluster), 10.0,
                         what="every node's log compacted by bytes")
    assert len(lengths) == 3

    for node in cluster.nodes.values():
        node.kill()
    cluster.start()
    cluster.wait_for_leader()
    for node_id in cluster.nodes:
        wait_until(lambda: local_range(cluster, node_id, "compact/") == expected, 20.0,
                   what=f"{node_id} has every write after the restart")
