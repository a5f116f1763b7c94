"""An embedded ``Node`` (in this test process) forms a cluster with two daemon processes."""
from __future__ import annotations

import threading
from typing import Iterator

import httpx
import pytest

from consensus_store.client import Client
from consensus_store.config import load_config
from consensus_store.errors import CompareFailed, Unavailable
from consensus_store.launcher import LocalCluster
from consensus_store.node import Node

from .support import ClusterPool, local_range, node_client, statuses, wait_until


@pytest.fixture
def mixed(cluster_pool: ClusterPool) -> Iterator[tuple[LocalCluster, Node]]:
    paths = cluster_pool.write_configs(3, name="embedded")
    daemons = cluster_pool.launch(paths[:2], start=False)
    daemons.start()
    node = Node(load_config(paths[2]))
    try:
        node.start()
        yield daemons, node
    finally:
        node.stop()


def _agreed_leader(daemons: LocalCluster, node: Node) -> str | None:
    """The leader all three members name, if they agree."""
    leaders = {s.leader for s in statuses(daemons).values()} | {node.status()["leader"]}
    if len(statuses(daemons)) == 2 and len(leaders) == 1 and None not in leaders:
        return leaders.pop()
    return None


def test_embedded_node_reads_writes_and_replicates(mixed: tuple[LocalCluster, Node]) -> None:
    daemons, node = mixed
    leader = wait_until(lambda: _agreed_leader(daemons, node), 20.0,
                        what="the two daemons and the embedded node agree on a leader")
    print(f"\nembedded cluster: leader {leader}; embedded node is {node.config.id}")

    # Writes and reads through the embedded API.
    kv = node.put("emb/a", {"from": "embedded"})
    assert kv.value == {"from": "embedded"} and kv.version == 1
    assert node.get("emb/a").value == {"from": "embedded"}            # local memory
    assert node.get("emb/a", consistency="linearizable").value == {"from": "embedded"}
    assert node.get_value("emb/a") == {"from": "embedded"}
    assert node.get("emb/missing") is None
    assert node.cas("emb/a", 2, expect_value={"from": "embedded"}).value == 2
    with pytest.raises(CompareFailed):
        node.cas("emb/a", 3, expect_value="not this")
    for i in range(20):
        node.put(f"emb/many/{i:02d}", i)
    assert node.delete("emb/many/00") is True
    assert node.range("emb/many/", limit=5).count == 19
    assert node.applied_index >= kv.mod_revision

    # The daemons see the embedded node's writes.
    expected = {"emb/a": 2, **{f"emb/many/{i:02d}": i for i in range(1, 20)}}
    for daemon in daemons.nodes:
        wait_until(lambda: local_range(daemons, daemon, "emb/") == expected, 10.0,
                   what=f"daemon {daemon} has the embedded node's writes")

    # The embedded node sees the daemons' writes, and serves the HTTP API too.
    with daemons.client() as client:
        written = client.put("emb/from-daemon", "hello")
    wait_until(lambda: node.get("emb/from-daemon") is not None, 10.0,
               what="embedded node has the daemon's write")
    assert node.get("emb/from-daemon").mod_revision == written.mod_revision
    with Client([f"http://{node.config.api_address}"], token=node.config.admin_token) as client:
        assert client.get("emb/from-daemon", consistency="linearizable").value == "hello"
        client.put("emb/via-embedded-http", 1)
    with daemons.client() as client:
        assert client.get("emb/via-embedded-http", consistency="linearizable").value == 1

    # Converged: same applied index everywhere, same state as each daemon.
    def converged() -> bool:
        marks = {(s.applied_index, s.revision) for s in statuses(daemons).values()}
        embedded = node.status()
        return marks == {(embedded["applied_index"], embedded["revision"])}
    wait_until(converged, 10.0, what="embedded node and daemons converged")
    everything = node.range("").kvs
    for daemon in daemons.nodes:
        with node_client(daemons, daemon) as client:
            assert client.range("", consistency="local").kvs == everything
    digest = node.digest()
    assert digest == node.digest() and len(digest) == 64


def test_daemons_keep_working_after_the_embedded_node_stops(
        mixed: tuple[LocalCluster, Node]) -> None:
    daemons, node = mixed
    wait_until(lambda: _agreed_leader(daemons, node), 20.0, what="a leader")
    for i in range(10):
        node.put(f"emb/stop/{i}", i)
    api = f"http://{node.config.api_address}"

    node.stop()
    node.stop()                                    # idempotent
    with pytest.raises(Unavailable):
        node.put("emb/after-stop", 1)
    with pytest.raises(httpx.TransportError):
        httpx.get(api + "/health", timeout=2)
    own_threads = [t.name for t in threading.enumerate()
                   if t.name in (f"raft-{node.config.id}", f"api-{node.config.id}")]
    assert not own_threads, f"threads left running after stop(): {own_threads}"

    leader = daemons.wait_for_leader(timeout=15.0)
    assert leader in daemons.nodes
    with daemons.client() as client:
        client.put("emb/after-stop", "still works")
        found = {kv.key: kv.value
                 for kv in client.range("emb/", consistency="linearizable").kvs}
    assert found == {**{f"emb/stop/{i}": i for i in range(10)}, "emb/after-stop": "still works"}
