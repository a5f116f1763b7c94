"""The versioned command format written to the Raft log.

A command is a JSON object encoded as UTF-8 bytes: ``{"v": 2, "op": ..., ...}``.  JSON keeps the
log readable by any future version of this code (no pickled classes of ours), and the ``v`` field
lets a later release change an op's fields while still replaying old journals.

Common fields: ``cid`` and ``rid`` (client id and request id, for at-most-once writes; both may be
absent for internal commands), ``done`` (the lowest request id the client still waits for: results
below it may be forgotten).  Op fields are checked by ``validate_*`` here, once, so the machine can
trust their types.
"""
from __future__ import annotations

import json
from typing import Any

from consensus_store import fast_json
from consensus_store.errors import InvalidRequest

COMMAND_VERSION = 2
# Version 1: entries written before session keys.  They still replay, by the rules they were
# written under (no session key checks: see machine.py), so an old journal rebuilds the same state.
LEGACY_VERSION = 1

WRITE_OPS = ("put", "delete", "cas", "txn")
INTERNAL_OPS = ("noop", "batch")
BATCHED_OPS = ("put", "delete", "cas")     # single-key writes a batch may carry
TXN_OPS = ("put", "delete", "get", "range")
COMPARE_TARGETS = ("value", "mod_revision", "create_revision", "version")
COMPARE_OPERATORS = ("==", "!=", "<", ">")
MAX_TXN_OPS = 128     # compares, and ops in each branch (etcd's default --max-txn-ops)

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_command(command: dict[str, Any]) -> bytes:
    """Encode a command for the log; raises InvalidRequest for values JSON cannot carry."""
    try:
        # "v" last: no field of a command may pick the rules it is applied by.
        return _encoder.encode({**command, "v": COMMAND_VERSION}).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"value is not JSON-serialisable: {exc}") from None


def encode_batch(batch: list[dict[str, Any]]) -> bytes:
    """Several commands in one log entry (each as ``encode_command`` would write it)."""
    return encode_command({"op": "batch",
                           "ops": [{**command, "v": COMMAND_VERSION} for command in batch]})


def version_of(command: dict[str, Any]) -> int | None:
    """The command's format version, if it is one this code applies."""
    version = command.get("v")
    return version if is_int(version) and version in (LEGACY_VERSION, COMMAND_VERSION) else None


def decode_command(data: bytes) -> dict[str, Any]:
    command = fast_json.decode(data)
    if not isinstance(command, dict):
        raise InvalidRequest("command is not an object")
    return command


def require_key(body: dict[str, Any], field: str = "key") -> str:
    key = body.get(field)
    if not isinstance(key, str) or not key:
        raise InvalidRequest(f"'{field}' must be a non-empty string")
    return key


def validate_compare(compare: Any) -> dict[str, Any]:
    if not isinstance(compare, dict):
        raise InvalidRequest("each compare must be an object")
    require_key(compare)
    target = compare.get("target", "value")
    if target not in COMPARE_TARGETS:
        raise InvalidRequest(f"compare target must be one of {', '.join(COMPARE_TARGETS)}")
    operator = compare.get("op", "==")
    if operator not in COMPARE_OPERATORS:
        raise InvalidRequest(f"compare op must be one of {' '.join(COMPARE_OPERATORS)}")
    if "value" not in compare:
        raise InvalidRequest("compare needs a 'value'")
    if target != "value" and not is_int(compare["value"]):
        raise InvalidRequest(f"compare on {target} needs an integer value")
    if target == "value" and operator in ("<", ">"):
        raise InvalidRequest("compare on value supports only == and !=")
    return {"key": compare["key"], "target": target, "op": operator, "value": compare["value"]}


def validate_txn_op(op: Any) -> dict[str, Any]:
    if not isinstance(op, dict) or op.get("op") not in TXN_OPS:
        raise InvalidRequest(f"each txn op must be an object with 'op' in {', '.join(TXN_OPS)}")
    kind = op["op"]
    if kind == "range":
        prefix = op.get("prefix", "")
        if not isinstance(prefix, str):
            raise InvalidRequest("'prefix' must be a string")
        return {"op": "range", "prefix": prefix, "limit": validate_limit(op.get("limit"))}
    key = require_key(op)
    if kind == "put":
        if "value" not in op:
            raise InvalidRequest("put needs a 'value'")
        session = op.get("session")
        if session is not None and not is_int(session):
            raise InvalidRequest("'session' must be an integer session id")
        put = {"op": "put", "key": key, "value": op["value"], "session": session}
        if session is not None and "key_hash" in op:
            put["key_hash"] = op["key_hash"]   # stamped by the node: see machine.authorize
        return put
    return {"op": kind, "key": key}


def validate_txn(body: dict[str, Any], max_ops: int | None = MAX_TXN_OPS) -> dict[str, Any]:
    """The txn's fields, checked; at most ``max_ops`` in each list (None: entries written
    before the limit, replayed by their own rules)."""
    compares = body.get("compare", [])
    success = body.get("success", [])
    failure = body.get("failure", [])
    for name, value in (("compare", compares), ("success", success), ("failure", failure)):
        if not isinstance(value, list):
            raise InvalidRequest(f"'{name}' must be a list")
        if max_ops is not None and len(value) > max_ops:
            raise InvalidRequest(f"a txn holds at most {max_ops} entries in '{name}' "
                                 f"(it has {len(value)})", limit="max_txn_ops", max=max_ops)
    return {
        "compare": [validate_compare(c) for c in compares],
        "success": [validate_txn_op(o) for o in success],
        "failure": [validate_txn_op(o) for o in failure],
    }


def validate_limit(limit: Any) -> int:
    if limit is None:
        return 0
    if not is_int(limit) or limit < 0:
        raise InvalidRequest("'limit' must be a non-negative integer")
    return int(limit)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
