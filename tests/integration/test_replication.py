"""Replication: writes through one node reach every node, and replicas converge.

One 3-node cluster is shared by the module: no test here stops a node.
"""
from __future__ import annotations

import pytest

from consensus_store.launcher import LocalCluster

from .support import (ClusterPool, followers, full_local_state, local_range, node_client,
                      raw_post, statuses, wait_converged, wait_until)


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3, name="replication")


def test_writes_through_one_node_are_visible_on_every_node(cluster: LocalCluster) -> None:
    writer = next(iter(cluster.nodes))
    expected = {f"repl/basic/{i:03d}": {"n": i, "text": "x" * (i % 7)} for i in range(60)}
    with node_client(cluster, writer) as client:
        for key, value in expected.items():
            client.put(key, value)

    for node_id in cluster.nodes:
        wait_until(lambda: local_range(cluster, node_id, "repl/basic/") == expected, 10.0,
                   what=f"all 60 keys visible with consistency=local on {node_id}")

    marks = wait_converged(cluster)
    indexes = {s.applied_index for s in marks.values()}
    assert min(indexes) >= 60


def test_every_kind_of_write_converges_to_identical_state(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    with cluster.client() as client:
        for i in range(20):
            client.put(f"repl/mixed/a/{i:02d}", i)
        for i in range(5):
            client.put(f"repl/mixed/b/{i}", [i, str(i)])
        client.put("repl/mixed/counter", 0)
        for i in range(10):                                   # version and mod_revision move
            client.cas("repl/mixed/counter", i + 1, expect_value=i)
        assert client.delete("repl/mixed/a/00") is True
        assert client.delete("repl/mixed/a/00") is False
        assert client.delete_prefix("repl/mixed/b/") == 5
        txn = client.txn(compare=[{"key": "repl/mixed/counter", "target": "value", "value": 10}],
                         success=[{"op": "put", "key": "repl/mixed/txn", "value": "ok"},
                                  {"op": "delete", "key": "repl/mixed/a/01"}],
                         failure=[{"op": "put", "key": "repl/mixed/txn", "value": "failed"}])
        assert txn.succeeded
        final = client.range("repl/mixed/", consistency="linearizable")

    expected_keys = ({f"repl/mixed/a/{i:02d}" for i in range(2, 20)}
                     | {"repl/mixed/counter", "repl/mixed/txn"})
    assert {kv.key for kv in final.kvs} == expected_keys
    counter = next(kv for kv in final.kvs if kv.key == "repl/mixed/counter")
    assert (counter.value, counter.version) == (10, 11)

    wait_converged(cluster)
    # Each node's own full state (values and revisions), asked one node at a time.
    states = {node_id: full_local_state(cluster, node_id) for node_id in cluster.nodes}
    reference = states[leader]
    for node_id, state in states.items():
        assert state == reference, f"{node_id} differs from leader {leader}"
    assert [kv for kv in reference if kv.key.startswith("repl/mixed/")] == list(final.kvs)


def test_write_sent_only_to_a_follower_is_forwarded(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    for follower in followers(cluster, leader):
        key = f"repl/forwarded/{follower}"
        with node_client(cluster, follower) as client:
            kv = client.put(key, {"via": follower})
        assert kv.key == key and kv.value == {"via": follower} and kv.version == 1

        # The leader has it once the follower acknowledged it (the commit went through it) ...
        with node_client(cluster, leader) as client:
            found = client.get(key, consistency="linearizable")
        assert found is not None and found.value == {"via": follower}
        assert found.mod_revision == kv.mod_revision
        # ... and its local memory shows it too.
        wait_until(lambda: local_range(cluster, leader, key).get(key) == {"via": follower}, 5.0,
                   what=f"forwarded write visible locally on leader {leader}")

    # The same at the HTTP level: the follower answers itself, and names the leader.
    follower = followers(cluster, leader)[0]
    response = raw_post(cluster, follower, "/v1/kv/put", {"key": "repl/forwarded/raw", "value": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["header"]["node"] == follower
    assert body["header"]["leader"] == leader
    assert body["kv"]["value"] == 1


def test_status_reports_one_leader_and_matching_indexes(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    with cluster.client() as client:
        client.put("repl/status", "x")
    wait_converged(cluster)

    def settled() -> dict | None:     # converged, and every node connected to both others
        current = statuses(cluster)
        connected = all(set(s.connected_peers) == set(cluster.nodes) - {node_id}
                        for node_id, s in current.items())
        marks = {(s.applied_index, s.revision) for s in current.values()}
        return current if connected and len(marks) == 1 else None
    current = wait_until(settled, 10.0, what="all nodes connected and converged")
    assert set(current) == set(cluster.nodes)
    roles = {node_id: s.role.value for node_id, s in current.items()}
    assert sorted(roles.values()) == ["follower", "follower", "leader"], roles
    assert roles[leader] == "leader"
    terms = {s.term for s in current.values()}
    assert len(terms) == 1, terms
    for node_id, s in current.items():
        assert s.id == node_id
        assert s.leader == leader
        assert s.commit_index >= s.applied_index > 0
    keys = {s.keys for s in statuses(cluster).values()}
    assert len(keys) == 1
