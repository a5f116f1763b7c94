"""Property-based fuzzing of every way into a node (issue #10, item 9): HTTP bodies on every route,
native protocol frames, and frames on the raft port (garbage, and frames sealed with the peer key
but carrying malformed Raft messages).

The property, for every input: the answer is a 2xx, or a 4xx with a JSON ``{"error", "message"}``
body (an answer frame with that status on the native port), or a closed connection; never a 5xx,
never a traceback or a failed raft tick in any node's log.  After each run every node is still
running, commits a write and serves a linearizable read through itself, and the replicas agree
(same ``/v1/digest`` at the same applied index).

How: one hypothesis run per HTTP route and per native op (hypothesis's choice among 32 routes is
far from even), each after a sweep that sets every field of the op's valid body, one at a time,
to each JSON type it does not expect (hypothesis alone missed such a bug when one was planted).
Examples name a node by role (leader, follower), so they do the same on every run whichever
node won the election.

Reproducible: ``derandomize=True`` (the examples derive from each test's source: the same on
every run and in CI) and no example database.  One cluster serves the module; the sealed-frame
tests run last, since a message a peer is trusted with could damage the cluster the others use.
A node that dies or stops answering fails that example and every later one, naming the first
culprit.  Requests that legitimately wait (a long-poll ``wait``, a session read ahead of the
replica) are shortened before sending: waiting is not what is fuzzed here.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from consensus_store import fast_json
from consensus_store.launcher import LocalCluster, write_cluster_configs
from consensus_store.node.engine.peer_frames import (FIRST_FRAME_MAX_BYTES, FrameOpener, FrameSealer,
                                              master_key, unwrap_keyed)
from consensus_store.protocol import COORDINATION_READS, COORDINATION_WRITES, HEALTH_ROUTE, ROUTES
from consensus_store.wire import FrameReader, decode, encode_auth, encode_request, frame

from integration.support import ClusterPool, append_toml, node_client, wait_until

MAX_VALUE = 4096        # small limits: the fuzz reaches 413 without megabyte bodies
LEADER_STATE = 2        # pysyncobj's status "state"
ROLES = 3               # examples pick a node by role: 0 the leader, 1 and 2 the followers
LOG_PROBLEMS = ("Traceback", "raft tick failed")


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    # Durable in the process only: no fsync per write, so a thousand examples fit the budget.
    paths = write_cluster_configs(module_pool.root / "fuzz" / "configs", 3,
                                  durability="process")
    append_toml(paths, f"[limits]\nmax_value_bytes = {MAX_VALUE}")
    return module_pool.launch(paths)


# ---- the node's side: logs, liveness, agreement -------------------------------------------------
def by_role(cluster: LocalCluster) -> list[str]:
    """Node ids, the leader first: an example names a role, not a node, so that it does the
    same thing on every run whichever node won the election."""
    leader = cluster.wait_for_leader()
    return [leader, *sorted(node_id for node_id in cluster.nodes if node_id != leader)]


class NodeLogs:
    """New lines of every node's log since the last look."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.paths = {node_id: node.log_path for node_id, node in cluster.nodes.items()}
        self.offsets = {node_id: self._size(path) for node_id, path in self.paths.items()}

    @staticmethod
    def _size(path: Path) -> int:
        return path.stat().st_size if path.exists() else 0

    def skip(self) -> None:
        """Forget what was logged so far (by an example that failed before it looked)."""
        self.offsets = {node_id: self._size(path) for node_id, path in self.paths.items()}

    def problems(self) -> list[str]:
        """Each traceback or failed tick, with the lines after it."""
        found = []
        for node_id, path in self.paths.items():
            with open(path, "rb") as log:
                log.seek(self.offsets[node_id])
                data = log.read()
            self.offsets[node_id] += len(data)
            lines = data.decode(errors="replace").splitlines()
            flagged = [any(problem in line for problem in LOG_PROBLEMS) for line in lines]
            # "raft tick failed" and the "Traceback" line under it are one problem
            starts = [n for n, flag in enumerate(flagged) if flag and not (n and flagged[n - 1])]
            for first, after in zip(starts, [*starts[1:], len(lines)]):
                found.append(f"{node_id}: " + "\n".join(lines[first:min(after, first + 40)]))
        return found


class LoggedError(AssertionError):
    """A node logged a traceback.  Subclassed per place it was raised (``logged_error``), so
    that hypothesis reports each distinct bug, not only the first it met."""


_LOGGED_ERRORS: dict[str, type[LoggedError]] = {}


def logged_error(problem: str) -> type[LoggedError]:
    frames = re.findall(r'File "([^"]+)", line (\d+)', problem)
    raised = re.findall(r"^(\w+(?:Error|Exception)\b.*)$", problem, re.MULTILINE)
    where = f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else "no traceback"
    name = f"{raised[-1].split(':')[0] if raised else 'Logged'} at {where}"
    if name not in _LOGGED_ERRORS:
        _LOGGED_ERRORS[name] = type(re.sub(r"\W", "_", name), (LoggedError,), {})
    return _LOGGED_ERRORS[name]


class NodeStuck(Exception):
    """A node's raft thread did not answer, or its port refused us, before anything odd was
    sent on that connection."""


@dataclass
class Latch:
    """What first broke the module's cluster (a dead or stuck node), if anything."""

    broken_by: str | None = None


@pytest.fixture(scope="module")
def latch() -> Latch:
    return Latch()


class Guard:
    """Checks around each example.  A logged traceback fails that example only (the offsets
    moved on, so hypothesis can shrink it).  A dead or stuck node fails it and every later
    example, of this test and of the tests after it, which then name the first culprit: a
    broken cluster would otherwise make hypothesis "shrink" to an innocent example."""

    def __init__(self, cluster: LocalCluster, latch: Latch, *, logs: bool = True) -> None:
        self.cluster = cluster
        self.latch = latch
        self._fail_if_broken()
        self.logs = NodeLogs(cluster) if logs else None

    def _fail_if_broken(self) -> None:
        if self.latch.broken_by is not None:
            pytest.fail(f"the cluster was already broken by an earlier example:\n"
                        f"{self.latch.broken_by}")

    def _break(self, example: str, why: str) -> None:
        self.latch.broken_by = f"{example}\n-> {why}"
        pytest.fail(self.latch.broken_by)

    def begin(self) -> None:
        """Before an example: fail if the cluster is broken; start its log from here."""
        self._fail_if_broken()
        if self.logs is not None:
            self.logs.skip()

    @contextlib.contextmanager
    def example(self, description: str) -> Iterator[None]:
        """Around the sending: a node that stops answering breaks the cluster."""
        self.begin()
        try:
            yield
        except (NodeStuck, OSError) as exc:
            self._break(description, f"stuck: {type(exc).__name__}: {exc}")

    def check(self, example: str, still_serving: Callable[[], None] | None = None) -> None:
        """After the example: every node alive (and serving), no new traceback in a log."""
        self._fail_if_broken()
        dead = self.cluster.check_exits()
        if dead:
            self._break(example, f"dead: {dead}")
        if still_serving is not None:
            try:
                still_serving()
            except (AssertionError, OSError, httpx.HTTPError) as exc:
                self._break(example, f"not serving: {type(exc).__name__}: {exc}")
        problems = self.logs.problems() if self.logs is not None else []
        if problems:
            raise logged_error(problems[0])(f"{example}\n-> logs:\n" + "\n".join(problems)[:6000])


def assert_cluster_healthy(cluster: LocalCluster, guard: Guard) -> None:
    """Every node alive, writing and reading linearizably through itself; replicas agree."""
    guard.check("(after the fuzz run)")
    assert cluster.check_exits() == []
    for node_id in cluster.nodes:
        with node_client(cluster, node_id, timeout=10.0) as client:
            key = f"fuzz/alive/{node_id}"
            written = client.put(key, {"by": node_id}, timeout=10.0)
            read = client.get(key, consistency="linearizable", timeout=10.0)
            assert read is not None and read.value == {"by": node_id}
            assert read.mod_revision >= written.mod_revision
    wait_until(lambda: digests_agree(cluster), 20.0, what="replicas at one index with one digest")
    guard.check("(after the health check)")


def digests_agree(cluster: LocalCluster) -> bool:
    answers = {}
    for node_id, node in cluster.nodes.items():
        response = httpx.get(node.endpoint + "/v1/digest", timeout=5.0,
                             headers={"Authorization": f"Bearer {cluster.token}"})
        assert response.status_code == 200, (node_id, response.text[:300])
        answers[node_id] = response.json()
    if len({answer["index"] for answer in answers.values()}) > 1:
        return False                              # not caught up yet: ask again
    digests = {node_id: answer["digest"] for node_id, answer in answers.items()}
    assert len(set(digests.values())) == 1, f"replicas diverged at one index: {digests}"
    return True


# ---- JSON that is odd in every way ---------------------------------------------------------------
odd_chars = st.one_of(st.characters(), st.characters(categories=["Cs"]),   # lone surrogates
                      st.sampled_from(["\x00", "\u2028", "\ufeff", "\U0010ffff", "\\", '"', "/"]))
odd_text = st.text(odd_chars, max_size=12)
numbers = st.one_of(
    st.integers(-3, 50), st.integers(),
    st.integers(min_value=2 ** 63 - 1, max_value=2 ** 200),
    st.integers(min_value=-2 ** 200, max_value=-2 ** 63),
    st.floats(),                                   # NaN and Infinity too: not JSON at all
    st.sampled_from([0.0, -0.0, 0.5, 1.5, 1e308, -1e308, 5e-324, 1e-300]))
scalars = st.one_of(st.none(), st.booleans(), numbers, odd_text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(odd_text, inner, max_size=4), max_leaves=10)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


edge_values = st.one_of(json_values, st.sampled_from([
    "", "x" * (MAX_VALUE + 1), "\u0001" * (MAX_VALUE // 5), "k" * 4097, "_cs/lock/x/1",
    _nested(250), {"a": _nested(199)}, 2 ** 64, -(2 ** 64), 10 ** 400,
]))
# One of each JSON type (and classic edges), for a field that expects another.
wrong_types = st.sampled_from([None, True, False, 0, -1, 2 ** 64, -(2 ** 63) - 1, 1.5, -0.0, "",
                               "x", "\ud800", [], [1], {}, {"a": None}])
odd_values = st.one_of(wrong_types, edge_values)
names = st.one_of(st.sampled_from(["g1", "lock1", "el1", "m1", "name1"]), odd_text)
keys = st.one_of(st.sampled_from(["fuzz/a", "fuzz/b", "_cs/group/g1", "fuzz/\u00e9"]),
                 odd_text.map(lambda s: "fuzz/" + s), odd_text)
small_ints = st.integers(0, 40)      # negative ones come from edge_values

# Plausible values for every field a request may carry; each is also fuzzed with edge_values.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "key": keys, "prefix": st.one_of(st.just("fuzz/"), keys), "value": json_values,
    "limit": small_ints, "ttl": st.sampled_from([0.05, 1, 5, 30, -1, 0]),
    "session": small_ints, "client_id": st.sampled_from(["c1", "fuzzer"]),
    "request_id": small_ints, "done_below": small_ints, "timeout": st.sampled_from([2, 5, 0.5]),
    "consistency": st.sampled_from(["local", "session", "linearizable", "LOCAL", ""]),
    "min_index": small_ints, "expect_value": json_values, "expect_mod_revision": small_ints,
    "after_revision": small_ints, "wait": st.sampled_from([0, 0.01]),
    "group": names, "member": names, "name": names, "owner": names, "meta": json_values,
    "priority": small_ints, "forwarded": st.booleans(),
    # fields the node stamps itself, or internal ones: a client must not be able to set them
    "op": st.sampled_from(["put", "noop", "batch", "session_expire"]), "v": small_ints,
    "cid": names, "rid": small_ints, "done": small_ints, "node": names, "ops": json_values,
    "key_hash": odd_text, "session_key": odd_text, "token": odd_text, "id": small_ints,
}
IDENTITY = ("client_id", "request_id", "done_below", "timeout")
COORDINATION_FIELDS = ("group", "member", "name", "owner", "meta", "value", "priority",
                       "session")


def field_value(name: str) -> st.SearchStrategy[Any]:
    return st.one_of(FIELDS[name], odd_values)


def compare_items() -> st.SearchStrategy[Any]:
    return st.one_of(edge_values, st.fixed_dictionaries({}, optional={
        "key": field_value("key"), "value": json_values,
        "target": st.sampled_from(["value", "mod_revision", "create_revision", "version", "x"]),
        "op": st.sampled_from(["==", "!=", "<", ">", "=~"])}))


def txn_items() -> st.SearchStrategy[Any]:
    return st.one_of(edge_values, st.fixed_dictionaries(
        {"op": st.sampled_from(["put", "delete", "get", "range", "explode"])},
        optional={name: field_value(name) for name in ("key", "value", "prefix", "limit",
                                                       "session")}))


OP_FIELDS: dict[str, tuple[str, ...]] = {
    "put": ("key", "value", "session"), "delete": ("key", "prefix"),
    "cas": ("key", "value", "expect_value", "expect_mod_revision", "session"),
    "txn": (), "get": ("key", "consistency", "min_index"),
    "range": ("prefix", "limit", "consistency", "min_index"),
    "watch": ("prefix", "after_revision", "wait"), "session_open": ("ttl",),
    "session_keepalive": ("session", "forwarded"), "session_close": ("session",),
    **{op: COORDINATION_FIELDS for op in COORDINATION_WRITES},
    **{op: ("group", "name", "consistency", "min_index") for op in COORDINATION_READS},
}


@st.composite
def request_bodies(draw: st.DrawFn, op: str) -> dict[str, Any]:
    """An op's body: most of its own fields with plausible values, then one or two fields (its
    own or another's) set to something odd, so that checking reaches the odd one; sometimes
    fields of other ops, internal ones, unknown keys."""
    own = (*OP_FIELDS.get(op, ()), *IDENTITY)
    body = {name: draw(FIELDS[name]) for name in own if draw(st.integers(0, 2))}
    if op == "txn":
        body.update(draw(st.fixed_dictionaries({}, optional={
            "compare": st.one_of(st.lists(compare_items(), max_size=3), edge_values),
            "success": st.one_of(st.lists(txn_items(), max_size=3), edge_values),
            "failure": st.one_of(st.lists(txn_items(), max_size=3), edge_values)})))
    odd = draw(st.lists(st.sampled_from(own if draw(st.integers(0, 3)) else sorted(FIELDS)),
                        max_size=2, unique=True))
    body.update({name: draw(odd_values) for name in odd})
    if draw(st.integers(0, 4)) == 0:
        others = draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True))
        body.update({name: draw(field_value(name)) for name in others})
    if draw(st.integers(0, 4)) == 0:
        body.update(draw(st.dictionaries(odd_text, json_values, max_size=2)))
    return body


class Blob(bytes):
    """Bytes that hypothesis reports briefly (a failing example may carry 70 KB)."""

    def __repr__(self) -> str:
        return f"Blob({len(self)} bytes: {bytes(self[:60])!r}...)"


def blob(data: bytes) -> bytes:
    return Blob(data) if len(data) > 200 else data


def encode_json(value: Any, ascii_only: bool) -> bytes:
    """Lone surrogates travel as \\udXXX escapes, or as raw (invalid UTF-8) bytes."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


RAW_BODIES = st.sampled_from([blob(body) for body in [
    b"", b"{", b"null", b"[]", b'"\\ud800"', b'{"key": "\\udc00", "value": 1}',
    b'{"key": "a", "value": NaN}', b'{"key": "a", "value": 1e999}', b"[" * 20_000 + b"]" * 20_000,
    b'{"key": "a", "key": 5, "value": 1}', b"\xef\xbb\xbf{}", b"\xff\xfe{}", b'{"a":1}\x00',
    b'{"key": "big", "value": "' + b"v" * (MAX_VALUE + 70 * 1024) + b'"}',
]])


@st.composite
def payloads(draw: st.DrawFn, op: str) -> bytes:
    """A request body: the op's fields fuzzed, any JSON at all, arbitrary bytes, odd classics."""
    kind = draw(st.sampled_from(["fields", "fields", "fields", "fields", "json", "bytes", "raw"]))
    if kind == "fields":
        return blob(encode_json(draw(request_bodies(op)), draw(st.booleans())))
    if kind == "json":
        return blob(encode_json(draw(json_values), draw(st.booleans())))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    return draw(RAW_BODIES)


def without_legit_waits(op: str, data: bytes) -> bytes:
    """Shorten waits a valid request may ask for (not what this test is about)."""
    try:
        body = fast_json.decode(data or b"{}")   # the HTTP API reads no body as {}
    except (ValueError, RecursionError):
        return data
    if not isinstance(body, dict):
        return data
    changed = False
    if op in ("watch", "message_call", "inbox_poll"):
        wait = body.get("wait", 30.0)
        if not isinstance(wait, bool) and isinstance(wait, (int, float)) and wait > 0.01:
            body["wait"], changed = 0.01, True
    min_index = body.get("min_index")
    if type(min_index) is int and min_index > 1:
        body["min_index"], changed = 1, True     # a session read ahead of this replica waits
    return fast_json.encode(body) if changed else data


def asked_short_timeout(data: bytes) -> bool:
    """A valid timeout under a second: a 503/504 may then be the honest answer."""
    try:
        body = fast_json.decode(data)
    except (ValueError, RecursionError):
        return False
    timeout = body.get("timeout") if isinstance(body, dict) else None
    return (not isinstance(timeout, bool) and isinstance(timeout, (int, float))
            and 0 < timeout < 1)


def acceptable_5xx(op: str, data: bytes, status: int, node_id: str, leader: str | None) -> bool:
    if status in (503, 504) and asked_short_timeout(data):
        return True
    # leader_transfer: only the leader hands leadership over (a follower says 503 not_leader,
    # the client then asks the leader), the fuzzer's own valid transfers move leadership
    # during the test, and a transfer whose target does not win is 503 transfer_failed
    if op == "leader_transfer" and status == 503:
        return True
    # membership changes too: a well-formed one is made by the leader only (503 not_leader
    # elsewhere, the client asks another node)
    if op in ("member_add", "member_remove") and status == 503:
        return True
    if op == "nodes" and status == 503:      # answered by the leader (NotLeader elsewhere)
        return True
    # a keepalive marked as already forwarded must not be forwarded again: a follower says 503
    return op == "session_keepalive" and status == 503 and node_id != leader


# A valid body per op, so that checking reaches the one field a sweep makes wrong.
_COORDINATION = {"group": "g1", "member": "m1", "name": "n1", "owner": "o1", "session": 1,
                 "priority": 1, "meta": {"k": 1}, "value": 1}
TEMPLATES: dict[str, dict[str, Any]] = {
    "put": {"key": "fuzz/t", "value": 1}, "delete": {"key": "fuzz/t"},
    "cas": {"key": "fuzz/t", "value": 1, "expect_value": 1},
    "txn": {"compare": [{"key": "fuzz/t", "target": "value", "op": "==", "value": 1}],
            "success": [{"op": "put", "key": "fuzz/t", "value": 2}],
            "failure": [{"op": "range", "prefix": "fuzz/", "limit": 1}]},
    "get": {"key": "fuzz/t", "consistency": "local", "min_index": 1},
    "range": {"prefix": "fuzz/", "limit": 2, "consistency": "local", "min_index": 1},
    "watch": {"prefix": "fuzz/", "after_revision": 0, "wait": 0},
    "session_open": {"ttl": 5}, "session_keepalive": {"session": 1},
    "session_close": {"session": 10 ** 6},
    **{op: dict(_COORDINATION) for op in COORDINATION_WRITES},
    **{op: {"group": "g1", "name": "n1", "consistency": "local"} for op in COORDINATION_READS},
}
_MESSAGE = {"name": "n1", "sender": "fuzz", "seq": 1}
TEMPLATES.update({
    "message_send": {**_MESSAGE, "message": 1}, "message_broadcast": {**_MESSAGE, "message": 1},
    "message_call": {**_MESSAGE, "request": 1, "wait": 0.01},
    "inbox_poll": {"session": 1, "wait": 0.01, "max": 5},
    "message_reply": {"session": 1, "call": "x@n1", "value": 1},
    "message_forward": {"kind": "locate", "sessions": [1]},
})
SWEEP_VALUES = [None, True, -1, 1.5, 2 ** 64, "x", [], {}]
# (where in the body, value): a top-level field, or a field of the first txn item
SweepSpot = tuple[tuple[str, ...], Any]


def sweep_bodies(op: str) -> list[tuple[SweepSpot, dict[str, Any]]]:
    """The op's valid body with one field (its own, an identity field, or one of its txn
    items' fields) set to each wrong value in turn."""
    template = {**TEMPLATES.get(op, {}), "client_id": "sweep", "done_below": 0, "timeout": 5}
    paths: list[tuple[str, ...]] = [(name,) for name in
                                    dict.fromkeys([*template, *OP_FIELDS.get(op, ()),
                                                   "request_id"])]
    if op == "txn":
        paths += [(part, name) for part in ("compare", "success", "failure")
                  for name in ("op", "key", "value", "target", "prefix", "limit", "session")]
    bodies = []
    for path in paths:
        for value in SWEEP_VALUES:
            body = json.loads(json.dumps(template))
            if len(path) == 1:
                body[path[0]] = value
            else:
                body[path[0]][0][path[1]] = value
            bodies.append(((path, value), body))
    return bodies


class RequestIds:
    """Fresh request ids, so that at-most-once never answers a sweep from its memory."""

    def __init__(self) -> None:
        self.next = int(time.time() * 1000)

    def stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        if "request_id" not in body:
            self.next += 1
            body["request_id"] = self.next
        return body


def check_answer(where: str, status: int, body: Any, allowed_5xx: bool) -> None:
    assert isinstance(body, dict), f"{where}: answer is not a JSON object: {body!r:.300}"
    assert status < 500 or allowed_5xx, f"{where}: {status} {body!r:.500}"
    if status >= 400:
        assert isinstance(body.get("error"), str) and body["error"], f"{where}: {body!r:.300}"
        assert isinstance(body.get("message"), str), f"{where}: {body!r:.300}"
    assert "Traceback" not in json.dumps(body), f"{where}: {body!r:.500}"


# ---- (1) HTTP ------------------------------------------------------------------------------------
def http_routes() -> list[tuple[str, str, str]]:
    """Every route the node serves (the op table's, and the health probe), with its op."""
    served = {*ROUTES.values(), HEALTH_ROUTE}
    op_by_route = {route: op for op, route in ROUTES.items()}
    return sorted((op_by_route.get(route, "health"), *route) for route in served)


HTTP_ROUTES = http_routes()


def is_backup(op: str, response: httpx.Response) -> bool:
    """A 200 of the snapshot op is a backup file (backup_file.py), not JSON: a whole one."""
    if op != "snapshot" or response.status_code != 200:
        return False
    assert response.content.startswith(b"consensus-store-backup\n"), response.content[:100]
    assert response.content.splitlines()[-1].startswith(b"sha256 "), response.content[-100:]
    return True


@st.composite
def http_requests(draw: st.DrawFn, op: str, method: str) -> tuple[str, bytes, int]:
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    return method, draw(payloads(op)), draw(st.integers(0, ROLES - 1))


@pytest.mark.parametrize("route", HTTP_ROUTES, ids=[op for op, _, _ in HTTP_ROUTES])
def test_http_bodies(cluster: LocalCluster, latch: Latch, route: tuple[str, str, str]) -> None:
    """One route per test: hypothesis's choice among 32 routes is far from even."""
    op, route_method, path = route
    guard = Guard(cluster, latch)
    nodes = by_role(cluster)
    headers = {"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"}
    with httpx.Client(headers=headers, timeout=30.0) as http:

        @fuzz_settings(20)
        @given(http_requests(op, route_method))
        def fuzz(request: tuple[str, bytes, int]) -> None:
            guard.begin()
            method, data, node = request
            node_id = nodes[node]
            data = without_legit_waits(op, data)
            where = f"{method} {path} on {node_id} with {data[:300]!r}"
            response = http.request(method, cluster.nodes[node_id].endpoint + path, content=data)
            if is_backup(op, response):
                guard.check(where)
                return
            try:
                body = response.json()
            except ValueError:
                body = response.text
            check_answer(where, response.status_code, body,
                         acceptable_5xx(op, data, response.status_code, node_id, nodes[0]))
            assert response.headers["content-type"].startswith("application/json"), where
            guard.check(where)

        ids = RequestIds()
        for (spot, value), body in sweep_bodies(op):
            data = without_legit_waits(op, encode_json(ids.stamp(body), True))
            where = f"sweep {path} on {nodes[0]}: {spot} = {value!r} in {data[:300]!r}"
            response = http.request(route_method, cluster.nodes[nodes[0]].endpoint + path,
                                    content=data)
            if is_backup(op, response):
                continue
            check_answer(where, response.status_code, response.json(),
                         acceptable_5xx(op, data, response.status_code, nodes[0], nodes[0]))
        guard.check(f"sweep of {path}")
        fuzz()


def test_http_fuzz_left_the_cluster_serving(cluster: LocalCluster, latch: Latch) -> None:
    assert_cluster_healthy(cluster, Guard(cluster, latch))


# ---- (2) native protocol -------------------------------------------------------------------------
NATIVE_OPS = [*sorted(set(ROUTES) - {"health"}), "frobnicate", "auth"]   # auth last: rarer
PROBE_ID = 4_000_000_000


@st.composite
def native_items(draw: st.DrawFn, main_op: str) -> tuple[str, bytes, str, bytes]:
    """(kind, bytes on the wire, op, payload): a request frame (mostly of ``main_op``), a
    frame of junk, a bad length."""
    kind = draw(st.sampled_from(["request", "request", "request", "json", "junk", "badlen"]))
    if kind == "request":
        op = main_op if draw(st.integers(0, 3)) else draw(st.sampled_from(NATIVE_OPS))
        odd_id = draw(st.integers(0, 9)) == 0
        message: dict[str, Any] = {
            "id": draw(edge_values if odd_id else st.integers(1, 10 ** 6)), "op": op}
        if draw(st.integers(0, 9)) == 0:
            del message[draw(st.sampled_from(["id", "op"]))]
        message.update(draw(request_bodies(op)))
        payload = without_legit_waits(op, encode_json(message, draw(st.booleans())))
        return kind, blob(frame(payload)), op, blob(payload)
    if kind == "json":
        payload = encode_json(draw(json_values), draw(st.booleans()))
        return kind, blob(frame(payload)), "", blob(payload)
    if kind == "junk":
        payload = draw(st.one_of(st.binary(max_size=64), RAW_BODIES))
        return kind, blob(frame(payload)), "", blob(payload)
    length = draw(st.one_of(st.integers(0, 2 ** 32 - 1),
                            st.sampled_from([0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 20 + 70_000])))
    tail = draw(st.binary(max_size=40))
    return kind, struct.pack(">I", length) + tail, "", tail


class NativeConnection:
    def __init__(self, cluster: LocalCluster, node_id: str) -> None:
        address = cluster.nodes[node_id].config.native_address
        self.sock = socket.create_connection((address.host, address.port), timeout=15.0)
        self.frames = FrameReader()

    def answers(self, enough: Callable[[list[dict[str, Any]]], bool]) -> tuple[list[Any], bool]:
        """Answers until ``enough`` says so or the node closes; (answers, closed)."""
        got: list[Any] = []
        while True:
            while (payload := self.frames.next()) is not None:
                got.append(decode(payload))
            if enough(got):
                return got, False
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return got, True
            self.frames.feed(data)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("op", NATIVE_OPS)
def test_native_frames(cluster: LocalCluster, latch: Latch, op: str) -> None:
    """Frames on an authenticated connection (9 in 10) or before authenticating."""
    guard = Guard(cluster, latch)
    nodes = by_role(cluster)
    probe = encode_request(PROBE_ID, "get", {"key": "fuzz/probe", "consistency": "local"})

    @fuzz_settings(10)
    @given(st.lists(native_items(op), min_size=1, max_size=4), st.integers(0, ROLES - 1),
           st.integers(0, 9))
    def fuzz(items: list[tuple[str, bytes, str, bytes]], node: int, auth_roll: int) -> None:
        guard.begin()
        node_id = nodes[node]
        authenticate = auth_roll != 7          # 9 in 10: the auth frame first
        where = f"native on {node_id} (auth: {authenticate}): {[i[1][:200] for i in items]!r}"
        aligned = all(kind != "badlen" for kind, *_ in items)
        connection = NativeConnection(cluster, node_id)
        try:
            if authenticate:
                connection.sock.sendall(encode_auth(cluster.token))
                [auth], _ = connection.answers(lambda got: len(got) >= 1)
                assert auth["status"] == 200, auth
            try:
                connection.sock.sendall(b"".join(wire for _, wire, _, _ in items) + probe)
                if not aligned:   # lost framing: the node may wait for bytes that never come
                    connection.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass              # it hung up already (after a 413): its answers are read below
            answers, closed = connection.answers(
                lambda got: aligned and len(got) > len(items))
        finally:
            connection.close()
        note(f"answers: {answers!r:.2000}")
        for answer in answers:
            assert isinstance(answer, dict) and set(answer) == {"id", "status", "body"}, answer
            allowed = any(acceptable_5xx(item_op, payload, answer["status"], node_id, nodes[0])
                          for _, _, item_op, payload in items)
            check_answer(where, answer["status"], answer["body"], allowed)
        if aligned and closed:   # only after refusing the client (401) or its frame (413)
            assert answers and answers[-1]["status"] in (401, 413), f"{where}: {answers!r:.500}"
        if aligned and not closed and authenticate:
            assert [a["status"] for a in answers if a["id"] == PROBE_ID] == [200], answers
        guard.check(where)

    if op not in ("auth", "frobnicate"):
        sweep_native(cluster, guard, nodes[1], op)
    fuzz()


def sweep_native(cluster: LocalCluster, guard: Guard, node_id: str, op: str) -> None:
    """Each sweep body of ``op`` as a frame, all on one connection to a follower."""
    ids = RequestIds()
    bodies = sweep_bodies(op)
    frames = [frame(without_legit_waits(op, encode_json({"id": n, "op": op, **ids.stamp(body)},
                                                        True)))
              for n, (_, body) in enumerate(bodies, start=1)]
    connection = NativeConnection(cluster, node_id)
    try:
        connection.sock.sendall(encode_auth(cluster.token) + b"".join(frames))
        answers, closed = connection.answers(lambda got: len(got) > len(frames))
    finally:
        connection.close()
    assert not closed, f"native sweep of {op}: the node hung up after {answers[-1:]!r:.300}"
    for answer in answers[1:]:
        spot, body = bodies[answer["id"] - 1]
        where = f"native sweep on {node_id}: {spot} in {body!r:.300}"
        check_answer(where, answer["status"], answer["body"],
                     acceptable_5xx(op, encode_json(body, True), answer["status"], node_id,
                                    by_role(cluster)[0] if op == "session_keepalive" else None))
    guard.check(f"native sweep of {op}")


def test_native_fuzz_left_the_cluster_serving(cluster: LocalCluster, latch: Latch) -> None:
    assert_cluster_healthy(cluster, Guard(cluster, latch))


# ---- (3) the raft port ---------------------------------------------------------------------------
class PeerLink:
    """A connection to a node's raft port that knows the peer secret: pysyncobj's key exchange
    done, then any message sealed as a peer would."""

    def __init__(self, address: Any, master: bytes, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((address.host, address.port), timeout=timeout)
        # Nagle would hold a second small frame until the first is acknowledged: the node
        # could then answer a later status request before it has even received it.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sealer, self.opener = FrameSealer(master), FrameOpener(master)
        self.buffer = bytearray()
        self.own_key = os.urandom(32)
        self.sock.sendall(self.sealer.seal(self.own_key))
        self.their_key = self.receive()

    def receive(self) -> Any:
        while (opened := self.opener.open(self.buffer)) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the raft port closed the connection")
            self.buffer.extend(chunk)
        message, consumed = opened
        del self.buffer[:consumed]
        return unwrap_keyed(message, self.own_key)

    def send(self, *messages: Any) -> None:
        self.sock.sendall(b"".join(self.sealer.seal((self.their_key, m)) for m in messages))

    def close(self) -> None:
        self.sock.close()


def raft_thread_answers(cluster: LocalCluster, node_id: str, master: bytes) -> dict[str, Any]:
    """pysyncobj's status of the node: its raft thread answers (so it read what came before)."""
    try:
        link = PeerLink(cluster.nodes[node_id].config.raft_address, master, timeout=5.0)
        try:
            link.send(["status"])
            status = link.receive()
        finally:
            link.close()
    except OSError as exc:   # includes the timeout and ConnectionError
        raise NodeStuck(f"{node_id} did not answer a status request: {exc!r}") from None
    assert isinstance(status, dict) and "raft_term" in status, status
    return status


@st.composite
def raft_garbage(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "frame", "length"]))
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=200))
    if kind == "frame":   # well framed, not sealed by a holder of the secret
        body = draw(st.binary(min_size=1, max_size=200))
        return struct.pack("<I", len(body)) + body
    length = draw(st.sampled_from([0, 1, 16, FIRST_FRAME_MAX_BYTES + 1, 2 ** 30 + 1, 2 ** 32 - 1]))
    return struct.pack("<I", length) + draw(st.binary(max_size=40))


def test_garbage_on_the_raft_port(cluster: LocalCluster, latch: Latch) -> None:
    guard = Guard(cluster, latch)
    master = master_key(cluster.nodes["n1"].config.peer_secret)
    nodes = by_role(cluster)

    @fuzz_settings(120)
    @given(raft_garbage(), st.integers(0, ROLES - 1))
    def fuzz(data: bytes, node: int) -> None:
        node_id = nodes[node]
        where = f"raft port of {node_id}: {data[:300]!r}"
        raft = cluster.nodes[node_id].config.raft_address
        with socket.create_connection((raft.host, raft.port), timeout=5.0) as sock:
            sock.sendall(data)
            (length,) = struct.unpack_from("<I", data.ljust(4, b"\0"))
            complete = len(data) >= 4 and (length == 0 or length > FIRST_FRAME_MAX_BYTES
                                           or len(data) - 4 >= length)
            if complete:   # a frame the node can judge: it must hang up, and say nothing
                received = b""
                try:
                    while chunk := sock.recv(4096):
                        received += chunk
                except ConnectionResetError:
                    pass
                assert received == b"", f"{where}: the node answered {received[:100]!r}"
        with guard.example(where):
            raft_thread_answers(cluster, node_id, master)
        guard.check(where)

    fuzz()
    assert_cluster_healthy(cluster, guard)


# The fields of each message type pysyncobj and read_index.py handle; some unknown types too.
RAFT_TYPES: dict[str | None, tuple[str, ...]] = {
    "append_entries": ("term", "commit_index", "prevLogIdx", "prevLogTerm", "entries",
                       "serialized", "transmission", "data", "cs_seq"),
    "request_vote": ("term", "last_log_index", "last_log_term"),
    "response_vote": ("term",),
    "next_node_idx": ("next_node_idx", "reset", "success", "cs_ack"),
    "apply_command": ("command", "request_id"),
    "apply_command_response": ("request_id", "error", "log_idx", "log_term"),
    "timeout_now": ("term",),
    "cs_read_index": ("id",), "cs_read_index_reply": ("id", "index"), "cs_timeout_now": ("term",),
    "bogus": (), None: (),
}
RAFT_FIELDS = sorted({name for names in RAFT_TYPES.values() for name in names})
# A term no node can take for a newer one: a real (or higher) term would be a peer's word,
# which Raft believes; the fuzz is about shapes, not about a peer lying.
SAFE_TERMS = st.sampled_from([0, -1, -(2 ** 63), False, float("nan"), float("-inf"), 0.5, None,
                              "1", b"1", [1], {"t": 1}])
# What a frame can carry: plain data (peer_frames.py decodes msgpack; a tuple arrives as a list).
plain_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 64 - 1), st.floats(),
              st.text(max_size=8), st.binary(max_size=16)),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 3)), inner, max_size=3),
    max_leaves=8)
# What pysyncobj takes for a log entry's command: a type byte (0 a call, 1 no-op, 2 membership,
# 3 version), then a pickle.  Malformed ones, for "apply_command".
COMMAND_BYTES = st.sampled_from([b"", b"\x00", b"\x00junk", b"\x01", b"\x02junk", b"\x03junk",
                                 b"\x09"])


def raft_field(name: str) -> st.SearchStrategy[Any]:
    if name == "term":
        return SAFE_TERMS
    if name == "command":
        return st.one_of(COMMAND_BYTES, plain_values)
    return plain_values


@st.composite
def raft_messages(draw: st.DrawFn) -> Any:
    """Mostly a message of a known type with some of its fields (wrong types, or missing),
    sometimes another type's fields too; sometimes not a dict at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(plain_values)
    kind = draw(st.sampled_from(list(RAFT_TYPES)))
    message: dict[str, Any] = {} if kind is None else {"type": kind}
    own = draw(st.lists(st.sampled_from(RAFT_TYPES[kind]), unique=True)) if RAFT_TYPES[kind] else []
    others = draw(st.lists(st.sampled_from(RAFT_FIELDS), max_size=2, unique=True))
    for name in [*own, *others]:
        message[name] = draw(raft_field(name))
    return message


# What a connection says it is, after the key exchange: mostly a read-only node, whose messages
# then reach the Raft handlers; else junk.  Never a utility command that changes the cluster.
CHANGES_CLUSTER = ("add", "remove", "set_version", "transfer")
JUNK_IDENTITIES = st.one_of(
    st.sampled_from([[], [{}], ["status", {}], ["nope"]]),
    plain_values.filter(lambda v: not (isinstance(v, list) and v and v[0] in CHANGES_CLUSTER)))
IDENTITIES = st.integers(0, 3).flatmap(lambda roll: JUNK_IDENTITIES if roll == 0
                                       else st.just("readonly"))


def send_sealed(cluster: LocalCluster, nodes: list[str], node_id: str, master: bytes,
                identity: Any, messages: list[Any]) -> None:
    """Say who we are, send the messages, and wait until the node has read them.  If the
    leader changed meanwhile, ``nodes`` is brought up to date (roles stay what examples mean)."""
    link = PeerLink(cluster.nodes[node_id].config.raft_address, master)
    try:
        try:
            link.send(identity, *messages)
        except OSError:
            pass   # the node hung up on us: allowed
        # Only then close: pysyncobj drops what it has not parsed when it reads the end of
        # stream.  The other nodes after it: what it passed on to them has been read too.
        statuses = {other: raft_thread_answers(cluster, other, master)
                    for other in sorted(cluster.nodes, key=lambda other: other != node_id)}
    finally:
        link.close()
    if statuses[nodes[0]].get("state") != LEADER_STATE:
        note(f"leadership moved after this example: {statuses!r:.500}")
        nodes[:] = by_role(cluster)
    if any(isinstance(m, dict) and m.get("type") == "apply_command" for m in messages):
        # It may have put an entry in the log: a write after it commits only once every entry
        # before it was applied (a bad entry fails this example, not a later one).
        write_commits(cluster, nodes[0])


def write_commits(cluster: LocalCluster, node_id: str) -> None:
    try:
        response = httpx.post(cluster.nodes[node_id].endpoint + "/v1/kv/put", timeout=10.0,
                              json={"key": "fuzz/peer", "value": node_id, "timeout": 5},
                              headers={"Authorization": f"Bearer {cluster.token}"})
    except httpx.HTTPError as exc:
        raise NodeStuck(f"a write through {node_id} failed: {exc!r}") from None
    if response.status_code != 200:
        raise NodeStuck(f"a write through {node_id}: {response.status_code} {response.text:.300}")


def linearizable_read(cluster: LocalCluster, node_id: str) -> Callable[[], None]:
    """Through ``node_id``: needs its leader's confirmation and its apply to keep up (a write
    per example would cost an fsync each; the writes come after the run)."""
    def check() -> None:
        response = httpx.post(cluster.nodes[node_id].endpoint + "/v1/kv/get", timeout=10.0,
                              json={"key": "fuzz/peer", "consistency": "linearizable",
                                    "timeout": 5},
                              headers={"Authorization": f"Bearer {cluster.token}"})
        assert response.status_code == 200, f"read through {node_id}: {response.text[:300]}"
    return check


def test_sealed_handshake_junk_leaves_no_traceback(cluster: LocalCluster, latch: Latch) -> None:
    """Strict: after the key exchange a connection names itself (a node's address, "readonly")
    or asks a utility command; anything else is refused, not raised."""
    guard = Guard(cluster, latch)
    master = master_key(cluster.nodes["n1"].config.peer_secret)

    nodes = by_role(cluster)

    @fuzz_settings(60)
    @given(JUNK_IDENTITIES, st.integers(0, ROLES - 1))
    def fuzz(identity: Any, node: int) -> None:
        node_id = nodes[node]
        where = f"sealed to {node_id}: identity {identity!r:.300}"
        with guard.example(where):
            send_sealed(cluster, nodes, node_id, master, identity, [])
        guard.check(where)

    fuzz()
    assert_cluster_healthy(cluster, guard)


sealed_messages = st.lists(raft_messages(), min_size=1, max_size=4)


def test_sealed_malformed_raft_messages_leave_no_traceback(cluster: LocalCluster,
                                                           latch: Latch) -> None:
    """Strict: a peer's malformed message is dropped (or the connection is), not raised."""
    guard = Guard(cluster, latch)
    master = master_key(cluster.nodes["n1"].config.peer_secret)

    nodes = by_role(cluster)

    @fuzz_settings(100)
    @given(sealed_messages, st.integers(0, ROLES - 1))
    def fuzz(messages: list[Any], node: int) -> None:
        node_id = nodes[node]
        where = f"sealed to {node_id} as a read-only node: {messages!r:.1500}"
        with guard.example(where):
            send_sealed(cluster, nodes, node_id, master, "readonly", messages)
        guard.check(where)

    fuzz()
    assert_cluster_healthy(cluster, guard)


def test_sealed_malformed_raft_messages_never_stop_the_cluster(cluster: LocalCluster,
                                                               latch: Latch) -> None:
    """Survival: whatever the tracebacks, each example leaves every node running and serving
    linearizable reads through the node that got the messages, and the cluster commits writes
    afterwards (runs last: a failure here may leave the cluster broken)."""
    guard = Guard(cluster, latch, logs=False)
    master = master_key(cluster.nodes["n1"].config.peer_secret)

    nodes = by_role(cluster)

    @fuzz_settings(60)
    @given(IDENTITIES, sealed_messages, st.integers(0, ROLES - 1))
    def fuzz(identity: Any, messages: list[Any], node: int) -> None:
        node_id = nodes[node]
        where = f"sealed to {node_id}: identity {identity!r:.100}, messages {messages!r:.1500}"
        with guard.example(where):
            send_sealed(cluster, nodes, node_id, master, identity, messages)
        guard.check(where, linearizable_read(cluster, node_id))

    fuzz()
    assert_cluster_healthy(cluster, guard)


def test_a_sealed_apply_command_that_is_no_command_stops_nothing(cluster_pool: ClusterPool) -> None:
    """Found by the fuzz above.  A follower forwards a client's write to the leader as
    ``apply_command``; the leader appends its ``command`` to the log as it is.  One that is not
    a pysyncobj call (here a call type byte and no pickle) makes every node's apply raise on
    that entry at every tick, forever: the whole cluster stops, and the node logs fill the disk.
    Anyone with the peer secret could send it, to any node (a follower forwards it).  And a
    command that is a pickle ran whatever it said on every node, before the apply failed."""
    cluster = cluster_pool.start(3, name="apply-command")
    logs = NodeLogs(cluster)
    leader, follower, _ = by_role(cluster)
    master = master_key(cluster.nodes[leader].config.peer_secret)
    for node_id in (leader, follower):
        link = PeerLink(cluster.nodes[node_id].config.raft_address, master)
        try:
            with contextlib.suppress(OSError):   # the node may hang up: allowed
                link.send("readonly", {"type": "apply_command", "command": b"\x00junk"})
            with contextlib.suppress(NodeStuck):   # checked below, with writes
                raft_thread_answers(cluster, node_id, master)
        finally:
            link.close()
    for node_id in cluster.nodes:
        write_commits(cluster, node_id)
    wait_until(lambda: digests_agree(cluster), 10.0, what="replicas at one index with one digest")
    assert cluster.check_exits() == []
    assert logs.problems() == []
