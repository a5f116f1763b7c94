"""Issue #10: a write's identity fields are checked at the edge, on every write route and both
protocols, and a bad one never reaches the log.  (A coordination write used to pass any body
field into its command: ``"rid": -1`` reached the state machine's at-most-once table.)
"""
from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from consensus_store.launcher import LocalCluster
from consensus_store.protocol import COORDINATION_WRITES, KV_WRITE_OPS, ROUTES
from consensus_store.wire import FrameReader, decode, encode_auth, encode_request
from integration.support import ClusterPool, wait_until

# (identity fields, the field the answer names)
BAD_IDENTITIES = [
    ({"client_id": "c", "request_id": -1}, "request_id"),
    ({"client_id": "c", "request_id": 2**63}, "request_id"),
    ({"client_id": "c", "request_id": 5, "done_below": 6}, "done_below"),
    ({"client_id": "c", "request_id": 5, "done_below": -1}, "done_below"),
    ({"client_id": "c" * 129, "request_id": 1}, "client_id"),
    ({"client_id": "bad\nid", "request_id": 1}, "client_id"),
    ({"request_id": 1}, "client_id"),
    ({"cid": "c", "rid": -1}, "cid"),            # the log's own names: the node's to set
    ({"rid": 1, "done": 0}, "rid"),
]
# One valid body per write route (each would succeed with a good identity).
BODIES: dict[str, dict[str, Any]] = {
    "put": {"key": "id/k", "value": 1}, "delete": {"key": "id/k"},
    "cas": {"key": "id/k", "value": 1, "expect_mod_revision": 0},
    "txn": {"success": [{"op": "put", "key": "id/k", "value": 1}]},
    "group_create": {"group": "g"}, "group_delete": {"group": "g"},
    "group_join": {"group": "g", "session": 1}, "group_leave": {"group": "g", "member": "m"},
    "group_update": {"group": "g", "member": "m", "meta": 1},
    "name_register": {"name": "n", "session": 1}, "name_unregister": {"name": "n"},
    "lock_acquire": {"name": "l", "session": 1}, "lock_release": {"name": "l", "key": "x"},
    "election_campaign": {"name": "e", "member": "m", "session": 1},
    "election_resign": {"name": "e", "member": "m"},
    "session_open": {"ttl": 5}, "session_close": {"session": 1},
}


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3)


def post(cluster: LocalCluster, node_id: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(cluster.nodes[node_id].endpoint + path, json=body, timeout=10.0,
                      headers={"Authorization": f"Bearer {cluster.token}"})


def settled_index(cluster: LocalCluster) -> int:
    """The commit index, once every node applied it (nothing else writes to this cluster)."""
    def same() -> int | None:
        statuses = [httpx.get(n.endpoint + "/v1/status", timeout=2.0,
                              headers={"Authorization": f"Bearer {cluster.token}"}).json()
                    for n in cluster.nodes.values()]
        indexes = {s["applied_index"] for s in statuses} | {s["commit_index"] for s in statuses}
        return indexes.pop() if len(indexes) == 1 else None
    return wait_until(same, 15.0, what="every node applied the commit index")


def native_request(cluster: LocalCluster, node_id: str, op: str, body: dict[str, Any]) -> dict:
    address = cluster.nodes[node_id].config.native_address
    assert address is not None
    reader = FrameReader()
    with socket.create_connection((address.host, address.port), timeout=10.0) as sock:
        answers = []
        for frame in (encode_auth(cluster.token), encode_request(7, op, body)):
            sock.sendall(frame)
            while (payload := reader.next()) is None:
                chunk = sock.recv(65536)
                assert chunk, "the node closed the connection"
                reader.feed(chunk)
            answers.append(decode(payload))
    return answers[-1]


def test_a_bad_identity_on_any_write_route_is_400_and_never_reaches_the_log(
        cluster: LocalCluster) -> None:
    assert set(BODIES) == {*KV_WRITE_OPS, *COORDINATION_WRITES, "session_open", "session_close"}
    before = settled_index(cluster)
    for op, body in BODIES.items():
        for identity, named in BAD_IDENTITIES:
            for node_id in cluster.nodes:
                reply = post(cluster, node_id, ROUTES[op][1], {**body, **identity})
                assert reply.status_code == 400, (op, identity, reply.text)
                assert reply.json()["error"] == "invalid_request"
                assert reply.json()["message"].startswith(f"'{named}'"), (identity, reply.text)
            native = native_request(cluster, "n1", op, {**body, **identity})
            assert native["status"] == 400, (op, identity, native)
    assert settled_index(cluster) == before        # not one entry
    good = post(cluster, "n1", "/v1/kv/put", {"key": "id/ok", "value": 1, "client_id": "c",
                                               "request_id": 2**63 - 1, "done_below": 0})
    assert good.status_code == 200, good.text
    assert good.json()["kv"]["mod_revision"] == before + 1
