"""The shared API layer (``consensus_store.api``): its layering, its import graph and its one
contract with whoever carries its requests (the ``Requester`` protocol and the op table).

The import checks read the source with ``ast`` (every ``import``, module-level or inside a
function) rather than importing it, so a cycle that only a lazy import closes is found too.
"""
from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import consensus_store
from consensus_store import api
from consensus_store.api import (AsyncKVApi, AsyncRequester, CoordinationApi, KVApi, Requester,
                                 Session)
from consensus_store.api.messaging import MessagingApi
from consensus_store.api.nodes import NodesApi
from consensus_store.errors import CompareFailed
from consensus_store.models import KeyValue, Leader, Member
from consensus_store.protocol import OPS

PACKAGE_DIR = Path(consensus_store.__file__).parent
# Answered by the node for operators and tests, not called through the API layer.
NOT_API_OPS = {"status", "sessions", "digest", "leader_transfer",   # this one: api/cluster.py
               "snapshot",    # a stream: client/snapshot_download.py
               "member_list", "member_add", "member_remove"}   # api/membership.py: own test

NOT_API_OPS |= {"message_forward"}    # node to node only (node/messaging.py)


# ---- the import graph ------------------------------------------------------------------------
def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(*packages: str) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((PACKAGE_DIR / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return ((PACKAGE_DIR / relative).with_suffix(".py").exists()
            or (PACKAGE_DIR / relative / "__init__.py").exists())


def imports_of(path: Path) -> set[str]:
    """Every consensus_store module ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:     # ``from pkg import submodule`` imports the submodule
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if is_module(candidate) else node.module)
    return {name for name in found if name.split(".")[0] == "consensus_store"}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_closed_by_a_lazy_import(tmp_path: Path) -> None:
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from consensus_store.client.core import ClientCore\n")
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"},
             "lazy": imports_of(lazy), "consensus_store.client.core": {"lazy"}}
    assert cycles(graph) == [["a", "b", "c"], ["consensus_store.client.core", "lazy"]]


def test_client_and_api_modules_import_one_another_without_a_cycle() -> None:
    modules = modules_of("client", "api")
    graph = {name: imports_of(path) & set(modules) for name, path in modules.items()}
    assert len(graph) >= 20 and graph["consensus_store.client.sync"]
    assert cycles(graph) == []


def test_the_api_layer_imports_neither_client_nor_node_nor_state() -> None:
    forbidden = ("consensus_store.client", "consensus_store.node", "consensus_store.state",
                 "consensus_store.cli", "consensus_store.testing")
    for name, path in modules_of("api").items():
        bad = {m for m in imports_of(path) if m.startswith(forbidden)}
        assert not bad, f"{name} imports {bad}"
    code = ("import sys, consensus_store.api; print(sorted(m for m in sys.modules if m.startswith("
            f"{forbidden!r} + ('pysyncobj', 'httpx', 'aiohttp'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_api_layer_reaches_into_no_other_object_private_names() -> None:
    for name, path in modules_of("api").items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                owner = node.value
                assert isinstance(owner, ast.Name) and owner.id in ("self", "cls"), (
                    f"{name}:{node.lineno} uses {ast.unparse(node)}")


# ---- the Requester contract ------------------------------------------------------------------
def wait_for(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


KV = {"key": "k", "value": 1, "create_revision": 2, "mod_revision": 3, "version": 1}
MEMBER = {"id": "m1", "node": "n1", "meta": None, "revision": 4, "session": 1}
LEADER = {"member": "m1", "priority": 0, "meta": None, "node": "n1", "token": 9}
LOCK_KEY = "_cs/lock/L/00000000000000000007"
HEADER = {"node": "n1", "applied_index": 7}
ANSWERS: dict[str, dict[str, Any]] = {
    "put": {"kv": KV}, "get": {"kv": KV}, "delete": {"deleted": 1},
    "cas": {"succeeded": False, "kv": KV}, "range": {"kvs": [KV], "count": 1},
    "txn": {"succeeded": True, "results": [], "header": {"revision": 3}},
    "session_keepalive": {"session": 1, "ttl": 60.0}, "session_close": {"ended": True},
    "group_create": {"created": True}, "group_delete": {"deleted": True},
    "group_join": {"member": MEMBER}, "group_update": {"member": MEMBER},
    "group_leave": {"left": True}, "groups_list": {"groups": ["g"]},
    "groups_members": {"members": [MEMBER], "header": HEADER},
    "name_register": {"registered": True}, "name_unregister": {"unregistered": True},
    "names_whereis": {"owner": {"value": "v"}}, "names_list": {"names": [{"name": "n"}]},
    "locks_list": {"locks": []}, "lock_acquire": {"key": LOCK_KEY, "token": 7},
    "locks_status": {"holder": {"key": LOCK_KEY}, "header": HEADER},
    "lock_release": {"released": True}, "election_campaign": {"leader": LEADER},
    "elections_leader": {"leader": LEADER, "candidates": [{"member": "m1"}], "header": HEADER},
    "election_resign": {"resigned": True}, "watch": {"events": []},
}
_ENVELOPE = {"from": "c", "seq": 1, "to": {"name": "n"}, "message": 1, "call": "x@n1"}
_CALLED = {"replies": {"m1": 2}, "bad_members": [], "no_reply": []}
ANSWERS.update({
    "message_send": {"delivered": True}, "message_reply": {"delivered": True},
    "message_broadcast": {"delivered": ["m1"], "undelivered": []}, "message_call": _CALLED,
    "inbox_poll": {"messages": [_ENVELOPE]},
    "nodes": {"nodes": [{"id": "n1", "api_address": "a", "up": True, "leader": True}]},
})


class Recorder:
    """The whole Requester protocol and nothing else: no ``_request``, no ``_level``."""

    __slots__ = ("default_consistency", "sent", "_lock")

    def __init__(self) -> None:
        self.default_consistency = "local"
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def request(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        spec = OPS[op]              # KeyError: an op the table does not declare
        declared = set(spec.body_fields())
        if "session_key" in declared:
            # A session's ``auth`` is the pair (id, key); where the op acts for a session it
            # already names (leave, update, release...) the node reads only the key and drops
            # the id, as it always has: the table rightly keeps the id out of those commands.
            declared.add("session")
        undeclared = set(body) - declared
        assert not undeclared, f"{op} sends fields the table does not declare: {undeclared}"
        with self._lock:
            self.sent.append((op, dict(body)))
        if op == "session_open":
            return {"session": {"id": 1, "ttl": body["ttl"], "node": "n1"}}
        return dict(ANSWERS[op])

    def sent_ops(self) -> set[str]:
        with self._lock:
            return {op for op, _ in self.sent}


class RecordingApi(KVApi, CoordinationApi):
    """What ``Client`` and ``Node`` are, minus the carrying: the calls over a Recorder."""

    def __init__(self, recorder: Recorder) -> None:
        self._init_coordination(60.0)
        self.recorder = recorder
        self.default_consistency = recorder.default_consistency

    def request(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        return self.recorder.request(op, body, timeout)


@pytest.fixture
def recorded() -> Iterator[tuple[RecordingApi, Recorder]]:
    recorder = Recorder()
    calls = RecordingApi(recorder)
    yield calls, recorder
    calls.close_session()


def test_every_call_and_recipe_sends_ops_and_fields_the_op_table_declares(
        recorded: tuple[RecordingApi, Recorder]) -> None:
    calls, recorder = recorded
    assert isinstance(recorder, Requester) and isinstance(calls, Requester)
    assert calls.put("k", 1) == KeyValue("k", 1, 2, 3, 1)
    assert calls.get("k") == KeyValue("k", 1, 2, 3, 1)
    assert calls.delete("k") is True and calls.delete_prefix("p/") == 1
    with pytest.raises(CompareFailed):
        calls.cas("k", 2, expect_value=1)
    assert calls.range("p/").count == 1
    assert calls.txn([{"key": "k"}]).revision == 3
    groups = calls.groups
    assert groups.create("g") and groups.delete("g")
    assert groups.join("g", meta=1) == Member.from_json(MEMBER)
    assert groups.update("g", "m1", 2).id == "m1" and groups.leave("g", "m1")
    assert groups.local_members("g") == [Member.from_json(MEMBER)]
    assert groups.which_groups() == ["g"]
    assert calls.register_name("n", "v") and calls.whereis_name("n") == "v"
    assert calls.unregister_name("n") and calls.registered_names() == ["n"]
    assert calls.locks() == []
    assert calls.trans("L", lambda: "done", timeout=5) == "done"
    with calls.lock("L", ttl=30.0) as token:
        assert token == 7
    election = calls.election("E")
    assert election.campaign("m1", timeout=5) == Leader.maybe(LEADER)
    assert election.is_leader()
    stop = threading.Event()
    changes = election.observe_changes(stop, poll_s=0.01)
    next(changes)
    next(changes)                      # one wait for a change: a "watch"
    election.resign()
    assert groups.send("g", "m1", 1) and groups.broadcast("g", 1).delivered == ["m1"]
    assert groups.multi_call("g", 1).replies == {"m1": 2} and election.call_leader(1) == 2
    assert MessagingApi.call_name(calls, "n", 1) == 2 and MessagingApi.send_name(calls, "n", 1)
    message = next(MessagingApi.inbox(calls))
    assert message.message == 1 and message.reply(3) is True
    assert NodesApi.nodes(calls)[0].up
    with calls.session(ttl=0.3) as session:       # keepalives every 0.1 s
        assert session.id == 1
        assert wait_for(lambda: "session_keepalive" in recorder.sent_ops())
    assert recorder.sent_ops() == set(OPS) - NOT_API_OPS
    reads = [body for op, body in recorder.sent if op in ("get", "range", "groups_list")]
    assert all(body["consistency"] == "local" for body in reads)   # the requester's default


def test_replicas_run_on_the_protocol_alone(recorded: tuple[RecordingApi, Recorder]) -> None:
    calls, recorder = recorded

    class Worker:
        active = threading.Event()

        def on_active(self) -> None:
            self.active.set()

    replicas = calls.replicas("R", Worker(), member="m1", replication_factor=1)
    try:
        assert Worker.active.wait(5.0)
        assert replicas.role == "active"
    finally:
        replicas.stop()
    assert ("election_resign", {"name": "replicas/R", "member": "m1", "session": 1,
                                "session_key": calls.default_session().auth["session_key"]}
            ) in recorder.sent


def test_a_session_needs_nothing_but_request() -> None:
    recorder = Recorder()
    session = Session(recorder, 60.0)
    session.close()
    assert [op for op, _ in recorder.sent] == ["session_open", "session_close"]
    assert recorder.sent[1][1] == session.auth


def test_the_async_kv_calls_send_what_the_blocking_ones_send() -> None:
    recorder = Recorder()

    class AsyncRecording(AsyncKVApi):
        default_consistency = "linearizable"

        async def request(self, op: str, body: dict[str, Any],
                          timeout: float | None) -> dict[str, Any]:
            return recorder.request(op, body, timeout)

    calls = AsyncRecording()
    assert isinstance(calls, AsyncRequester)
    assert asyncio.run(calls.get("k")) == KeyValue("k", 1, 2, 3, 1)
    assert recorder.sent == [("get", {"key": "k", "consistency": "linearizable"})]


def test_clients_are_requesters_and_the_old_names_still_import() -> None:
    from consensus_store.client import AsyncClient, Client
    from consensus_store.client.groups import rendezvous
    from consensus_store.client.lock import Lock
    from consensus_store.client.session import Session as OldSession

    assert OldSession is Session
    assert Lock is api.Lock and rendezvous is api.rendezvous
    client = Client(["http://127.0.0.1:9"])
    try:
        assert isinstance(client, Requester) and client._request == client._request
    finally:
        client.close()
    assert isinstance(AsyncClient(["http://127.0.0.1:9"]), AsyncRequester)


def test_the_node_builds_on_the_api_layer_and_imports_no_client_module() -> None:
    from consensus_store.node import Node
    for name, path in modules_of("node").items():
        bad = {m for m in imports_of(path) if m.startswith("consensus_store.client")}
        assert not bad, f"{name} imports {bad}"
    assert issubclass(Node, KVApi) and issubclass(Node, CoordinationApi)
    assert "request" in vars(Node)


def test_the_state_modules_import_one_another_without_a_cycle() -> None:
    modules = modules_of("state")
    graph = {name: imports_of(path) & set(modules) for name, path in modules.items()}
    assert graph["consensus_store.state.machine"] >= {"consensus_store.state.coordination"}
    assert cycles(graph) == []
