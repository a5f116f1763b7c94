"""Applying commands to the replicated key-value state.

``StateMachine.apply(data, index)`` is the only mutator.  It never raises: a malformed or
rejected command yields ``{"error": code, "message": ...}`` on every replica alike, because an
exception inside pysyncobj's apply makes it re-apply the entry (see shared notes, section 2).

The Raft index of the entry is the revision: ``create_revision`` / ``mod_revision`` of a key are
indexes, exactly like etcd's.  A key's record is a list ``[value, create_rev, mod_rev, version]``.

At-most-once: commands with a client id (``cid``) and request id (``rid``) are remembered per
client; a repeated (cid, rid) returns the first result without applying again.  A client tells us
in ``done`` the lowest rid it still waits for, so older results can be forgotten; the tables are
also bounded (oldest first), which is deterministic because it depends only on the log.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any, Callable

from sortedcontainers import SortedDict

from consensus_store.errors import ConsensusStoreError, InvalidRequest
from consensus_store.state import commands

MAX_RESULTS_PER_CLIENT = 4096
MAX_CLIENTS = 10_000
SNAPSHOT_FORMAT = 1

Record = list  # [value, create_revision, mod_revision, version]
Result = dict[str, Any]


def kv_json(key: str, record: Record) -> dict[str, Any]:
    value, create_rev, mod_rev, version = record
    return {"key": key, "value": value, "create_revision": create_rev,
            "mod_revision": mod_rev, "version": version}


class _ClientTable:
    """What one client's recent writes returned."""

    __slots__ = ("low_water", "results")

    def __init__(self, low_water: int = 0, results: dict[int, Result] | None = None) -> None:
        self.low_water = low_water
        self.results: OrderedDict[int, Result] = OrderedDict(results or {})

    def forget_below(self, done: int) -> None:
        if done <= self.low_water:
            return
        self.low_water = done
        for rid in [r for r in self.results if r < done]:
            del self.results[rid]


class StateMachine:
    def __init__(self) -> None:
        self._kv: SortedDict = SortedDict()
        self._clients: OrderedDict[str, _ClientTable] = OrderedDict()
        self.revision = 0        # index of the last entry that changed a key
        self.applied_index = 0   # index of the last entry applied
        self._ops: dict[str, Callable[[dict[str, Any], int], Result]] = {
            "put": self._apply_put, "delete": self._apply_delete, "cas": self._apply_cas,
            "txn": self._apply_txn, "noop": self._apply_noop,
        }

    # ---- the one mutator -------------------------------------------------------------------
    def apply(self, data: bytes, index: int) -> Result:
        self.applied_index = index
        try:
            command = commands.decode_command(data)
        except (ValueError, ConsensusStoreError) as exc:
            return {"error": InvalidRequest.code, "message": f"undecodable command: {exc}"}
        try:
            return self._apply_once(command, index)
        except ConsensusStoreError as exc:
            return exc.to_json()
        except Exception as exc:  # noqa: BLE001 - apply must never raise (see module doc)
            return {"error": "internal", "message": f"{type(exc).__name__}: {exc}"}

    def _apply_once(self, command: dict[str, Any], index: int) -> Result:
        if command.get("v") != commands.COMMAND_VERSION:
            raise InvalidRequest(f"unsupported command version {command.get('v')!r}")
        handler = self._ops.get(command.get("op"))  # type: ignore[arg-type]
        if handler is None:
            raise InvalidRequest(f"unknown op {command.get('op')!r}")
        cid, rid = command.get("cid"), command.get("rid")
        if not isinstance(cid, str) or not isinstance(rid, int):
            return handler(command, index)
        table = self._client_table(cid)
        if rid in table.results:
            return table.results[rid]
        if rid < table.low_water:
            raise InvalidRequest("request id below the client's acknowledged mark (a very late retry)")
        result = handler(command, index)
        table.results[rid] = result
        done = command.get("done")
        if isinstance(done, int):
            table.forget_below(done)
        while len(table.results) > MAX_RESULTS_PER_CLIENT:
            table.results.popitem(last=False)
        return result

    def _client_table(self, cid: str) -> _ClientTable:
        table = self._clients.get(cid)
        if table is None:
            table = self._clients[cid] = _ClientTable()
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(cid)
        return table

    # ---- ops ----------------------------------------------------------------------------------
    def _apply_noop(self, command: dict[str, Any], index: int) -> Result:
        return {}

    def _apply_put(self, command: dict[str, Any], index: int) -> Result:
        key = commands.require_key(command)
        if "value" not in command:
            raise InvalidRequest("put needs a 'value'")
        prev = self._kv.get(key)
        record = self._put(key, command["value"], index)
        return {"kv": kv_json(key, record), "prev_kv": kv_json(key, prev) if prev else None}

    def _apply_delete(self, command: dict[str, Any], index: int) -> Result:
        if command.get("prefix"):
            prefix = command["prefix"]
            if not isinstance(prefix, str):
                raise InvalidRequest("'prefix' must be a string")
            keys = list(self._kv.irange(prefix, prefix + "\U0010ffff"))
            keys = [k for k in keys if k.startswith(prefix)]
            for key in keys:
                del self._kv[key]
            if keys:
                self.revision = index
            return {"deleted": len(keys)}
        key = commands.require_key(command)
        prev = self._kv.pop(key, None)
        if prev is not None:
            self.revision = index
        return {"deleted": 1 if prev else 0, "prev_kv": kv_json(key, prev) if prev else None}

    def _apply_cas(self, command: dict[str, Any], index: int) -> Result:
        key = commands.require_key(command)
        if "value" not in command:
            raise InvalidRequest("cas needs a 'value'")
        record = self._kv.get(key)
        if not self._cas_guard_holds(command, record):
            return {"succeeded": False, "kv": kv_json(key, record) if record else None}
        return {"succeeded": True, "kv": kv_json(key, self._put(key, command["value"], index))}

    def _cas_guard_holds(self, command: dict[str, Any], record: Record | None) -> bool:
        if "expect_mod_revision" in command:
            expected = command["expect_mod_revision"]
            if not commands._is_int(expected):
                raise InvalidRequest("'expect_mod_revision' must be an integer (0: key absent)")
            return (record[2] if record else 0) == expected
        if "expect_value" in command:
            return record is not None and record[0] == command["expect_value"]
        raise InvalidRequest("cas needs 'expect_value' or 'expect_mod_revision'")

    def _apply_txn(self, command: dict[str, Any], index: int) -> Result:
        txn = commands.validate_txn(command)
        succeeded = all(self._compare_holds(c) for c in txn["compare"])
        ops = txn["success"] if succeeded else txn["failure"]
        return {"succeeded": succeeded, "results": [self._txn_op(op, index) for op in ops]}

    def _compare_holds(self, compare: dict[str, Any]) -> bool:
        record = self._kv.get(compare["key"])
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

    def _txn_op(self, op: dict[str, Any], index: int) -> Result:
        kind = op["op"]
        if kind == "put":
            return {"op": "put", "kv": kv_json(op["key"], self._put(op["key"], op["value"], index))}
        if kind == "delete":
            prev = self._kv.pop(op["key"], None)
            if prev is not None:
                self.revision = index
            return {"op": "delete", "deleted": 1 if prev else 0}
        if kind == "get":
            return {"op": "get", "kv": self.get(op["key"])}
        kvs, count = self.range(op["prefix"], op["limit"])
        return {"op": "range", "kvs": kvs, "count": count}

    def _put(self, key: str, value: Any, index: int) -> Record:
        prev = self._kv.get(key)
        record = [value, prev[1], index, prev[3] + 1] if prev else [value, index, index, 1]
        self._kv[key] = record
        self.revision = index
        return record

    # ---- reads (local; callers choose the consistency) -------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        record = self._kv.get(key)
        return kv_json(key, record) if record else None

    def get_value(self, key: str, default: Any = None) -> Any:
        record = self._kv.get(key)
        return record[0] if record else default

    def range(self, prefix: str, limit: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Keys starting with ``prefix`` in order: (at most ``limit`` of them, total count)."""
        keys = self._kv.irange(prefix, prefix + "\U0010ffff") if prefix else iter(self._kv)
        kvs, count = [], 0
        for key in keys:
            if not key.startswith(prefix):
                continue
            count += 1
            if not limit or len(kvs) < limit:
                kvs.append(kv_json(key, self._kv[key]))
        return kvs, count

    def __len__(self) -> int:
        return len(self._kv)

    def digest(self) -> str:
        """SHA-256 of the whole replicated state: equal on replicas that applied the same log."""
        state = self._plain_state()
        state.pop("applied_index")  # a replica may have applied a trailing no-op more or less
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()

    # ---- snapshots: plain builtins only, so old snapshots load in new code ----------------
    def _plain_state(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT, "revision": self.revision,
            "applied_index": self.applied_index,
            "kv": [[k, r] for k, r in self._kv.items()],
            "clients": [[cid, t.low_water, list(t.results.items())]
                        for cid, t in self._clients.items()],
        }

    def __getstate__(self) -> dict[str, Any]:
        return self._plain_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.revision = state["revision"]
        self.applied_index = state["applied_index"]
        self._kv.update((k, r) for k, r in state["kv"])
        for cid, low_water, results in state["clients"]:
            self._clients[cid] = _ClientTable(low_water, dict(results))
