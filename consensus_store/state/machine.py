"""Applying commands to the replicated key-value state.

``StateMachine.apply(data, index)`` is the only mutator.  It never raises: a malformed or
rejected command yields ``{"error": code, "message": ...}`` on every replica alike, because an
exception inside pysyncobj's apply makes it re-apply the entry (see shared notes, section 2).

The Raft index of the entry is the revision: ``create_revision`` / ``mod_revision`` of a key are
indexes, exactly like etcd's.  A key's record is a list ``[value, create_rev, mod_rev, version]``.

At-most-once: commands with a client id (``cid``) and request id (``rid``) are remembered per
client; a repeated (cid, rid) returns the first result without applying again (see
``at_most_once``: what is kept of an answer, and the bounds in count and bytes).

Limits (``limits``): apply enforces only limits fixed in code or stamped into the command by
the node that took the request, so every replica gives the same answer, at every replay.

Sessions: ``session_open`` (id = its index), ``session_close`` and ``session_expire`` (proposed
by the leader, whose clock alone decides expiry).  A put with ``session`` binds the key to it;
ending the session deletes its keys in the same entry.  Every op acting for a session (close,
ephemeral puts, the coordination ops) carries ``key_hash``, the hash of the session key the
caller presented, or ``admin: true``; both are stamped by the node that took the request (see
``authorize``).  Version-1 entries (older journals) replay without these checks.
"""
from __future__ import annotations

from typing import Any, Callable

from consensus_store.errors import ConsensusStoreError, Forbidden, InvalidRequest, NotFound
from consensus_store.state import commands, digest, limits
from consensus_store.state.at_most_once import Answers
from consensus_store.state.coordination import RESERVED_PREFIX, Coordination
from consensus_store.state.keyspace import Keyspace, RangeBudget, Record, kv_bytes, kv_json
from consensus_store.state.sessions import Session, SessionTable, is_key_hash

SNAPSHOT_FORMAT = 1

Result = dict[str, Any]
MAX_SESSION_TTL_S = 3600.0


class StateMachine:
    def __init__(self) -> None:
        self.keyspace = Keyspace()
        self.sessions = SessionTable()
        self.answers = Answers()
        self.applied_index = 0   # index of the last entry applied
        self._ops: dict[str, Callable[[dict[str, Any], int], Result]] = {
            "put": self._apply_put, "delete": self._apply_delete, "cas": self._apply_cas,
            "txn": self._apply_txn, "noop": self._apply_noop, "batch": self._apply_batch,
            "session_open": self._apply_session_open, "session_close": self._apply_session_close,
            "session_expire": self._apply_session_end,
        }
        self.coordination = Coordination(self)
        self._ops.update(self.coordination.handlers())

    @property
    def revision(self) -> int:
        """Index of the last entry that changed a key."""
        return self.keyspace.revision

    def drain_events(self) -> list[dict[str, Any]]:
        """Changes made since the last call (for watchers; not replicated state)."""
        events, self.keyspace.events = self.keyspace.events, []
        return events

    # ---- the one mutator -------------------------------------------------------------------
    def apply(self, data: bytes, index: int) -> Result:
        self.applied_index = index
        try:
            command = commands.decode_command(data)
        except (ValueError, ConsensusStoreError, RecursionError) as exc:
            return {"error": InvalidRequest.code, "message": f"undecodable command: {exc}"}
        return self._apply_answering(command, index)

    def _apply_answering(self, command: dict[str, Any], index: int) -> Result:
        """Apply one command; every failure becomes its answer (apply must never raise)."""
        try:
            return self._apply_once(command, index)
        except ConsensusStoreError as exc:
            return exc.to_json()
        except Exception as exc:  # noqa: BLE001 - apply must never raise (see module doc)
            return {"error": "internal", "message": f"{type(exc).__name__}: {exc}"}

    def _apply_batch(self, command: dict[str, Any], index: int) -> Result:
        """Independent writes of several clients in one entry (group commit, see
        node/engine/proposer.py): each applied, deduplicated and answered as if alone, all at this
        entry's revision, like the keys of one txn."""
        ops = command.get("ops")
        if not isinstance(ops, list):
            raise InvalidRequest("'ops' must be a list")
        refused = InvalidRequest(f"a batch holds only {', '.join(commands.BATCHED_OPS)}")
        return {"results": [
            self._apply_answering(op, index)
            if isinstance(op, dict) and op.get("op") in commands.BATCHED_OPS
            else refused.to_json() for op in ops]}

    def _apply_once(self, command: dict[str, Any], index: int) -> Result:
        if commands.version_of(command) is None:
            raise InvalidRequest(f"unsupported command version {command.get('v')!r}")
        handler = self._ops.get(command.get("op"))  # type: ignore[arg-type]
        if handler is None:
            raise InvalidRequest(f"unknown op {command.get('op')!r}")
        cid, rid = command.get("cid"), command.get("rid")
        if not isinstance(cid, str) or not isinstance(rid, int):
            return handler(command, index)
        answer = self.answers.recall(cid, rid, command)
        if answer is not None:
            return answer
        result = handler(command, index)
        self.answers.remember(cid, rid, command, result)
        return result

    # ---- ops ----------------------------------------------------------------------------------
    def _apply_noop(self, command: dict[str, Any], index: int) -> Result:
        return {}

    def _apply_put(self, command: dict[str, Any], index: int) -> Result:
        key = _user_key(command)
        if "value" not in command:
            raise InvalidRequest("put needs a 'value'")
        session = self.session_of(command)
        prev = self.keyspace.get(key)
        record = self.put_record(key, command["value"], index, session)
        return {"kv": kv_json(key, record), "prev_kv": kv_json(key, prev) if prev else None}

    def _apply_delete(self, command: dict[str, Any], index: int) -> Result:
        if "prefix" in command:
            prefix = command["prefix"]
            if not isinstance(prefix, str):
                raise InvalidRequest("'prefix' must be a string")
            keys = [k for k in self.keyspace.keys_with_prefix(prefix)
                    if not k.startswith(RESERVED_PREFIX)]
            for key in keys:
                self.delete_record(key, index)
            return {"deleted": len(keys)}
        key = _user_key(command)
        prev = self.delete_record(key, index)
        return {"deleted": 1 if prev else 0, "prev_kv": kv_json(key, prev) if prev else None}

    def _apply_cas(self, command: dict[str, Any], index: int) -> Result:
        key = _user_key(command)
        if "value" not in command:
            raise InvalidRequest("cas needs a 'value'")
        session = self.session_of(command)
        record = self.keyspace.get(key)
        if not self._cas_guard_holds(command, record):
            return {"succeeded": False, "kv": kv_json(key, record) if record else None}
        return {"succeeded": True, "kv": kv_json(key, self.put_record(key, command["value"], index, session))}

    def _cas_guard_holds(self, command: dict[str, Any], record: Record | None) -> bool:
        if "expect_mod_revision" in command:
            expected = command["expect_mod_revision"]
            if not commands.is_int(expected):
                raise InvalidRequest("'expect_mod_revision' must be an integer (0: key absent)")
            return (record[2] if record else 0) == expected
        if "expect_value" in command:
            return record is not None and record[0] == command["expect_value"]
        raise InvalidRequest("cas needs 'expect_value' or 'expect_mod_revision'")

    def _apply_txn(self, command: dict[str, Any], index: int) -> Result:
        max_ops = limits.MAX_TXN_OPS if limits.apply_to(command) else None
        txn = commands.validate_txn(command, max_ops)
        for op in txn["success"] + txn["failure"]:
            self.session_of(op, command)   # an unknown or foreign session fails the whole txn
            if op["op"] in ("put", "delete"):
                _user_key(op)
        succeeded = all(self._compare_holds(c) for c in txn["compare"])
        ops = txn["success"] if succeeded else txn["failure"]
        reads = RangeBudget(limits.TXN_READ_MAX_KEYS, limits.TXN_READ_MAX_BYTES)
        return {"succeeded": succeeded, "results": [self._txn_op(op, index, reads) for op in ops]}

    def _compare_holds(self, compare: dict[str, Any]) -> bool:
        record = self.keyspace.get(compare["key"])
        target, expected = compare["target"], compare["value"]
        if target == "value":
            if record is None:
                return compare["op"] == "!="
            actual: Any = record[0]
        else:
            position = {"create_revision": 1, "mod_revision": 2, "version": 3}[target]
            actual = record[position] if record else 0
        return {
            "==": lambda: actual == expected, "!=": lambda: actual != expected,
            "<": lambda: actual < expected, ">": lambda: actual > expected,
        }[compare["op"]]()

    def _txn_op(self, op: dict[str, Any], index: int, reads: RangeBudget) -> Result:
        """One op of a txn's branch; its reads take from ``reads``, the txn's reply budget."""
        kind = op["op"]
        if kind == "put":
            record = self.put_record(op["key"], op["value"], index, op.get("session"))
            return {"op": "put", "kv": kv_json(op["key"], record)}
        if kind == "delete":
            return {"op": "delete", "deleted": 1 if self.delete_record(op["key"], index) else 0}
        if kind == "get":
            record = self.keyspace.get(op["key"])
            if record is not None and not reads.take(kv_bytes(op["key"], record)):
                return {"op": "get", "kv": None, "more": True}   # found, but past the budget
            return {"op": "get", "kv": kv_json(op["key"], record) if record else None}
        kvs, count = self.keyspace.range(op["prefix"], op["limit"], reads)
        return {"op": "range", "kvs": kvs, "count": count, "more": count > len(kvs)}

    def _apply_session_open(self, command: dict[str, Any], index: int) -> Result:
        ttl, node = command.get("ttl"), command.get("node", "")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_SESSION_TTL_S:
            raise InvalidRequest(f"'ttl' must be a number of seconds in (0, {MAX_SESSION_TTL_S:g}]")
        if not isinstance(node, str):
            raise InvalidRequest("'node' must be a string")
        limits.enforce(command, "max_sessions", len(self.sessions))
        key_hash = command.get("key_hash", "")
        if commands.version_of(command) != commands.LEGACY_VERSION and not is_key_hash(key_hash):
            raise InvalidRequest("session_open needs 'key_hash' (stamped by the node)")
        session = self.sessions.open(index, float(ttl), node, key_hash)
        # The hash comes back so the node can tell a retried open that found the first one.
        return {"session": session.to_json(), "key_hash": key_hash}

    def _apply_session_close(self, command: dict[str, Any], index: int) -> Result:
        session = self.sessions.get(self._require_session_id(command))
        if session is not None:
            self.authorize(session, command)
        return self._apply_session_end(command, index)

    def _apply_session_end(self, command: dict[str, Any], index: int) -> Result:
        session = self.sessions.remove(self._require_session_id(command))
        if session is None:
            return {"ended": False, "deleted": 0}
        keys = sorted(session.keys)
        for key in keys:
            self.keyspace.delete(key, index)
        self.coordination.settle_after_deletions(keys, index)
        return {"ended": True, "deleted": len(keys)}

    def session_of(self, command: dict[str, Any],
                   outer: dict[str, Any] | None = None) -> int | None:
        """The session ``command`` acts for (None if it names none), once the caller's right
        to act for it is checked; ``outer``: the command a txn op belongs to."""
        if command.get("session") is None:
            return None
        session_id = self._require_session_id(command)
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound(f"session {session_id} not found (expired or closed)")
        self.authorize(session, command, outer)
        return session_id

    def authorize(self, session: Session, command: dict[str, Any],
                  outer: dict[str, Any] | None = None) -> None:
        """Raise Forbidden unless the command may act for ``session``: it carries the hash of
        the session's key, or comes from an admin caller (both stamped by the node, which drops
        any such field a client sent).  Version-1 entries are replayed by their own rules."""
        whole = outer if outer is not None else command
        if commands.version_of(whole) == commands.LEGACY_VERSION or whole.get("admin") is True:
            return
        if not session.opened_with(command.get("key_hash")):
            hint = ("" if session.key_hash else
                    " (it was opened before session keys: only an admin may act for it)")
            raise Forbidden(f"wrong or missing session key for session {session.id}{hint}")

    def authorize_owner(self, key: str, command: dict[str, Any]) -> None:
        """Raise Forbidden unless the command may act for the session that owns ``key``."""
        owner = self.keyspace.key_session.get(key)
        session = self.sessions.get(owner) if owner is not None else None
        if session is not None:
            self.authorize(session, command)

    @staticmethod
    def _require_session_id(command: dict[str, Any]) -> int:
        session_id = command.get("session")
        if not commands.is_int(session_id):
            raise InvalidRequest("'session' must be an integer session id")
        return session_id

    # put_record / delete_record: every key change of apply, KV and coordination alike
    # (state/coordination.py), so a key's session binding always follows it.
    def put_record(self, key: str, value: Any, index: int, session: int | None) -> Record:
        self.sessions.bind(key, session, self.keyspace.key_session.get(key))
        return self.keyspace.put(key, value, index, session)

    def delete_record(self, key: str, index: int) -> Record | None:
        self.sessions.bind(key, None, self.keyspace.key_session.get(key))
        return self.keyspace.delete(key, index)

    # ---- reads (local; callers choose the consistency) -------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        record = self.keyspace.get(key)
        return kv_json(key, record) if record else None

    def get_value(self, key: str, default: Any = None) -> Any:
        record = self.keyspace.get(key)
        return record[0] if record else default

    def range(self, prefix: str, limit: int = 0, *, max_keys: int = 0,
              max_bytes: int = 0) -> tuple[list[dict[str, Any]], int]:
        """(kvs, count): ``max_keys``/``max_bytes`` (0: none) bound the reply as it is built;
        ``count > len(kvs)`` when it was cut."""
        if not (max_keys or max_bytes):
            return self.keyspace.range(prefix, limit)
        budget = RangeBudget(max_keys or len(self.keyspace), max_bytes or 1 << 62)
        return self.keyspace.range(prefix, limit, budget)

    def session_ids(self) -> list[int]:
        return list(self.sessions.sessions)

    def __len__(self) -> int:
        return len(self.keyspace)

    def digest(self) -> str:
        """SHA-256 of the whole replicated state: equal on replicas that applied the same log
        (a node copies the state in chunks and hashes it outside its lock: see ``digest``)."""
        return digest.digest_of(self.digest_parts())

    def digest_parts(self) -> dict[str, str]:
        """Digests of each part of the state, to tell which part of two replicas differs."""
        return digest.parts_of(self.plain_state())

    # ---- snapshots: plain builtins only, so old snapshots load in new code ----------------
    def plain_state(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT, "applied_index": self.applied_index,
            "keyspace": self.keyspace.plain_state(), "sessions": self.sessions.plain_state(),
            "clients": self.answers.plain_state(),
        }

    def __getstate__(self) -> dict[str, Any]:
        return self.plain_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.applied_index = state["applied_index"]
        self.keyspace.restore(state["keyspace"])
        self.sessions.restore(state["sessions"])
        self.answers.restore(state["clients"])


def _user_key(command: dict[str, Any]) -> str:
    key = commands.require_key(command)
    if key.startswith(RESERVED_PREFIX):
        raise InvalidRequest(f"keys under {RESERVED_PREFIX!r} are written only by the "
                             "coordination ops (groups, names, locks, elections)")
    return key

