"""The edge: a client's request body checked once and turned into a validated log command.

Every write reaches the log through ``command_for``, on both front ends and the embedded node.
The command carries only the fields its op takes (``protocol.OPS``) plus what the node stamps
itself (request identity, the presented session key's hash, ``admin``, the limits in force): a
field a client sends beyond those never reaches the log.  The state machine trusts these
commands; it keeps only the checks that decide an outcome from the state (sessions, reserved
keys, counted limits) and those older journal entries, written before this edge checked
everything, replay by.
"""
from __future__ import annotations

import json
from typing import Any

from consensus_store.config import MAX_KEY_BYTES, ClientToken, Limits
from consensus_store.errors import InvalidRequest, PayloadTooLarge
from consensus_store.node.session_keys import is_admin, presented_key_hash, session_auth
from consensus_store.protocol import COORDINATION_WRITES, OPS, Field
from consensus_store.state import commands
from consensus_store.coordination_keys import name_part
from consensus_store.state.limits import stamp as stamp_limits

MAX_CLIENT_ID_CHARS = 128
MAX_REQUEST_ID = 2**63 - 1        # fits every JSON and int64 reader
# Fields of the log command, set by the node only: a body carrying one is refused.
LOG_ONLY_FIELDS = ("cid", "rid", "done")
# Far below the recursion limit, so every node decodes every command it applies, whatever its
# call stack (JSON decoders recurse; a batch adds two levels).
MAX_COMMAND_DEPTH = 200
MAX_TIMEOUT_S = 300
# Coordination fields that name something (quoted into a reserved key): checked as the state
# machine quotes them.
NAME_FIELDS = frozenset({"group", "name", "member"})
# What each coordination write takes from a body (the table's fields, less the session key,
# which the command carries only as its hash).
COORDINATION_FIELDS: dict[str, tuple[str, ...]] = {
    name: tuple(f for f in OPS[name].fields if f != "session_key") for name in COORDINATION_WRITES}


def request_timeout(body: dict[str, Any]) -> float | None:
    """The body's ``timeout`` in seconds, if it has one."""
    timeout = body.get("timeout")
    if timeout is None:
        return None
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not 0 < timeout <= MAX_TIMEOUT_S):
        raise InvalidRequest(f"'timeout' must be a number of seconds in (0, {MAX_TIMEOUT_S}]")
    return float(timeout)


def command_for(op: str, body: dict[str, Any], limits: Limits,
                caller: ClientToken | None = None) -> dict[str, Any]:
    """The log command of a client write (raises InvalidRequest & co. for bad input)."""
    if op in COORDINATION_FIELDS:
        command = _coordination_command(op, body, limits)
        command.update(session_auth(body, caller))
    else:
        command = _kv_command(op, body, limits, caller)
    command.update(stamp_limits(op, limits))   # counts apply checks (429)
    check_depth(command)
    return command


def _kv_command(op: str, body: dict[str, Any], limits: Limits,
                caller: ClientToken | None) -> dict[str, Any]:
    command: dict[str, Any] = {"op": op}
    if op == "txn":
        command.update(commands.validate_txn(body))
        for item in command["success"] + command["failure"]:
            if "key" in item:
                check_key(item["key"])
            if item["op"] == "put":
                check_value(item, limits)
        _stamp_txn_session_keys(body, command, caller)
        for compare in command["compare"]:
            check_key(compare["key"])
    elif op == "delete" and "prefix" in body:
        if not isinstance(body["prefix"], str):
            raise InvalidRequest("'prefix' must be a string")
        command["prefix"] = body["prefix"]
    elif op in ("put", "delete", "cas"):
        command["key"] = commands.require_key(body)
        check_key(command["key"])
        if op != "delete":
            command["value"] = check_value(body, limits)
        if op == "cas":
            command.update(_cas_guard(body))
        if op != "delete" and body.get("session") is not None:
            if not commands.is_int(body["session"]):
                raise InvalidRequest("'session' must be an integer session id")
            command["session"] = body["session"]
            command.update(session_auth(body, caller))
    else:
        raise InvalidRequest(f"unknown op {op!r:.40}")
    command.update(request_identity(body))
    return command


def _coordination_command(op: str, body: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """The op's own fields, each checked against its type in the table; the rest of the body
    is dropped.  An absent required field is the state machine's to refuse (as it always was:
    older entries replay by that rule)."""
    types = OPS[op].fields
    command: dict[str, Any] = {}
    for field in COORDINATION_FIELDS[op]:
        if field in body:
            command[field] = _checked(field, types[field], body[field], limits)
    command["op"] = op
    command.update(request_identity(body))
    return command


def _checked(field: str, kind: Field, value: Any, limits: Limits) -> Any:
    if value is None:
        return value           # absent: the op's default
    if field in NAME_FIELDS:
        if value or field != "member":   # no member in a join: the machine names one
            name_part(value, field)
    elif kind is Field.INT and not commands.is_int(value):
        what = "an integer session id" if field == "session" else "an integer"
        raise InvalidRequest(f"'{field}' must be {what}")
    elif kind in (Field.STRING, Field.KEY) and not isinstance(value, str):
        raise InvalidRequest(f"'{field}' must be a string")
    elif kind is Field.JSON:
        check_value({"value": value}, limits)
    return value


def check_key(key: str) -> None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise PayloadTooLarge(f"key is longer than {MAX_KEY_BYTES} bytes")


def check_value(body: dict[str, Any], limits: Limits) -> Any:
    if "value" not in body:
        raise InvalidRequest("missing 'value'")
    value = body["value"]
    limit = limits.max_value_bytes
    if type(value) is str and 12 * len(value) + 2 <= limit:
        return value            # fits even if every character were escaped (\uXXXX pairs)
    try:
        size = len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"value is not JSON: {exc}") from None
    if size > limit:
        raise PayloadTooLarge(f"value is {size} bytes, the limit is {limit}")
    return value


def _cas_guard(body: dict[str, Any]) -> dict[str, Any]:
    if "expect_mod_revision" in body:
        expected = body["expect_mod_revision"]
        if not commands.is_int(expected) or expected < 0:
            raise InvalidRequest("'expect_mod_revision' must be a non-negative integer")
        return {"expect_mod_revision": expected}
    if "expect_value" in body:
        return {"expect_value": body["expect_value"]}
    raise InvalidRequest("cas needs 'expect_value' or 'expect_mod_revision' (0: key absent)")


def request_identity(body: dict[str, Any]) -> dict[str, Any]:
    """The at-most-once fields of a write (every write comes through here)."""
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
        raise InvalidRequest("'request_id' must be an integer in [0, 2**63) "
                             "(with 'client_id')")
    done = 0 if done is None else done
    if not commands.is_int(done) or not 0 <= done <= request_id:
        raise InvalidRequest("'done_below' must be an integer in [0, request_id]: the lowest "
                             "request id this client still waits for")
    return {"cid": client_id, "rid": request_id, "done": done}


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


def session_id(body: dict[str, Any]) -> int:
    session = body.get("session")
    if not commands.is_int(session) or session <= 0:
        raise InvalidRequest("'session' must be a positive integer session id")
    return session


def check_depth(command: dict[str, Any]) -> None:
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
