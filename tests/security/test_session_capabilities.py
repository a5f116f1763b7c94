"""Issue #10: a session id is a guessable Raft index, so it must not be a capability.

Each session has a secret key (made by the client, or by the node at open); keepalive, close
and every op acting for the session need it, else 403 `forbidden`.  An admin token may act for
any session.  The key never shows in /v1/sessions, in `_cs/`, in the node logs or data files.

Two readwrite tokens: "alice" owns the sessions, "mallory" attacks them (holding a valid token
is not enough); the cluster's admin token plays the operator.
"""
from __future__ import annotations

import hashlib
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from consensus_store.client import Client
from consensus_store.launcher import LocalCluster
from consensus_store.models import ConnectionState
from consensus_store.wire import FrameReader, decode, encode_auth, encode_request
from integration.support import ClusterPool, followers, wait_until

ALICE, MALLORY = secrets.token_urlsafe(24), secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    paths = module_pool.write_configs(3)
    tokens_file = paths[0].parent / "tokens.toml"
    with open(tokens_file, "a") as out:
        for name, token in (("alice", ALICE), ("mallory", MALLORY)):
            out.write(f'\n[[tokens]]\nname = "{name}"\ntoken = "{token}"\nrole = "readwrite"\n')
    return module_pool.launch(paths)


def call(cluster: LocalCluster, token: str, path: str, body: dict[str, Any],
         node_id: str | None = None) -> httpx.Response:
    node = cluster.nodes[node_id] if node_id else next(iter(cluster.nodes.values()))
    return httpx.post(node.endpoint + path, json=body, timeout=10.0,
                      headers={"Authorization": f"Bearer {token}"})


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def leader_id(cluster: LocalCluster) -> str:
    def find() -> str | None:
        for node_id in cluster.nodes:
            try:
                status = httpx.get(cluster.nodes[node_id].endpoint + "/v1/status", timeout=2.0,
                                   headers={"Authorization": f"Bearer {cluster.token}"}).json()
            except httpx.HTTPError:
                continue
            if status.get("role") == "leader":
                return node_id
        return None
    return wait_until(find, 15.0, what="a leader")


class Owned:
    """A session of alice's holding a member, a name, a lock and a candidacy."""

    def __init__(self, cluster: LocalCluster, tag: str, ttl: float = 30) -> None:
        self.cluster, self.tag = cluster, tag
        opened = ok(call(cluster, ALICE, "/v1/session/open", {"ttl": ttl}))
        self.id: int = opened["session"]["id"]
        self.key: str = opened["session_key"]
        self.auth = {"session": self.id, "session_key": self.key}
        self.group, self.name, self.lock, self.election = (f"{tag}-g", f"{tag}-n", f"{tag}-l",
                                                           f"{tag}-e")
        ok(call(cluster, ALICE, "/v1/groups/create", {"group": self.group}))
        self.member = ok(call(cluster, ALICE, "/v1/groups/join",
                              {"group": self.group, "member": "m", **self.auth}))["member"]["id"]
        assert ok(call(cluster, ALICE, "/v1/names/register",
                       {"name": self.name, "value": 1, **self.auth}))["registered"]
        self.lock_key = ok(call(cluster, ALICE, "/v1/locks/acquire",
                                {"name": self.lock, **self.auth}))["key"]
        ok(call(cluster, ALICE, "/v1/elections/campaign",
                {"name": self.election, "member": "c", **self.auth}))

    def acting_requests(self) -> list[tuple[str, dict[str, Any]]]:
        """Every request that acts for this session, without its key."""
        return [
            ("/v1/session/keepalive", {"session": self.id}),
            ("/v1/session/close", {"session": self.id}),
            ("/v1/locks/release", {"name": self.lock, "key": self.lock_key}),
            ("/v1/names/unregister", {"name": self.name}),
            ("/v1/groups/leave", {"group": self.group, "member": self.member}),
            ("/v1/groups/update", {"group": self.group, "member": self.member, "meta": "x"}),
            ("/v1/elections/resign", {"name": self.election, "member": "c"}),
            ("/v1/groups/join", {"group": self.group, "session": self.id}),
            ("/v1/names/register", {"name": f"{self.tag}-other", "session": self.id}),
            ("/v1/locks/acquire", {"name": self.lock, "session": self.id}),
            ("/v1/elections/campaign", {"name": self.election, "member": "x", "session": self.id}),
            ("/v1/kv/put", {"key": f"{self.tag}/eph", "value": 1, "session": self.id}),
            ("/v1/kv/cas", {"key": f"{self.tag}/eph", "value": 1, "expect_mod_revision": 0,
                            "session": self.id}),
            ("/v1/kv/txn", {"success": [{"op": "put", "key": f"{self.tag}/eph", "value": 1,
                                         "session": self.id}]}),
        ]

    def intact(self) -> bool:
        """Everything the session owns is still there, unchanged."""
        members = ok(call(self.cluster, ALICE, "/v1/groups/members",
                          {"group": self.group, "consistency": "linearizable"}))["members"]
        owner = ok(call(self.cluster, ALICE, "/v1/names/whereis",
                        {"name": self.name, "consistency": "linearizable"}))["owner"]
        lock = ok(call(self.cluster, ALICE, "/v1/locks/status",
                       {"name": self.lock, "consistency": "linearizable"}))
        election = ok(call(self.cluster, ALICE, "/v1/elections/leader",
                           {"name": self.election, "consistency": "linearizable"}))
        eph = ok(call(self.cluster, ALICE, "/v1/kv/get",
                      {"key": f"{self.tag}/eph", "consistency": "linearizable"}))["kv"]
        return ([(m["id"], m["meta"]) for m in members] == [(self.member, None)]
                and owner is not None and owner["session"] == self.id
                and lock["holder"]["key"] == self.lock_key and not lock["waiters"]
                and [c["member"] for c in election["candidates"]] == ["c"]
                and eph is None)


def test_the_owner_with_its_key_keeps_releases_and_closes(cluster: LocalCluster) -> None:
    owned = Owned(cluster, "own")
    for node_id in cluster.nodes:      # the leader notes it; followers forward it
        assert ok(call(cluster, ALICE, "/v1/session/keepalive", owned.auth, node_id))["ttl"] == 30
    assert ok(call(cluster, ALICE, "/v1/groups/update", {"group": owned.group, "member": "m",
                                                          "meta": 7, **owned.auth}))
    ok(call(cluster, ALICE, "/v1/kv/put", {"key": "own/eph", "value": 1, **owned.auth}))
    txn = {"success": [{"op": "put", "key": "own/eph2", "value": 2, **owned.auth}]}
    assert ok(call(cluster, ALICE, "/v1/kv/txn", txn))["succeeded"]
    assert ok(call(cluster, ALICE, "/v1/locks/release",
                   {"name": owned.lock, "key": owned.lock_key, **owned.auth}))["released"]
    assert ok(call(cluster, ALICE, "/v1/names/unregister",
                   {"name": owned.name, **owned.auth}))["unregistered"]
    assert ok(call(cluster, ALICE, "/v1/groups/leave",
                   {"group": owned.group, "member": "m", **owned.auth}))["left"]
    assert ok(call(cluster, ALICE, "/v1/elections/resign",
                   {"name": owned.election, "member": "c", **owned.auth}))["resigned"]
    closed = ok(call(cluster, ALICE, "/v1/session/close", owned.auth))
    assert closed == {"ended": True, "deleted": 2, "header": closed["header"]}   # the two puts


@pytest.mark.parametrize("key", [None, "wrong-" + "k" * 40], ids=["no key", "wrong key"])
def test_without_the_key_every_op_for_the_session_is_forbidden(cluster: LocalCluster,
                                                               key: str | None) -> None:
    owned = Owned(cluster, f"attack-{'none' if key is None else 'wrong'}")
    presented = {} if key is None else {"session_key": key}
    for path, body in owned.acting_requests():
        for node_id in cluster.nodes:
            for token in (MALLORY, ALICE):     # a valid token is not the session's key
                response = call(cluster, token, path, {**body, **presented}, node_id)
                assert response.status_code == 403, (path, node_id, response.text)
                assert response.json()["error"] == "forbidden"
                assert owned.key not in response.text
    assert owned.intact()


def test_client_supplied_admin_or_key_hash_fields_are_ignored(cluster: LocalCluster) -> None:
    owned = Owned(cluster, "smuggle")
    key_hash = hashlib.sha256(owned.key.encode()).hexdigest()    # as if the hash had leaked
    smuggled = {"admin": True, "key_hash": key_hash, "as_admin": True}
    for path, body in owned.acting_requests():
        response = call(cluster, MALLORY, path, {**body, **smuggled})
        assert response.status_code == 403, (path, response.text)
    follower = followers_of(cluster)[0]
    forwarded = {"session": owned.id, "forwarded": True, **smuggled}
    assert call(cluster, MALLORY, "/v1/session/keepalive", forwarded, follower).status_code == 403
    assert call(cluster, MALLORY, "/v1/session/keepalive", forwarded,
                leader_id(cluster)).status_code == 403
    assert owned.intact()


def test_a_client_cannot_claim_its_keepalive_was_forwarded(cluster: LocalCluster) -> None:
    """Only the node credential may say "forwarded": a client saying so to a follower still
    gets its keepalive forwarded to the leader (before: 503 "no leader known")."""
    owned = Owned(cluster, "forwarded-flag")
    follower = followers_of(cluster)[0]
    answer = call(cluster, ALICE, "/v1/session/keepalive", {**owned.auth, "forwarded": True},
                  follower)
    assert ok(answer)["session"] == owned.id


def followers_of(cluster: LocalCluster) -> list[str]:
    return [node_id for node_id in cluster.nodes if node_id != leader_id(cluster)]


def test_guessing_sequential_session_ids_gets_nothing(cluster: LocalCluster) -> None:
    owned = Owned(cluster, "guess", ttl=300)
    live = []
    for guess in range(owned.id + 10, 0, -1):          # every id there can be by now
        answer = call(cluster, MALLORY, "/v1/session/keepalive", {"session": guess})
        assert answer.status_code in (403, 404), (guess, answer.text)
        if answer.status_code == 403:
            live.append(guess)
    assert owned.id in live
    for guess in live:              # closing them: refused too (or expired meanwhile: no-op)
        answer = call(cluster, MALLORY, "/v1/session/close", {"session": guess})
        assert answer.status_code == 403 or ok(answer)["ended"] is False, (guess, answer.text)
        assert guess != owned.id or answer.status_code == 403
    # an id that is no session: nothing to end, nothing learnt
    assert ok(call(cluster, MALLORY, "/v1/session/close", {"session": owned.id + 1}))["ended"] is False
    assert ok(call(cluster, ALICE, "/v1/session/keepalive", owned.auth))["session"] == owned.id
    assert owned.intact()


def test_an_admin_may_act_for_any_session_without_its_key(cluster: LocalCluster) -> None:
    owned = Owned(cluster, "admin")
    admin = cluster.token
    for node_id in cluster.nodes:
        assert ok(call(cluster, admin, "/v1/session/keepalive", {"session": owned.id}, node_id))
    assert ok(call(cluster, admin, "/v1/locks/release",
                   {"name": owned.lock, "key": owned.lock_key}))["released"]
    assert ok(call(cluster, admin, "/v1/names/unregister", {"name": owned.name}))["unregistered"]
    closed = ok(call(cluster, admin, "/v1/session/close", {"session": owned.id}))
    assert closed["ended"] is True
    members = ok(call(cluster, ALICE, "/v1/groups/members",
                      {"group": owned.group, "consistency": "linearizable"}))["members"]
    assert members == []


def test_no_key_or_key_hash_in_sessions_list_reserved_keys_logs_or_data(cluster: LocalCluster) -> None:
    owned = Owned(cluster, "leak")
    own_key = secrets.token_urlsafe(32)
    chosen = ok(call(cluster, ALICE, "/v1/session/open", {"ttl": 30, "session_key": own_key}))
    assert chosen["session_key"] == own_key
    secrets_ = [owned.key, own_key]
    hashes = [hashlib.sha256(k.encode()).hexdigest() for k in secrets_]
    listed = httpx.get(cluster.nodes["n1"].endpoint + "/v1/sessions", timeout=10.0,
                       headers={"Authorization": f"Bearer {cluster.token}"})
    reserved = call(cluster, ALICE, "/v1/kv/range", {"prefix": "_cs/", "consistency": "linearizable"})
    assert owned.id in [s["id"] for s in listed.json()["sessions"]]
    assert reserved.json()["count"] >= 4
    for text in (listed.text, reserved.text):
        for secret in secrets_ + hashes:
            assert secret not in text
    # a forbidden request's answer names no key either
    refused = call(cluster, MALLORY, "/v1/session/close", {"session": owned.id,
                                                           "session_key": "x" * 20})
    assert refused.status_code == 403 and "x" * 20 not in refused.text
    for node in cluster.nodes.values():      # journals, snapshots, logs: the hash at most
        for path in files_under(node.data_dir) + [node.log_path]:
            data = path.read_bytes()
            for secret in secrets_:
                assert secret.encode() not in data, path


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def test_the_python_client_carries_its_session_keys(cluster: LocalCluster) -> None:
    """A readwrite client (no admin rights) uses every recipe through its sessions' keys."""
    with Client(cluster.endpoints, token=ALICE, session_ttl=1.5) as client:
        client.groups.create("py")
        member = client.groups.join("py", meta={"port": 1})
        client.groups.update("py", member.id, {"port": 2})
        assert client.register_name("py-name", "here")
        with client.lock("py-lock") as token:
            assert token > 0
        election = client.election("py-election")
        assert election.campaign("me", timeout=10.0).member == "me"
        election.resign()
        session = client.default_session()
        start = time.monotonic()
        wait_until(lambda: connected_for(session, start, 3 * session.ttl), 10.0,
                   what="a session kept alive for three TTLs")
        assert "session_key" not in repr(session) and session.auth["session_key"] not in repr(session)
        assert client.unregister_name("py-name")
        assert client.groups.leave("py", member)
        with client.session(ttl=5) as explicit:
            assert explicit.state is ConnectionState.CONNECTED
        assert explicit.state is ConnectionState.LOST
    assert ok(call(cluster, ALICE, "/v1/names/whereis", {"name": "py-name"}))["owner"] is None


def connected_for(session: Any, start: float, seconds: float) -> bool:
    """False until ``seconds`` passed since ``start``; fails as soon as the session is not
    CONNECTED (its keepalives were refused)."""
    assert session.state is ConnectionState.CONNECTED
    return time.monotonic() - start > seconds


def test_a_retried_open_with_the_clients_key_finds_the_same_session(cluster: LocalCluster) -> None:
    body = {"ttl": 10, "session_key": secrets.token_urlsafe(32), "client_id": "retry-open",
            "request_id": 1, "done_below": 1}
    first, again = (ok(call(cluster, ALICE, "/v1/session/open", body, n)) for n in ("n1", "n2"))
    assert first["session"]["id"] == again["session"]["id"]
    assert first["session_key"] == again["session_key"] == body["session_key"]
    made_by_node = {"ttl": 10, "client_id": "retry-open", "request_id": 2, "done_below": 2}
    ok(call(cluster, ALICE, "/v1/session/open", made_by_node))
    retried = call(cluster, ALICE, "/v1/session/open", made_by_node)
    assert retried.status_code == 400 and "session_key" in retried.json()["message"]


@pytest.mark.parametrize("key", ["short", "x" * 300, "tab\there-0123456789", 12345])
def test_a_weak_or_malformed_client_key_is_refused(cluster: LocalCluster, key: Any) -> None:
    response = call(cluster, ALICE, "/v1/session/open", {"ttl": 10, "session_key": key})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def native(cluster: LocalCluster, token: str, op: str, body: dict[str, Any],
           node_id: str = "n2") -> dict[str, Any]:
    """One request over the native protocol: {"status", "body"}."""
    address = cluster.nodes[node_id].config.native_address
    assert address is not None
    reader = FrameReader()
    with socket.create_connection((address.host, address.port), timeout=10.0) as sock:
        for frame in (encode_auth(token), encode_request(2, op, body)):
            sock.sendall(frame)
            while (payload := reader.next()) is None:
                chunk = sock.recv(65536)
                assert chunk, "the node closed the connection"
                reader.feed(chunk)
            answer = decode(payload)
    return answer


def test_the_native_protocol_checks_session_keys_alike(cluster: LocalCluster) -> None:
    owned = Owned(cluster, "native")
    for op, body in [("session_keepalive", {"session": owned.id}),
                     ("lock_release", {"name": owned.lock, "key": owned.lock_key}),
                     ("name_unregister", {"name": owned.name, "admin": True}),
                     ("session_close", {"session": owned.id, "session_key": "k" * 43})]:
        answer = native(cluster, MALLORY, op, body)
        assert answer["status"] == 403 and answer["body"]["error"] == "forbidden", (op, answer)
    assert owned.intact()
    assert native(cluster, ALICE, "session_keepalive", owned.auth)["status"] == 200
    assert native(cluster, cluster.token, "session_close", {"session": owned.id})["status"] == 200
