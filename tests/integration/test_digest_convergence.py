"""Replicas converge to byte-identical state, including the at-most-once tables and sessions
(compared by /v1/digest), and no caller can change a replica's memory through an answer."""
from __future__ import annotations


from consensus_store.config import load_config
from consensus_store.node import Node

from .support import ClusterPool, node_client, wait_until


def digests(cluster, ids) -> dict[str, tuple[str, int]]:
    found = {}
    for node_id in ids:
        with node_client(cluster, node_id) as client:
            result = client._request("digest", {}, 2.0)
        found[node_id] = (result["digest"], result["index"])
    return found


def test_digests_agree_after_writes_through_every_node(module_pool: ClusterPool) -> None:
    cluster = module_pool.start(3, name="digest")
    cluster.wait_for_leader()
    ids = list(cluster.nodes)
    for round_ in range(3):
        for node_id in ids:                      # answers built on every node
            with node_client(cluster, node_id) as client:
                client.put(f"d/{node_id}", round_)
                client.cas(f"d/{node_id}", round_ + 1, expect_value=round_)
                client.txn(success=[{"op": "put", "key": "d/txn", "value": round_}])
                client.groups.create("g")
                client.groups.join("g", meta=round_)
                client.close()

    def converged() -> dict[str, tuple[str, int]] | None:
        found = digests(cluster, ids)
        indexes = {index for _, index in found.values()}
        return found if len(indexes) == 1 else None

    found = wait_until(converged, 15, what="equal applied indexes")
    assert len({digest for digest, _ in found.values()}) == 1, found


def test_embedded_reads_cannot_change_the_replica(tmp_path, module_pool: ClusterPool) -> None:
    paths = module_pool.write_configs(3, name="embedded-copy")
    cluster = module_pool.launch(paths[:2])
    node = Node(load_config(paths[2]))
    node.start()
    try:
        node.put("doc", {"tags": ["a"]})
        node.get("doc").value["tags"].append("mutated")
        node.get_value("doc")["tags"].append("mutated")
        assert node.get("doc").value == {"tags": ["a"]}
        with node_client(cluster, "n1") as client:
            assert client.get("doc", consistency="linearizable").value == {"tags": ["a"]}
    finally:
        node.stop()
