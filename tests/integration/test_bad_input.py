"""Bad input gets a 4xx JSON answer, and the node keeps serving.

The shared cluster runs with ``limits.max_value_bytes = 1000``.
"""
from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from consensus_store.client import Client
from consensus_store.errors import AuthError, InvalidRequest, PayloadTooLarge
from consensus_store.launcher import LocalCluster

from .support import ClusterPool, followers, statuses

MAX_VALUE = 1000


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3, name="bad-input", extra_toml=f"[limits]\nmax_value_bytes = {MAX_VALUE}")


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


AUTH = "auth"
NO_AUTH = "none"
WRONG_AUTH = "wrong"

# (case id, method, path, raw body or JSON-able body, auth, expected status, expected error code)
CASES: list[tuple[str, str, str, Any, str, int, str]] = [
    ("malformed-json", "POST", "/v1/kv/put", b'{"key": "a", "value": ', AUTH, 400, "invalid_request"),
    ("not-utf8", "POST", "/v1/kv/put", b"\xff\xfe\xfd", AUTH, 400, "invalid_request"),
    ("body-is-list", "POST", "/v1/kv/put", [1, 2, 3], AUTH, 400, "invalid_request"),
    ("body-is-string", "POST", "/v1/kv/get", "key", AUTH, 400, "invalid_request"),
    ("body-is-null", "POST", "/v1/kv/range", None, AUTH, 400, "invalid_request"),
    ("put-key-not-string", "POST", "/v1/kv/put", {"key": 42, "value": 1}, AUTH, 400, "invalid_request"),
    ("put-key-empty", "POST", "/v1/kv/put", {"key": "", "value": 1}, AUTH, 400, "invalid_request"),
    ("put-key-missing", "POST", "/v1/kv/put", {"value": 1}, AUTH, 400, "invalid_request"),
    ("put-value-missing", "POST", "/v1/kv/put", {"key": "a"}, AUTH, 400, "invalid_request"),
    ("put-value-nan", "POST", "/v1/kv/put", b'{"key": "a", "value": NaN}', AUTH, 400, "invalid_request"),
    ("get-key-not-string", "POST", "/v1/kv/get", {"key": ["a"]}, AUTH, 400, "invalid_request"),
    ("get-consistency-bogus", "POST", "/v1/kv/get", {"key": "a", "consistency": "bogus"}, AUTH,
     400, "invalid_request"),
    ("range-consistency-bogus", "POST", "/v1/kv/range", {"prefix": "", "consistency": 7}, AUTH,
     400, "invalid_request"),
    ("range-limit-negative", "POST", "/v1/kv/range", {"prefix": "", "limit": -1}, AUTH,
     400, "invalid_request"),
    ("range-limit-float", "POST", "/v1/kv/range", {"prefix": "", "limit": 1.5}, AUTH,
     400, "invalid_request"),
    ("range-prefix-not-string", "POST", "/v1/kv/range", {"prefix": 3}, AUTH, 400, "invalid_request"),
    ("get-min-index-negative", "POST", "/v1/kv/get", {"key": "a", "min_index": -5}, AUTH,
     400, "invalid_request"),
    ("timeout-not-number", "POST", "/v1/kv/get", {"key": "a", "timeout": "soon"}, AUTH,
     400, "invalid_request"),
    ("timeout-zero", "POST", "/v1/kv/put", {"key": "a", "value": 1, "timeout": 0}, AUTH,
     400, "invalid_request"),
    ("delete-prefix-not-string", "POST", "/v1/kv/delete", {"prefix": 3}, AUTH, 400, "invalid_request"),
    ("cas-without-guard", "POST", "/v1/kv/cas", {"key": "a", "value": 1}, AUTH, 400, "invalid_request"),
    ("cas-negative-revision", "POST", "/v1/kv/cas",
     {"key": "a", "value": 1, "expect_mod_revision": -1}, AUTH, 400, "invalid_request"),
    ("txn-compare-not-list", "POST", "/v1/kv/txn", {"compare": {}}, AUTH, 400, "invalid_request"),
    ("txn-bad-op", "POST", "/v1/kv/txn", {"success": [{"op": "explode", "key": "a"}]}, AUTH,
     400, "invalid_request"),
    ("client-id-not-string", "POST", "/v1/kv/put",
     {"key": "a", "value": 1, "client_id": 5, "request_id": 1}, AUTH, 400, "invalid_request"),
    ("value-over-limit", "POST", "/v1/kv/put", {"key": "big", "value": "v" * (MAX_VALUE + 1)}, AUTH,
     413, "payload_too_large"),
    # 200 characters, 1,202 bytes once escaped as JSON: the escaped size counts
    ("escaped-value-over-limit", "POST", "/v1/kv/put", {"key": "big", "value": "\u0001" * 200},
     AUTH, 413, "payload_too_large"),
    ("txn-value-over-limit", "POST", "/v1/kv/txn",
     {"success": [{"op": "put", "key": "big", "value": "v" * (MAX_VALUE * 2)}]}, AUTH,
     413, "payload_too_large"),
    ("key-over-4096-bytes", "POST", "/v1/kv/put", {"key": "k" * 4097, "value": 1}, AUTH,
     413, "payload_too_large"),
    ("key-over-4096-bytes-utf8", "POST", "/v1/kv/put", {"key": "é" * 2049, "value": 1}, AUTH,
     413, "payload_too_large"),
    ("body-over-request-limit", "POST", "/v1/kv/put", {"key": "huge", "value": "v" * 200_000}, AUTH,
     413, "payload_too_large"),
    ("deeply-nested-value", "POST", "/v1/kv/put",
     b'{"key": "deep", "value": ' + _deep(20_000) + b"}", AUTH, 400, "invalid_request"),
    # Decodable, but deeper than every node could be sure to decode again when applying it.
    ("value-nested-past-the-command-limit", "POST", "/v1/kv/put",
     b'{"key": "deep", "value": ' + _deep(300) + b"}", AUTH, 400, "invalid_request"),
    ("missing-token", "POST", "/v1/kv/get", {"key": "a"}, NO_AUTH, 401, "unauthorized"),
    ("wrong-token", "POST", "/v1/kv/put", {"key": "a", "value": 1}, WRONG_AUTH, 401, "unauthorized"),
    ("status-missing-token", "GET", "/v1/status", None, NO_AUTH, 401, "unauthorized"),
    ("unknown-route", "POST", "/v1/kv/explode", {"key": "a"}, AUTH, 404, "not_found"),
    ("unknown-route-get", "GET", "/nothing/here", None, AUTH, 404, "not_found"),
    ("wrong-method-get-on-put", "GET", "/v1/kv/put", None, AUTH, 405, "method_not_allowed"),
    ("wrong-method-post-on-status", "POST", "/v1/status", {}, AUTH, 405, "method_not_allowed"),
    ("wrong-method-delete", "DELETE", "/v1/kv/get", None, AUTH, 405, "method_not_allowed"),
]


def _send(cluster: LocalCluster, node_id: str, method: str, path: str, body: Any,
          auth: str) -> httpx.Response:
    headers = {}
    if auth == AUTH:
        headers["Authorization"] = f"Bearer {cluster.token}"
    elif auth == WRONG_AUTH:
        headers["Authorization"] = f"Bearer {'0' * len(cluster.token)}"
    if isinstance(body, bytes):
        content = body
        headers["Content-Type"] = "application/json"
    elif body is None and method != "POST":
        content = None
    else:
        content = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    return httpx.request(method, cluster.nodes[node_id].endpoint + path, content=content,
                         headers=headers, timeout=10)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_a_4xx_json_error(cluster: LocalCluster, case: tuple) -> None:
    name, method, path, body, auth, status, code = case
    leader = cluster.wait_for_leader()
    for node_id in (leader, followers(cluster, leader)[0]):
        before = time.monotonic()
        response = _send(cluster, node_id, method, path, body, auth)
        assert time.monotonic() - before < 5, f"{name}: slow answer"
        assert response.status_code == status, (
            f"{name} on {node_id}: HTTP {response.status_code} {response.text[:300]}")
        assert response.headers["content-type"].startswith("application/json")
        answer = response.json()
        assert answer["error"] == code, answer
        assert isinstance(answer["message"], str) and answer["message"]
        assert "Traceback" not in response.text
        assert answer["header"]["node"] == node_id


def test_nodes_still_serve_after_all_the_bad_input(cluster: LocalCluster) -> None:
    # Runs after the parametrized cases (file order).
    assert cluster.check_exits() == [], "a node process died"
    for node_id, node in cluster.nodes.items():
        health = httpx.get(node.endpoint + "/health", timeout=5)
        assert health.status_code == 200 and health.json()["ok"] is True, (node_id, health.text)
    assert len(statuses(cluster)) == 3
    with cluster.client() as client:
        kv = client.put("bad/after", {"still": "fine"})
        assert client.get("bad/after", consistency="linearizable").value == {"still": "fine"}
        # Nothing from the rejected requests was stored.
        keys = {kv.key for kv in client.range("", consistency="linearizable").kvs}
    assert keys == {"bad/after"}, keys
    assert kv.version == 1


def test_client_raises_typed_errors_for_bad_input(cluster: LocalCluster) -> None:
    with cluster.client(timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(PayloadTooLarge):
            client.put("bad/big", "v" * (MAX_VALUE + 10))
        with pytest.raises(PayloadTooLarge):
            client.put("k" * 5000, 1)
        with pytest.raises(InvalidRequest):
            client.get("bad/x", consistency="bogus")
        with pytest.raises(InvalidRequest):
            client.range("bad/", limit=-1)
        assert time.monotonic() - started < 3, "client errors must not be retried"
        assert client.put("bad/edge", "v" * (MAX_VALUE - 2)).value == "v" * (MAX_VALUE - 2)
    with Client(cluster.endpoints, token="not-the-token", timeout=5) as client:
        with pytest.raises(AuthError):
            client.get("bad/x")
    with cluster.client() as client:
        assert client.delete("bad/edge") is True


def test_a_value_nested_well_inside_the_limit_is_stored(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    response = _send(cluster, leader, "POST", "/v1/kv/put",
                     b'{"key": "nested", "value": ' + _deep(150) + b"}", AUTH)
    assert response.status_code == 200, response.text
    answer = _send(cluster, leader, "POST", "/v1/kv/get",
                   {"key": "nested", "consistency": "linearizable"}, AUTH).json()
    depth, value = 0, answer["kv"]["value"]
    while value:
        depth, value = depth + 1, value[0]
    assert depth == 149   # 150 brackets: 149 nested lists inside the outermost one


def test_raft_port_answers_only_peers_that_hold_the_secret(cluster: LocalCluster) -> None:
    import socket

    from pysyncobj.utility import TcpUtility

    from consensus_store.node.engine.peer_frames import FrameError, ask_raft_port

    node = next(iter(cluster.nodes.values()))
    address, secret = node.config.raft_address, node.config.peer_secret
    status = ask_raft_port(address.host, address.port, secret, ["status"], 5.0)
    assert str(status["self"]) == str(address)
    with pytest.raises((FrameError, ConnectionError, socket.timeout)):
        ask_raft_port(address.host, address.port, "not the secret", ["status"], 2.0)
    # pysyncobj's own framing (pickle + zlib + Fernet) is not ours: no answer.
    with pytest.raises(Exception):
        TcpUtility(secret, 2.0).executeCommand(str(address), ["status"])
    with socket.create_connection((address.host, address.port), timeout=2.0) as sock:
        sock.sendall(b"\x10\x00\x00\x00" + b"garbage garbage!")
        assert sock.recv(100) == b""                    # dropped, no answer
    assert node.alive
    assert ask_raft_port(address.host, address.port, secret, ["status"], 5.0)["self"]
