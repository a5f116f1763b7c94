"""What a node does for a client request, independent of HTTP: validate, replicate, read.

Both the HTTP API and the embedded ``Node`` call this, so limits and semantics are the same on
every path.  Runs on the node's asyncio loop.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from consensus_store.node.auth import NODE_TOKEN_NAME, TokenStore
from consensus_store.config import MAX_KEY_BYTES, ClientToken, NodeConfig
from consensus_store.errors import InvalidRequest, PayloadTooLarge, Unavailable
from consensus_store.models import Consistency
from consensus_store.node.coordination_api import QUERIES, WRITE_FIELDS
from consensus_store.protocol import COORDINATION_WRITES, KV_WRITE_OPS
from consensus_store.node.leases import LeaseKeeper
from consensus_store.node.engine.proposer import Proposer
from consensus_store.node.session_keys import (is_admin, key_for_open, presented_key,
                                               presented_key_hash, session_auth)
from consensus_store.node.engine.raft import RaftRunner, RaftStatus
from consensus_store.node.watch import WatchHub
from consensus_store.state import commands
from consensus_store.state.digest import copy_in_chunks, digest_of, parts_of
from consensus_store.state.limits import stamp as stamp_limits
from consensus_store.state.sessions import hash_session_key

MAX_CLIENT_ID_CHARS = 128
MAX_REQUEST_ID = 2**63 - 1        # fits every JSON and int64 reader
# Fields of the log command, set by the node only: a body carrying one is refused.
LOG_ONLY_FIELDS = ("cid", "rid", "done")
KEEPALIVE_LEADER_WAIT_S = 0.3     # well inside the third of a TTL a client gives a keepalive
# Far below the recursion limit, so every node decodes every command it applies, whatever its
# call stack (JSON decoders recurse; a batch adds two levels).
MAX_COMMAND_DEPTH = 200
COORDINATION_OPS = frozenset(COORDINATION_WRITES)
MAX_WATCH_WAIT_S = 60.0


class KVService:
    def __init__(self, config: NodeConfig, runner: RaftRunner, proposer: Proposer,
                 watches: WatchHub, leases: LeaseKeeper) -> None:
        self.config = config
        self.runner = runner
        self.proposer = proposer
        self.watches = watches
        self.leases = leases
        self.tokens = TokenStore(config)
        self._node_by_raft_address = {str(config.raft_address): config.id}
        self._node_by_raft_address.update({str(p.raft_address): p.id for p in config.peers})

    # ---- metadata ---------------------------------------------------------------------------
    def leader_id(self) -> str | None:
        store = self.runner.store
        leader = store._getLeader() if store is not None else None
        return self._node_by_raft_address.get(leader.address) if leader is not None else None

    def header(self) -> dict[str, Any]:
        store = self.runner.store
        # The machine's index moves before pysyncobj's counter: a read that saw entry k must
        # report at least k, or a session read elsewhere could go back in time.
        applied = max(self.proposer.applied_index,
                      store.machine.applied_index if store is not None else 0)
        return {"node": self.config.id, "applied_index": applied,
                "leader": self.leader_id(),
                "revision": store.machine.revision if store is not None else 0}

    async def status(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RaftStatus] = loop.create_future()

        def collect() -> None:
            status = self.runner.status()
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(status))

        self.runner.call_on_raft_thread(collect)
        try:
            raft = await asyncio.wait_for(future, 5.0)
        except asyncio.TimeoutError:
            raise Unavailable("the raft thread did not answer within 5s") from None
        machine = self.runner.store.machine  # type: ignore[union-attr]
        return {
            "id": self.config.id, "role": raft.role, "term": raft.term,
            "commit_index": raft.commit_index, "applied_index": raft.applied_index,
            "log_length": raft.log_length, "ready": raft.ready,
            "leader": self._node_by_raft_address.get(raft.leader or ""),
            "connected_peers": [self._node_by_raft_address.get(a, a) for a in raft.connected_peers],
            "keys": len(machine), "revision": machine.revision,
            "raft_address": str(self.config.raft_address),
            "api_address": str(self.config.api_address),
        }

    # ---- writes -------------------------------------------------------------------------------
    # ``caller``: the client token the request came with (its role already allowed the op,
    # see protocol.REQUIRED_ROLE); None for in-process callers (the embedded Node).
    async def write(self, op: str, body: dict[str, Any], timeout: float | None = None, *,
                    caller: ClientToken | None = None) -> dict[str, Any]:
        return await self.write_command(self.command_for(op, body, caller=caller),
                                        self.timeout_s(timeout))

    def command_for(self, op: str, body: dict[str, Any], *,
                    caller: ClientToken | None = None) -> dict[str, Any]:
        """The log command of a client write (raises InvalidRequest & co. for bad input)."""
        if op in COORDINATION_OPS:
            command = self._coordination_command(op, body)
            command.update(session_auth(body, caller))
        else:
            command = self._write_command(op, body, caller)
        command.update(stamp_limits(op, self.config.limits))   # counts apply checks (429)
        _check_depth(command)
        return command

    async def write_command(self, command: dict[str, Any], timeout: float,
                            alone: bool = False) -> dict[str, Any]:
        _, result = await self.proposer.write(command, timeout, alone=alone)
        return result

    def _write_command(self, op: str, body: dict[str, Any],
                       caller: ClientToken | None = None) -> dict[str, Any]:
        command: dict[str, Any] = {"op": op}
        if op == "txn":
            command.update(commands.validate_txn(body))
            for item in command["success"] + command["failure"]:
                self._check_sizes(item)
            _stamp_txn_session_keys(body, command, caller)
            for compare in command["compare"]:
                self._check_key(compare["key"])
        elif op == "delete" and "prefix" in body:
            if not isinstance(body["prefix"], str):
                raise InvalidRequest("'prefix' must be a string")
            command["prefix"] = body["prefix"]
        else:
            command["key"] = commands.require_key(body)
            self._check_key(command["key"])
            if op in ("put", "cas"):
                command["value"] = self._check_value(body)
            if op == "cas":
                command.update(self._cas_guard(body))
            if op in ("put", "cas") and body.get("session") is not None:
                if not commands.is_int(body["session"]):
                    raise InvalidRequest("'session' must be an integer session id")
                command["session"] = body["session"]
                command.update(session_auth(body, caller))
        command.update(self._request_identity(body))
        return command

    def _coordination_command(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """The op's own fields (``WRITE_FIELDS``) pass through, unchecked here: the state
        machine validates them (it must anyway).  Anything else in the body is dropped."""
        command = {field: body[field] for field in WRITE_FIELDS[op] if field in body}
        for field in ("meta", "value"):
            if field in command:
                self._check_value({"value": command[field]})
        command["op"] = op
        command.update(self._request_identity(body))
        return command

    async def query(self, query: Any, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """A coordination read at the requested consistency."""
        await self.settle_read(body, timeout)
        store = self.runner.store
        assert store is not None
        with store.state_lock:
            return query(store.machine, body)

    def _check_sizes(self, op: dict[str, Any]) -> None:
        if "key" in op:
            self._check_key(op["key"])
        if op["op"] == "put":
            self._check_value(op)

    def _check_key(self, key: str) -> None:
        if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise PayloadTooLarge(f"key is longer than {MAX_KEY_BYTES} bytes")

    def _check_value(self, body: dict[str, Any]) -> Any:
        if "value" not in body:
            raise InvalidRequest("missing 'value'")
        value = body["value"]
        limit = self.config.limits.max_value_bytes
        if type(value) is str and 12 * len(value) + 2 <= limit:
            return value            # fits even if every character were escaped (\uXXXX pairs)
        try:
            size = len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"value is not JSON: {exc}") from None
        if size > limit:
            raise PayloadTooLarge(f"value is {size} bytes, the limit is {limit}")
        return value

    @staticmethod
    def _cas_guard(body: dict[str, Any]) -> dict[str, Any]:
        if "expect_mod_revision" in body:
            expected = body["expect_mod_revision"]
            if not commands.is_int(expected) or expected < 0:
                raise InvalidRequest("'expect_mod_revision' must be a non-negative integer")
            return {"expect_mod_revision": expected}
        if "expect_value" in body:
            return {"expect_value": body["expect_value"]}
        raise InvalidRequest("cas needs 'expect_value' or 'expect_mod_revision' (0: key absent)")

    @staticmethod
    def _request_identity(body: dict[str, Any]) -> dict[str, Any]:
        """The at-most-once fields of a write (every write route comes through here)."""
        for field in LOG_ONLY_FIELDS:
            if field in body:
                raise InvalidRequest(f"'{field}' is set by the node; send client_id, "
                                     "request_id and done_below")
        client_id, request_id = body.get("client_id"), body.get("request_id")
        done = body.get("done_below")
        if client_id is None and request_id is None and done is None:
            return {}
        if (not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_CHARS
                or not client_id.isprintable()):
            raise InvalidRequest(f"'client_id' must be 1-{MAX_CLIENT_ID_CHARS} printable "
                                 "characters (with 'request_id')")
        if not commands.is_int(request_id) or not 0 <= request_id <= MAX_REQUEST_ID:
            raise InvalidRequest(f"'request_id' must be an integer in [0, 2**63) "
                                 "(with 'client_id')")
        done = 0 if done is None else done
        if not commands.is_int(done) or not 0 <= done <= request_id:
            raise InvalidRequest("'done_below' must be an integer in [0, request_id]: the lowest "
                                 "request id this client still waits for")
        return {"cid": client_id, "rid": request_id, "done": done}

    # ---- reads --------------------------------------------------------------------------------
    async def settle_read(self, body: dict[str, Any], timeout: float | None = None) -> None:
        """Wait until a read at the requested consistency may be served from local memory."""
        level = parse_consistency(body.get("consistency", Consistency.SESSION.value))
        if level is Consistency.LINEARIZABLE:
            await self.proposer.barrier(self.timeout_s(timeout))
        elif level is Consistency.SESSION:
            min_index = body.get("min_index", 0)
            if not commands.is_int(min_index) or min_index < 0:
                raise InvalidRequest("'min_index' must be a non-negative integer")
            if min_index:
                wait = min(self.config.limits.session_read_wait_s, self.timeout_s(timeout))
                await self.proposer.wait_applied(min_index, wait)

    async def get(self, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        key = commands.require_key(body)
        await self.settle_read(body, timeout)
        store = self.runner.store
        assert store is not None
        return {"kv": store.machine.get(key)}

    async def range(self, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        prefix = body.get("prefix", "")
        if not isinstance(prefix, str):
            raise InvalidRequest("'prefix' must be a string")
        limit = commands.validate_limit(body.get("limit"))
        await self.settle_read(body, timeout)
        store = self.runner.store
        assert store is not None
        limits = self.config.limits
        with store.state_lock:   # iteration must not race with apply; the reply is bounded
            kvs, count = store.machine.range(prefix, limit, max_keys=limits.max_range_keys,
                                             max_bytes=limits.max_range_bytes)
            read_index = store.machine.applied_index
        return {"kvs": kvs, "count": count, "more": count > len(kvs), "read_index": read_index}

    # ---- sessions and watches -------------------------------------------------------------------
    async def session_open(self, body: dict[str, Any], timeout: float | None = None, *,
                           caller: ClientToken | None = None) -> dict[str, Any]:
        key = key_for_open(body)
        key_hash = hash_session_key(key)
        command = {"op": "session_open", "ttl": body.get("ttl"), "node": self.config.id,
                   "key_hash": key_hash}
        command.update(self._request_identity(body))
        command.update(stamp_limits("session_open", self.config.limits))
        _, result = await self.proposer.write(command, self.timeout_s(timeout))
        if result.pop("key_hash", None) != key_hash:
            # A retry (same client and request id) of an open that already happened with a key
            # this node made then: that key was answered to a request that got lost.
            raise InvalidRequest("this session_open was applied before with another key; send "
                                 "your own 'session_key' to retry opens safely")
        return {**result, "session_key": key}

    async def session_close(self, body: dict[str, Any], timeout: float | None = None, *,
                            caller: ClientToken | None = None) -> dict[str, Any]:
        command = {"op": "session_close", "session": _session_id(body)}
        command.update(session_auth(body, caller))
        command.update(self._request_identity(body))
        _, result = await self.proposer.write(command, self.timeout_s(timeout))
        return result

    async def session_keepalive(self, body: dict[str, Any], *,
                                caller: ClientToken | None = None) -> dict[str, Any]:
        # Only a node forwards (one hop): a client's "forwarded" would only stop that hop.
        forwarded = (body.get("forwarded") is True and caller is not None
                     and caller.name == NODE_TOKEN_NAME)
        session_id = _session_id(body)
        key = presented_key(body)
        # A follower forwards with its node token (admin): then the original caller's
        # adminship travels in the body, which only an admin caller may vouch for.
        admin = is_admin(caller) and (body.get("as_admin") is True if forwarded else True)
        if not forwarded:
            # A follower learns who leads only from the new leader's first message: right
            # after an election, wait a moment for it rather than failing the keepalive (a
            # client whose keepalives fail stops trusting its session).
            try:
                await self.proposer.wait_for_leader(KEEPALIVE_LEADER_WAIT_S)
            except Unavailable:
                pass   # the lease keeper says so, in its own words
        return await self.leases.keepalive(session_id, self.leader_id(), key, admin=admin,
                                           forwarded=forwarded)

    def digest(self) -> dict[str, Any]:
        """Digest of the replicated state, with the index it covers (for convergence checks)."""
        store = self.runner.store
        assert store is not None
        # Copied a chunk at a time and hashed outside the lock: apply waits ~1 ms at most.
        state = copy_in_chunks(lambda: store.state_lock, lambda: store.machine)
        parts = parts_of(state)
        return {"digest": digest_of(parts), "parts": parts, "index": state["applied_index"]}

    def sessions(self) -> dict[str, Any]:
        store = self.runner.store
        assert store is not None
        with store.state_lock:
            return {"sessions": [s.to_json() for s in store.machine.sessions.sessions.values()]}

    async def watch(self, body: dict[str, Any]) -> dict[str, Any]:
        prefix = body.get("prefix", "")
        after = body.get("after_revision", 0)
        wait = body.get("wait", 30.0)
        if not isinstance(prefix, str):
            raise InvalidRequest("'prefix' must be a string")
        if not commands.is_int(after) or after < 0:
            raise InvalidRequest("'after_revision' must be a non-negative integer")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WATCH_WAIT_S:
            raise InvalidRequest(f"'wait' must be a number of seconds in [0, {MAX_WATCH_WAIT_S:g}]")
        events = await self.watches.watch(prefix, after, float(wait))
        return {"events": events, "latest": self.watches.latest, "floor": self.watches.floor}

    async def handle(self, op: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Any client op by its name (``consensus_store.protocol``), for in-process callers."""
        if op == "get":
            return await self.get(body, timeout)
        if op == "range":
            return await self.range(body, timeout)
        if op in QUERIES:
            return await self.query(QUERIES[op], body, timeout)
        if op in KV_WRITE_OPS or op in COORDINATION_OPS:
            return await self.write(op, body, timeout)
        if op == "session_open":
            return await self.session_open(body, timeout)
        if op == "session_close":
            return await self.session_close(body, timeout)
        if op == "session_keepalive":
            return await self.session_keepalive(body)
        if op == "watch":
            return await self.watch(body)
        if op == "status":
            return await self.status()
        return self.handle_now(op)

    def handle_now(self, op: str) -> dict[str, Any]:
        """The ops answered without waiting."""
        if op == "sessions":
            return self.sessions()
        if op == "digest":
            return self.digest()
        raise InvalidRequest(f"unknown op {op!r}")

    def timeout_s(self, timeout: float | None) -> float:
        """A request's timeout, or the configured default."""
        return timeout if timeout is not None else self.config.limits.request_timeout_s


def _stamp_txn_session_keys(body: dict[str, Any], command: dict[str, Any],
                            caller: ClientToken | None) -> None:
    """A txn put with a ``session`` carries that session's key in its op (``session_key``)."""
    for branch in ("success", "failure"):
        for raw, op in zip(body.get(branch, []), command[branch]):
            op.pop("key_hash", None)     # the node's to set, never the client's
            key_hash = presented_key_hash(raw) if op.get("session") is not None else None
            if key_hash is not None:
                op["key_hash"] = key_hash
    if is_admin(caller):
        command["admin"] = True


def _session_id(body: dict[str, Any]) -> int:
    session = body.get("session")
    if not commands.is_int(session) or session <= 0:
        raise InvalidRequest("'session' must be a positive integer session id")
    return session


def parse_consistency(value: Any) -> Consistency:
    try:
        return Consistency(value)
    except ValueError:
        raise InvalidRequest("'consistency' must be one of local, session, linearizable") from None


def _check_depth(command: dict[str, Any]) -> None:
    """Refuse commands nested deeper than MAX_COMMAND_DEPTH (iterative: no recursion here)."""
    # The command itself is level 1; a flat one (most single-key writes) leaves nothing to walk.
    stack: list[tuple[Any, int]] = [(child, 2) for child in command.values()
                                    if isinstance(child, (dict, list))]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_COMMAND_DEPTH:
            raise InvalidRequest(f"request is nested more than {MAX_COMMAND_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
