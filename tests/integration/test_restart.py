"""Crash and restart: kill -9 of a follower, of the whole cluster; graceful SIGTERM/SIGINT.

Each test owns its cluster.  The "snapshot" variants make nodes compact their log every few
dozen entries, so recovery goes through a snapshot file (and a lagging follower gets a snapshot
from the leader) instead of only through the journal.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from .support import (ClusterPool, followers, full_local_state, local_range, node_client,
                      statuses, wait_converged, wait_until)

COMPACTION = {"log_compaction_min_entries": 40, "log_compaction_min_time_s": 0.2}
VARIANTS = [pytest.param(None, id="journal"), pytest.param(COMPACTION, id="snapshot")]
GRACEFUL_EXIT_BOUND_S = 5.0


@pytest.mark.parametrize("raft_table", VARIANTS)
def test_killed_follower_restarts_and_catches_up(cluster_pool: ClusterPool,
                                                 raft_table: dict | None) -> None:
    cluster = cluster_pool.start(3, name="follower-restart", raft_table=raft_table)
    leader = cluster.wait_for_leader()
    victim = followers(cluster, leader)[0]
    expected: dict[str, object] = {}
    with cluster.client() as client:
        for i in range(30):
            client.put(f"restart/before/{i:03d}", i)
            expected[f"restart/before/{i:03d}"] = i
        wait_until(lambda: local_range(cluster, victim, "restart/") == expected, 10.0,
                   what=f"{victim} has the first writes")

        cluster.nodes[victim].kill()
        for i in range(200):
            client.put(f"restart/during/{i:03d}", {"i": i})
            expected[f"restart/during/{i:03d}"] = {"i": i}
        client.delete("restart/before/000")
        del expected["restart/before/000"]
        client.put("restart/before/001", "overwritten while down")
        expected["restart/before/001"] = "overwritten while down"

        cluster.nodes[victim].start()
        wait_until(lambda: local_range(cluster, victim, "restart/") == expected, 30.0,
                   what=f"restarted follower {victim} shows every write made while it was down")
    current = wait_converged(cluster)
    assert current[victim].role.value == "follower"
    reference = full_local_state(cluster, leader)
    assert full_local_state(cluster, victim) == reference


@pytest.mark.parametrize("raft_table", VARIANTS)
def test_whole_cluster_kill9_and_restart_keeps_every_acknowledged_write(
        cluster_pool: ClusterPool, raft_table: dict | None) -> None:
    cluster = cluster_pool.start(3, name="full-restart", raft_table=raft_table)
    acked: dict[str, object] = {}
    with cluster.client() as client:
        for i in range(300):
            key = f"crash/{i:04d}"
            client.put(key, {"i": i, "pad": "p" * (i % 50)})
            acked[key] = {"i": i, "pad": "p" * (i % 50)}
        for i in range(0, 300, 10):                      # some later history on top
            client.put(f"crash/{i:04d}", f"second-{i}")
            acked[f"crash/{i:04d}"] = f"second-{i}"
        for i in range(5, 300, 50):
            assert client.delete(f"crash/{i:04d}")
            del acked[f"crash/{i:04d}"]
        last_before = client.put("crash/last", "last")
        acked["crash/last"] = "last"
        before = client.range("crash/", consistency="linearizable")

    for node in cluster.nodes.values():        # kill -9 all, as fast as possible
        node.kill()
    assert not any(node.alive for node in cluster.nodes.values())

    cluster.start()
    restarted_at = time.monotonic()
    leader = cluster.wait_for_leader(timeout=30.0)
    print(f"\nfull restart: leader {leader} after {time.monotonic() - restarted_at:.2f}s")

    with cluster.client() as client:
        for key, value in acked.items():
            kv = client.get(key, consistency="linearizable")
            assert kv is not None, f"acknowledged key {key} lost"
            assert kv.value == value, f"{key}: {kv.value!r} != {value!r}"
        for i in range(5, 300, 50):
            assert client.get(f"crash/{i:04d}", consistency="linearizable") is None
        after = client.range("crash/", consistency="linearizable")
        assert after == before, "records (values and revisions) changed across the restart"
        # The log continues after the restart: new revisions are larger than all old ones.
        new = client.put("crash/new", "new")
        assert new.mod_revision > last_before.mod_revision

    wait_converged(cluster, timeout=20.0)
    states = {node_id: full_local_state(cluster, node_id) for node_id in cluster.nodes}
    assert states[leader] == list(after.kvs) + [new]
    for node_id, state in states.items():
        assert state == states[leader], f"{node_id} differs after the restart"


def test_sigterm_stops_each_node_with_exit_code_0(cluster_pool: ClusterPool) -> None:
    """Followers first, then the leader (which by then has no quorum); SIGINT works too."""
    cluster = cluster_pool.start(3, name="graceful")
    leader = cluster.wait_for_leader()
    with cluster.client() as client:
        for i in range(20):
            client.put(f"graceful/{i:02d}", i)
    wait_converged(cluster)

    order = followers(cluster, leader) + [leader]
    for node_id in order:
        node = cluster.nodes[node_id]
        started = time.monotonic()
        code = node.stop(timeout=GRACEFUL_EXIT_BOUND_S + 5)
        elapsed = time.monotonic() - started
        print(f"\nSIGTERM {node_id}: exit code {code} after {elapsed:.2f}s")
        assert code == 0, f"{node_id} exited with {code} after SIGTERM"
        assert elapsed < GRACEFUL_EXIT_BOUND_S, f"{node_id} took {elapsed:.2f}s to stop"

    # A graceful stop keeps the data, and SIGINT (Ctrl-C) is graceful too.
    cluster.start()
    cluster.wait_for_leader(timeout=30.0)
    with cluster.client() as client:
        found = {kv.key: kv.value for kv in client.range("graceful/", consistency="linearizable").kvs}
    assert found == {f"graceful/{i:02d}": i for i in range(20)}

    node = cluster.nodes[order[0]]
    assert node.process is not None
    started = time.monotonic()
    os.kill(node.process.pid, signal.SIGINT)
    try:
        code = node.process.wait(GRACEFUL_EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        code = None
    elapsed = time.monotonic() - started
    node.stop()   # reaps (and kills it if SIGINT did not work)
    assert code == 0, f"SIGINT: exit code {code} after {elapsed:.2f}s"


def test_restarted_node_keeps_its_identity_and_status(cluster_pool: ClusterPool) -> None:
    """After a kill -9 and restart the node reports its own id, a term no lower than before,
    and its applied index does not go backwards once caught up."""
    cluster = cluster_pool.start(3, name="identity")
    leader = cluster.wait_for_leader()
    victim = followers(cluster, leader)[1]
    with cluster.client() as client:
        for i in range(25):
            client.put(f"identity/{i}", i)
    before = wait_converged(cluster)[victim]
    cluster.nodes[victim].kill()
    cluster.nodes[victim].start()

    def caught_up():
        with node_client(cluster, victim, timeout=2.0) as client:
            status = client.status(timeout=1.0)
        return status if status.applied_index >= before.applied_index and status.leader else None

    after = wait_until(caught_up, 20.0, what=f"{victim} restarted and caught up")
    assert after.id == victim
    assert after.term >= before.term
    assert after.revision >= before.revision
    assert set(statuses(cluster)) == set(cluster.nodes)
