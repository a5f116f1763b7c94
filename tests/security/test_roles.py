"""Issue #10: client roles (read / readwrite / admin) on both protocols, and the tokens file
reloaded without a restart (every second, and on SIGHUP).

Every test writes the tokens file it needs (the cluster's admin token always stays in it) and
waits until every node took it.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from consensus_store.client import Client
from consensus_store.launcher import LocalCluster
from consensus_store.wire import FrameReader, decode, encode_auth, encode_request
from integration.support import ClusterPool, followers, wait_until

RELOAD_WAIT_S = 10.0      # a check a second per node, on a loaded machine


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3)


# ---- helpers ------------------------------------------------------------------------------------
def tokens_path(cluster: LocalCluster) -> Path:
    return next(iter(cluster.nodes.values())).config.tokens_file


def write_tokens(cluster: LocalCluster, tokens: dict[str, tuple[str, str]]) -> None:
    """The tokens file: the cluster's admin token plus ``{name: (token, role)}``, replaced
    atomically (a node never reads half a file)."""
    entries = {"admin": (cluster.token, "admin"), **tokens}
    text = "".join(f'[[tokens]]\nname = "{name}"\ntoken = "{token}"\nrole = "{role}"\n\n'
                   for name, (token, role) in entries.items())
    replace_file(tokens_path(cluster), text)


def replace_file(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    os.replace(temporary, path)


def http(cluster: LocalCluster, node_id: str, method: str, path: str, token: str,
         body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(method, cluster.nodes[node_id].endpoint + path, timeout=10.0,
                         headers={"Authorization": f"Bearer {token}"},
                         json=body if method == "POST" else None)


def works_everywhere(cluster: LocalCluster, token: str) -> bool:
    return all(http(cluster, node_id, "GET", "/v1/status", token).status_code == 200
               for node_id in cluster.nodes)


def refused_everywhere(cluster: LocalCluster, token: str) -> bool:
    return all(http(cluster, node_id, "GET", "/v1/status", token).status_code == 401
               for node_id in cluster.nodes)


def fresh_tokens(cluster: LocalCluster, *roles: str) -> dict[str, str]:
    """New tokens of ``roles`` in the tokens file, in force on every node; {role: token}."""
    tokens = {role: secrets.token_urlsafe(24) for role in roles}
    write_tokens(cluster, {f"{role}-{token[:6]}": (token, role) for role, token in tokens.items()})
    for token in tokens.values():
        wait_until(lambda: works_everywhere(cluster, token), RELOAD_WAIT_S,
                   what="a new token accepted by every node")
    return tokens


class NativeConnection:
    """One native-protocol connection, one request at a time (for checks, not speed)."""

    def __init__(self, cluster: LocalCluster, node_id: str) -> None:
        address = cluster.nodes[node_id].config.native_address
        assert address is not None
        self.socket = socket.create_connection((address.host, address.port), timeout=10.0)
        self.reader = FrameReader()
        self.next_id = 1

    def send(self, data: bytes) -> dict[str, Any]:
        self.socket.sendall(data)
        while (payload := self.reader.next()) is None:
            chunk = self.socket.recv(65536)
            if not chunk:
                raise ConnectionError("the node closed the connection")
            self.reader.feed(chunk)
        return decode(payload)

    def auth(self, token: str) -> dict[str, Any]:
        return self.send(encode_auth(token))

    def request(self, op: str, **body: Any) -> dict[str, Any]:
        self.next_id += 1
        return self.send(encode_request(self.next_id, op, body))

    def is_closed(self) -> bool:
        try:
            return self.socket.recv(1) == b""
        except socket.timeout:
            return False

    def close(self) -> None:
        self.socket.close()


def log_lines(cluster: LocalCluster, node_id: str, text: str) -> int:
    return cluster.nodes[node_id].log_path.read_text(errors="replace").count(text)


# ---- roles over HTTP ----------------------------------------------------------------------------
def test_read_token_reads_but_cannot_write_over_http(cluster: LocalCluster) -> None:
    token = fresh_tokens(cluster, "read")["read"]
    node_id = cluster.wait_for_leader()
    for path, body in [("/v1/kv/put", {"key": "roles/r", "value": 1}),
                       ("/v1/kv/delete", {"key": "roles/r"}),
                       ("/v1/kv/txn", {"success": [{"op": "put", "key": "roles/r", "value": 1}]}),
                       ("/v1/session/open", {"ttl": 5}),
                       ("/v1/groups/join", {"group": "g", "member": "m", "session": 1}),
                       ("/v1/locks/acquire", {"name": "l", "session": 1})]:
        reply = http(cluster, node_id, "POST", path, token, body)
        assert reply.status_code == 403, (path, reply.text)
        assert reply.json()["error"] == "forbidden" and "read" in reply.json()["message"]
    assert http(cluster, node_id, "POST", "/v1/kv/get", token, {"key": "roles/r"}).json()["kv"] is None
    for method, path in [("POST", "/v1/kv/range"), ("GET", "/v1/status"),
                         ("POST", "/v1/groups/list"), ("POST", "/v1/locks/list")]:
        assert http(cluster, node_id, method, path, token, {}).status_code == 200, path
    with cluster.client() as admin:
        assert admin.get("roles/r") is None      # nothing was written


def test_digest_and_session_listing_are_admin_only(cluster: LocalCluster) -> None:
    tokens = fresh_tokens(cluster, "read", "readwrite")
    node_id = cluster.wait_for_leader()
    for path in ("/v1/digest", "/v1/sessions"):
        for role in ("read", "readwrite"):
            reply = http(cluster, node_id, "GET", path, tokens[role])
            assert (reply.status_code, reply.json()["error"]) == (403, "forbidden"), (path, role)
        assert http(cluster, node_id, "GET", path, cluster.token).status_code == 200, path
    reply = http(cluster, node_id, "POST", "/v1/kv/put", tokens["readwrite"],
                 {"key": "roles/rw", "value": 2})
    assert reply.status_code == 200 and reply.json()["kv"]["value"] == 2


# ---- roles over the native protocol -------------------------------------------------------------
def test_read_token_cannot_write_over_native_and_the_connection_stays_open(
        cluster: LocalCluster) -> None:
    tokens = fresh_tokens(cluster, "read", "readwrite")
    node_id = cluster.wait_for_leader()
    connection = NativeConnection(cluster, node_id)
    try:
        assert connection.auth(tokens["read"])["status"] == 200
        for op, body in [("put", {"key": "roles/n", "value": 1}), ("session_open", {"ttl": 5}),
                         ("digest", {}), ("sessions", {})]:
            answer = connection.request(op, **body)
            assert (answer["status"], answer["body"]["error"]) == (403, "forbidden"), op
        answer = connection.request("get", key="roles/n")
        assert (answer["status"], answer["body"]["kv"]) == (200, None)
        # a second auth frame switches the connection to that token's role
        assert connection.auth(tokens["readwrite"])["status"] == 200
        assert connection.request("put", key="roles/n", value=3)["status"] == 200
        assert connection.request("digest")["status"] == 403
        assert connection.auth(cluster.token)["status"] == 200
        assert connection.request("digest")["status"] == 200
    finally:
        connection.close()


# ---- forwarded keepalives ------------------------------------------------------------------------
def test_a_follower_forwards_keepalives_with_the_node_token(cluster: LocalCluster) -> None:
    token = fresh_tokens(cluster, "readwrite")["readwrite"]
    leader = cluster.wait_for_leader()
    follower = followers(cluster, leader)[0]
    with Client([cluster.nodes[follower].endpoint], token=token, timeout=5.0) as client:
        session = client.session(ttl=5.0)
        try:
            acting_for = getattr(session, "auth", {"session": session.id})   # id (+ key)
            answer = client._request("session_keepalive", acting_for, 5.0)
            assert answer["session"] == session.id
        finally:
            session.close()


# ---- reload --------------------------------------------------------------------------------------
def test_tokens_file_changes_take_effect_without_restart(cluster: LocalCluster) -> None:
    pids = {node_id: node.process.pid for node_id, node in cluster.nodes.items()}  # type: ignore[union-attr]
    token = secrets.token_urlsafe(24)
    assert refused_everywhere(cluster, token)
    write_tokens(cluster, {"added": (token, "readwrite")})
    wait_until(lambda: works_everywhere(cluster, token), RELOAD_WAIT_S,
               what="an added token accepted by every node")
    node_id = cluster.wait_for_leader()
    connection = NativeConnection(cluster, node_id)
    try:
        assert connection.auth(token)["status"] == 200
        assert connection.request("put", key="reload/k", value=1)["status"] == 200

        # demoted to read: the same connection may no longer write
        write_tokens(cluster, {"added": (token, "read")})
        wait_until(lambda: http(cluster, node_id, "POST", "/v1/kv/put", token,
                                {"key": "reload/k", "value": 2}).status_code == 403,
                   RELOAD_WAIT_S, what="the demoted token refused a write")
        answer = connection.request("put", key="reload/k", value=2)
        assert (answer["status"], answer["body"]["error"]) == (403, "forbidden")

        # removed: refused on HTTP, on new native connections, and on the open one
        write_tokens(cluster, {})
        wait_until(lambda: refused_everywhere(cluster, token), RELOAD_WAIT_S,
                   what="a removed token refused by every node")
        answer = connection.request("get", key="reload/k")
        assert (answer["status"], answer["body"]["error"]) == (401, "unauthorized")
        assert connection.is_closed()
    finally:
        connection.close()
    fresh = NativeConnection(cluster, node_id)
    try:
        assert fresh.auth(token)["status"] == 401
    finally:
        fresh.close()
    assert {node_id: node.process.pid for node_id, node in cluster.nodes.items()} == pids  # type: ignore[union-attr]


def test_an_invalid_tokens_file_keeps_the_tokens_in_force(cluster: LocalCluster) -> None:
    token = fresh_tokens(cluster, "read")["read"]
    before = {node_id: log_lines(cluster, node_id, "tokens file not reloaded")
              for node_id in cluster.nodes}
    replace_file(tokens_path(cluster), "[[tokens]]\nname = 'broken\n")
    wait_until(lambda: all(log_lines(cluster, node_id, "tokens file not reloaded")
                           > before[node_id] for node_id in cluster.nodes),
               RELOAD_WAIT_S, what="every node logged the bad tokens file")
    assert works_everywhere(cluster, token) and works_everywhere(cluster, cluster.token)
    for node_id in cluster.nodes:     # one line, no traceback
        after = cluster.nodes[node_id].log_path.read_text(errors="replace").split(
            "tokens file not reloaded")[-1].splitlines()
        assert len(after) < 2 or not after[1].startswith("Traceback"), after[:3]
    # fixed again: reloaded (the tokens of the fixed file are in force)
    replacement = fresh_tokens(cluster, "read")["read"]
    assert works_everywhere(cluster, replacement) and refused_everywhere(cluster, token)


def test_sighup_reloads_the_tokens_file(cluster: LocalCluster) -> None:
    fresh_tokens(cluster, "read")
    node = cluster.nodes[followers(cluster, cluster.wait_for_leader())[0]]
    before = log_lines(cluster, node.id, "client tokens from")
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGHUP)     # a process this test's fixture started
    wait_until(lambda: log_lines(cluster, node.id, "client tokens from") > before, 5.0,
               what="SIGHUP reloaded the (unchanged) tokens file")
    assert node.alive and works_everywhere(cluster, cluster.token)
