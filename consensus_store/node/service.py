"""What a node does for a client request, independent of HTTP: validate, replicate, read.

Both front ends (HTTP ``api.py``, native ``native.py``) and the embedded ``Node`` call this, so
limits and semantics are the same on every path.  ``call(op, body, caller)`` answers any op of
``protocol.OPS``: its handler is picked by the op's kind (a write is checked once, by
``validate``, and proposed; a read waits as ``reads.read_wait`` says, then reads memory) or is
one of the few ops with their own (sessions, watches, status, digest).  Runs on the node's
asyncio loop.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Awaitable, Coroutine, Protocol

from consensus_store.config import ClientToken, NodeConfig
from consensus_store.errors import InvalidRequest, Unavailable
from consensus_store.node import validate
from consensus_store.node.auth import NODE_TOKEN_NAME, TokenStore
from consensus_store.node.engine import Engine
from consensus_store.node.leases import LeaseKeeper
from consensus_store.node import membership_ops
from consensus_store.node import messaging_ops
from consensus_store.node.reads import READS, ReadWait, read_wait
from consensus_store.node.snapshot_export import http_only
from consensus_store.node.replica_status import replica_fields
from consensus_store.node.status_report import StatusReport
from consensus_store.node.session_keys import is_admin, key_for_open, presented_key, session_auth
from consensus_store.node.watch import WatchHub, without_prev
from consensus_store.protocol import OPS, Kind
from consensus_store.state import commands
from consensus_store.state.digest import digest_of, parts_of
from consensus_store.state.limits import stamp as stamp_limits
from consensus_store.state.sessions import hash_session_key

KEEPALIVE_LEADER_WAIT_S = 0.3     # well inside the third of a TTL a client gives a keepalive
MAX_WATCH_WAIT_S = 60.0
# The ops whose body may carry a ``timeout`` (writes and reads; watch has its own ``wait``).
TIMED_OPS = frozenset(op.name for op in OPS.values() if op.kind is not Kind.NODE)


class Handler(Protocol):
    def __call__(self, body: dict[str, Any], timeout: float | None = None, *,
                 caller: ClientToken | None = None) -> Awaitable[dict[str, Any]]: ...


class KVService:
    def __init__(self, config: NodeConfig, engine: Engine, watches: WatchHub,
                 leases: LeaseKeeper) -> None:
        self.config = config
        self.engine = engine
        self.watches = watches
        self.leases = leases
        self.tokens = TokenStore(config)
        self.report = StatusReport(config, members=engine.membership.table)   # live members
        self.handlers = self._handlers()

    # ---- metadata ---------------------------------------------------------------------------
    def leader_id(self) -> str | None:
        return self.engine.leader_id()

    def header(self) -> dict[str, Any]:
        engine = self.engine
        return {"node": self.config.id, "applied_index": engine.applied_index,
                "leader": engine.leader_id(),
                "revision": engine.machine.revision if engine.started else 0}

    async def status(self) -> dict[str, Any]:
        engine = self.engine
        raft = await engine.status()
        machine = engine.machine
        return {
            "id": self.config.id, "role": raft.role, "term": raft.term,
            "commit_index": raft.commit_index, "applied_index": raft.applied_index,
            "log_length": raft.log_length, "ready": raft.ready,
            "leader": engine.node_id(raft.leader) if raft.leader else None,
            "connected_peers": [engine.node_id(a) for a in raft.connected_peers],
            "keys": len(machine), "revision": machine.revision,
            "raft_address": str(self.config.raft_address),
            "api_address": str(self.config.api_address),
            **self.report.fields(),
            **replica_fields(engine),
        }

    # ---- writes -------------------------------------------------------------------------------
    # ``caller``: the client token the request came with (its role already allowed the op,
    # see protocol.OPS); None for in-process callers (the embedded Node).
    async def write(self, op: str, body: dict[str, Any], timeout: float | None = None, *,
                    caller: ClientToken | None = None) -> dict[str, Any]:
        return await self.write_command(self.command_for(op, body, caller=caller),
                                        self.timeout_s(timeout))

    def command_for(self, op: str, body: dict[str, Any], *,
                    caller: ClientToken | None = None) -> dict[str, Any]:
        """The log command of a client write (raises InvalidRequest & co. for bad input)."""
        command = validate.command_for(op, body, self.config.limits, caller)
        self.report.count_write()
        return command

    async def write_command(self, command: dict[str, Any], timeout: float,
                            alone: bool = False) -> dict[str, Any]:
        _, result = await self.engine.write(command, timeout, alone=alone)
        return result

    # ---- reads --------------------------------------------------------------------------------
    async def read(self, op: str, body: dict[str, Any], timeout: float | None = None, *,
                   caller: ClientToken | None = None) -> dict[str, Any]:
        """A read of the replicated state (``reads.READS``) at the body's consistency."""
        read = READS[op]
        args = read.parse(body)
        await self.settle_read(body, timeout)
        self.report.count_read()
        if not read.locked:
            return read.answer(self.engine.machine, args, self.config.limits)
        with self.engine.reading() as machine:   # iteration must not race with apply
            return read.answer(machine, args, self.config.limits)

    async def settle_read(self, body: dict[str, Any], timeout: float | None = None) -> None:
        """Wait until a read at the requested consistency may be served from local memory."""
        wait, min_index = read_wait(body, self.engine.applied_index)
        if wait is ReadWait.BARRIER:
            await self.engine.barrier(self.timeout_s(timeout))
        elif wait is ReadWait.APPLIED:
            seconds = min(self.config.limits.session_read_wait_s, self.timeout_s(timeout))
            await self.engine.wait_applied(min_index, seconds)

    async def get(self, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return await self.read("get", body, timeout)

    async def range(self, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return await self.read("range", body, timeout)

    # ---- sessions and watches -------------------------------------------------------------------
    async def session_open(self, body: dict[str, Any], timeout: float | None = None, *,
                           caller: ClientToken | None = None) -> dict[str, Any]:
        key = key_for_open(body)
        key_hash = hash_session_key(key)
        command = {"op": "session_open", "ttl": body.get("ttl"), "node": self.config.id,
                   "key_hash": key_hash}
        command.update(validate.request_identity(body))
        command.update(stamp_limits("session_open", self.config.limits))
        _, result = await self.engine.write(command, self.timeout_s(timeout))
        if result.pop("key_hash", None) != key_hash:
            # A retry (same client and request id) of an open that already happened with a key
            # this node made then: that key was answered to a request that got lost.
            raise InvalidRequest("this session_open was applied before with another key; send "
                                 "your own 'session_key' to retry opens safely")
        return {**result, "session_key": key}

    async def session_close(self, body: dict[str, Any], timeout: float | None = None, *,
                            caller: ClientToken | None = None) -> dict[str, Any]:
        command = {"op": "session_close", "session": validate.session_id(body)}
        command.update(session_auth(body, caller))
        command.update(validate.request_identity(body))
        _, result = await self.engine.write(command, self.timeout_s(timeout))
        return result

    async def session_keepalive(self, body: dict[str, Any], timeout: float | None = None, *,
                                caller: ClientToken | None = None) -> dict[str, Any]:
        # Only a node forwards (one hop): a client's "forwarded" would only stop that hop.
        forwarded = (body.get("forwarded") is True and caller is not None
                     and caller.name == NODE_TOKEN_NAME)
        session_id = validate.session_id(body)
        key = presented_key(body)
        # A follower forwards with its node token (admin): then the original caller's
        # adminship travels in the body, which only an admin caller may vouch for.
        admin = is_admin(caller) and (body.get("as_admin") is True if forwarded else True)
        if not forwarded:
            # A follower learns who leads only from the new leader's first message: right
            # after an election, wait a moment for it rather than failing the keepalive (a
            # client whose keepalives fail stops trusting its session).
            try:
                await self.engine.wait_for_leader(KEEPALIVE_LEADER_WAIT_S)
            except Unavailable:
                pass   # the lease keeper says so, in its own words
        return await self.leases.keepalive(session_id, self.leader_id(), key, admin=admin,
                                           forwarded=forwarded)

    async def leader_transfer(self, body: dict[str, Any], timeout: float | None = None, *,
                              caller: ClientToken | None = None) -> dict[str, Any]:
        """Hand Raft leadership to voter ``to`` (absent: the most caught-up one); NotLeader
        unless this node leads (the client then asks another)."""
        to = body.get("to")
        if to is not None and (not isinstance(to, str) or not to):
            raise InvalidRequest("'to' must be a node id")
        wait = validate.request_timeout(body) if timeout is None else timeout
        return await self.engine.transfer_leadership(to, self.timeout_s(wait))

    def digest(self) -> dict[str, Any]:
        """Digest of the replicated state, with the index it covers (for convergence checks)."""
        # Copied a chunk at a time and hashed outside the lock: apply waits ~1 ms at most.
        state = self.engine.plain_state()
        parts = parts_of(state)
        return {"digest": digest_of(parts), "parts": parts, "index": state["applied_index"]}

    def sessions(self) -> dict[str, Any]:
        with self.engine.reading() as machine:
            return {"sessions": [s.to_json() for s in machine.sessions.sessions.values()]}

    async def watch(self, body: dict[str, Any], timeout: float | None = None, *,
                    caller: ClientToken | None = None) -> dict[str, Any]:
        prefix = body.get("prefix", "")
        after = body.get("after_revision", 0)
        wait = body.get("wait", 30.0)
        if not isinstance(prefix, str):
            raise InvalidRequest("'prefix' must be a string")
        if not commands.is_int(after) or after < 0:
            raise InvalidRequest("'after_revision' must be a non-negative integer")
        if (isinstance(wait, bool) or not isinstance(wait, (int, float))
                or not 0 <= wait <= MAX_WATCH_WAIT_S):
            raise InvalidRequest(f"'wait' must be a number of seconds in [0, {MAX_WATCH_WAIT_S:g}]")
        with self.watches.attach():
            events, through = await self.watches.watch_through(prefix, after, float(wait))
        if body.get("prev_kv") is not True:
            events = without_prev(events)
        return {"events": events, "latest": self.watches.latest, "floor": self.watches.floor,
                "through": through}

    # ---- any op, by its name in protocol.OPS ----------------------------------------------------
    def _handlers(self) -> dict[str, Handler]:
        """One handler per op of the table: the kind picks it, a few ops have their own."""
        async def status(body: dict[str, Any], timeout: float | None = None, *,
                         caller: ClientToken | None = None) -> dict[str, Any]:
            return await self.status()

        async def now(answer: Any, body: dict[str, Any], timeout: float | None = None, *,
                      caller: ClientToken | None = None) -> dict[str, Any]:
            return answer()

        own: dict[str, Handler] = {
            "session_open": self.session_open, "session_close": self.session_close,
            "session_keepalive": self.session_keepalive, "watch": self.watch, "status": status,
            "sessions": partial(now, self.sessions), "digest": partial(now, self.digest),
            "leader_transfer": self.leader_transfer,
            **membership_ops.handlers(self),
            **messaging_ops.handlers(self),
            "snapshot": http_only,        # streamed by api.py over HTTP only
        }
        handlers: dict[str, Handler] = {}
        for op in OPS.values():
            if op.name in own:
                handlers[op.name] = own[op.name]
            elif op.kind is Kind.WRITE:
                handlers[op.name] = partial(self.write, op.name)
            elif op.kind is Kind.READ:
                handlers[op.name] = partial(self.read, op.name)
        if set(handlers) != set(OPS):
            raise RuntimeError(f"ops without a handler: {set(OPS) - set(handlers)}")
        return handlers

    def call(self, op: str, body: dict[str, Any], caller: ClientToken | None = None,
             timeout: float | None = None) -> Coroutine[Any, Any, dict[str, Any]]:
        """The coroutine answering ``op`` (an op of ``protocol.OPS``, its role already
        checked); ``timeout`` None: the body's own ``timeout``, for the ops that take one."""
        handler = self.handlers.get(op)
        if handler is None:
            raise InvalidRequest(f"unknown op {op!r:.40}")
        if timeout is None and op in TIMED_OPS:
            timeout = validate.request_timeout(body)
        return handler(body, timeout, caller=caller)

    async def handle(self, op: str, body: dict[str, Any],
                     timeout: float | None = None) -> dict[str, Any]:
        """Any client op by its name, for in-process callers (no caller token: all allowed)."""
        return await self.call(op, body, None, timeout)

    def timeout_s(self, timeout: float | None) -> float:
        """A request's timeout, or the configured default."""
        return timeout if timeout is not None else self.config.limits.request_timeout_s
