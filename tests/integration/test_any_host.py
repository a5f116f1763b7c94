"""Any size, any host (issue #12, item 4): a single-node cluster from a config without
[[peers]], and three-node clusters whose addresses are ``localhost`` names or IPv6 literals
(``[::1]``) instead of 127.0.0.1.  The network-namespace cluster is in test_netns_cluster.py.
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from consensus_store.launcher import LocalCluster, write_cluster_configs
from consensus_store.models import Role

from .support import ClusterPool, followers, local_range, node_client, wait_converged, wait_until


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def launch(pool: ClusterPool, paths: list[Path]) -> LocalCluster:
    """Start the cluster and wait for a leader; a node that exits fails the test at once with
    its exit (the node's log is attached to the report)."""
    cluster = pool.launch(paths, start=False)
    cluster.start()

    def leader() -> str:
        exits = cluster.check_exits()
        assert not exits, f"a node exited: {exits}"
        return cluster.wait_for_leader(timeout=1.0)
    wait_until(leader, 30.0, what="a leader every live node follows")
    return cluster


def test_a_single_node_cluster_writes_reads_and_keeps_its_data_over_restarts(
        cluster_pool: ClusterPool) -> None:
    paths = cluster_pool.write_configs(1, name="single")
    assert "[[peers]]" not in paths[0].read_text()
    cluster = launch(cluster_pool, paths)
    (node,) = cluster.nodes.values()
    with cluster.client() as client:
        for i in range(20):
            client.put(f"single/{i:02d}", i)
        assert client.delete("single/00")
        assert client.get("single/05", consistency="linearizable").value == 5
        assert client.range("single/", consistency="linearizable").count == 19
        (status,) = client.cluster_status()
        assert (status.id, status.role) == (node.id, Role.LEADER)
    expected = {f"single/{i:02d}": i for i in range(1, 20)}

    assert node.stop() == 0                     # SIGTERM
    node.start()
    wait_until(lambda: cluster.wait_for_leader(timeout=1.0), 20.0, what="leader after restart")
    assert local_range(cluster, node.id, "single/") == expected
    with cluster.client() as client:
        client.put("single/after-restart", "yes")

    node.kill()                                 # kill -9: fsync durability keeps every ack
    node.start()
    wait_until(lambda: cluster.wait_for_leader(timeout=1.0), 20.0, what="leader after kill -9")
    with cluster.client() as client:
        assert client.get("single/after-restart", consistency="linearizable").value == "yes"
        assert {kv.key: kv.value for kv in client.range("single/", consistency="linearizable")
                .kvs} == {**expected, "single/after-restart": "yes"}


def check_a_three_node_cluster(cluster: LocalCluster, written_host: str) -> None:
    """Writes through the leader, linearizable reads from every node, every node's status
    under the configured names, and a new leader elected over those names."""
    leader = cluster.wait_for_leader()
    with cluster.client() as client:
        statuses = client.cluster_status()
        assert sorted(s.id for s in statuses) == sorted(cluster.nodes)
        assert all(s.role is not Role.DOWN for s in statuses)
        assert all(s.api_address.startswith(f"{written_host}:") for s in statuses), statuses
        for i in range(10):
            client.put(f"hosts/{i}", i)
    for node_id in cluster.nodes:
        with node_client(cluster, node_id) as client:
            assert client.get("hosts/9", consistency="linearizable").value == 9
    wait_converged(cluster)

    cluster.nodes[leader].kill()
    survivors = followers(cluster, leader)
    wait_until(lambda: cluster.wait_for_leader(timeout=1.0, exclude={leader}) in survivors,
               20.0, what="a new leader among the survivors")
    with cluster.client() as client:
        client.put("hosts/after-failover", "ok")
    for node_id in survivors:
        wait_until(lambda: local_range(cluster, node_id, "hosts/after").get(
            "hosts/after-failover") == "ok", 10.0, what=f"{node_id} has the write")


def test_a_cluster_addressed_by_localhost_names(cluster_pool: ClusterPool) -> None:
    paths = write_cluster_configs(cluster_pool.root / "localhost" / "configs", 3,
                                  host="localhost")
    assert 'raft_address = "localhost:' in paths[0].read_text()
    cluster = launch(cluster_pool, paths)
    assert all(n.endpoint.startswith("http://localhost:") for n in cluster.nodes.values())
    check_a_three_node_cluster(cluster, "localhost")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_a_cluster_addressed_by_ipv6_loopback(cluster_pool: ClusterPool) -> None:
    paths = write_cluster_configs(cluster_pool.root / "ipv6" / "configs", 3, host="::1")
    assert 'raft_address = "[::1]:' in paths[0].read_text()
    cluster = launch(cluster_pool, paths)
    assert all(n.endpoint.startswith("http://[::1]:") for n in cluster.nodes.values())
    check_a_three_node_cluster(cluster, "[::1]")
    native = [f"tcp://{n.config.native_address}" for n in cluster.nodes.values()]
    assert all(e.startswith("tcp://[::1]:") for e in native)
    from consensus_store.client import Client
    with Client(native, token=cluster.token) as client:
        assert client.get("hosts/after-failover", consistency="linearizable").value == "ok"
