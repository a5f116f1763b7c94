"""The op table (``protocol.OPS``) is the one declaration every layer derives from: the service's
handlers, the reads, the edge's commands and the state machine's answers agree with it."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consensus_store.config import ClientToken, Limits, Role
from consensus_store.errors import InvalidRequest, PayloadTooLarge
from consensus_store.node import validate
from consensus_store.node.reads import READS, ReadWait, read_wait
from consensus_store.node.service import TIMED_OPS, KVService
from consensus_store.protocol import (BATCHABLE_OPS, OPS, READ_OPS, REPLICATED_OPS, WRITE_OPS,
                                      Field, Kind)
from consensus_store.state import StateMachine, encode_command
from consensus_store.state.commands import BATCHED_OPS
from consensus_store.state.sessions import hash_session_key

LIMITS = Limits(max_value_bytes=1000)
KEY = "session-key-0123456789"
ADMIN = ClientToken("admin", "admin-token-0123456789", Role.ADMIN)


def test_each_kind_is_served_where_the_table_says() -> None:
    service = KVService.__new__(KVService)
    handlers = service._handlers()
    assert set(handlers) == set(OPS)
    assert READ_OPS == set(READS)
    machine_ops = set(StateMachine()._ops)
    assert REPLICATED_OPS <= machine_ops                 # every write has an apply handler
    assert set(BATCHABLE_OPS) == set(BATCHED_OPS)         # the log's batch rule, pinned
    assert WRITE_OPS <= REPLICATED_OPS
    assert TIMED_OPS == {op.name for op in OPS.values() if op.kind is not Kind.NODE}


def test_get_ops_take_no_body_and_every_op_names_its_answer() -> None:
    for op in OPS.values():
        assert op.has_body == (op.method == "POST")
        assert op.answer, op.name
        assert all(isinstance(kind, Field) for kind in op.body_fields().values())
    assert "client_id" in OPS["put"].body_fields() and "min_index" in OPS["get"].body_fields()


# ---- one rule for how a read waits ---------------------------------------------------------------
@pytest.mark.parametrize(("body", "applied", "wait"), [
    ({}, 5, (ReadWait.NONE, 0)),
    ({"min_index": 5}, 5, (ReadWait.NONE, 0)),
    ({"min_index": 6}, 5, (ReadWait.APPLIED, 6)),
    ({"consistency": "session", "min_index": 9}, 5, (ReadWait.APPLIED, 9)),
    ({"consistency": "local", "min_index": 9}, 5, (ReadWait.NONE, 0)),
    ({"consistency": "linearizable"}, 5, (ReadWait.BARRIER, 0)),
])
def test_read_wait(body: dict[str, Any], applied: int, wait: tuple[ReadWait, int]) -> None:
    assert read_wait(body, applied) == wait


@pytest.mark.parametrize("body", [{"consistency": "eventual"}, {"min_index": -1},
                                  {"min_index": "3"}, {"min_index": True}])
def test_read_wait_refuses_bad_levels(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        read_wait(body, 0)


# ---- the edge checks each coordination field's type, once ----------------------------------------
@pytest.mark.parametrize(("op", "body"), [
    ("group_create", {"group": 5}),
    ("group_create", {"group": ""}),
    ("group_join", {"group": "g", "session": "1"}),
    ("group_join", {"group": "g", "session": 1, "member": ["m"]}),
    ("election_campaign", {"name": "e", "member": "m", "session": 1, "priority": "high"}),
    ("election_campaign", {"name": "e", "member": "m", "session": 1, "priority": True}),
    ("lock_release", {"name": "l", "key": 7}),
    ("name_register", {"name": "x" * 513, "session": 1}),
])
def test_bad_coordination_fields_are_refused_at_the_edge(op: str, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        validate.command_for(op, body, LIMITS)


def test_coordination_values_are_size_checked_and_unknown_fields_dropped() -> None:
    with pytest.raises(PayloadTooLarge):
        validate.command_for("lock_acquire", {"name": "l", "session": 1, "owner": "o" * 2000},
                             LIMITS)
    command = validate.command_for("group_join", {"group": "g", "session": 1, "member": "",
                                                  "admin": True, "key_hash": "x",
                                                  "session_key": KEY}, LIMITS)
    assert command["member"] == "" and "admin" not in command
    assert command["key_hash"] == hash_session_key(KEY)


# ---- the answers the table names are the answers the layers give -------------------------------
WRITES: list[tuple[str, dict[str, Any]]] = [
    ("put", {"key": "k", "value": 1}),
    ("cas", {"key": "k", "value": 2, "expect_value": 1}),
    ("txn", {"compare": [{"key": "k", "value": 2}], "success": [{"op": "get", "key": "k"}]}),
    ("group_create", {"group": "g"}),
    ("group_join", {"group": "g", "member": "m", "meta": {"a": 1}, "session": 1}),
    ("group_update", {"group": "g", "member": "m", "meta": 2}),
    ("name_register", {"name": "n", "value": "v", "session": 1}),
    ("lock_acquire", {"name": "l", "owner": "o", "session": 1}),
    ("election_campaign", {"name": "e", "member": "m", "priority": 1, "session": 1}),
    ("election_resign", {"name": "e", "member": "m"}),
    ("name_unregister", {"name": "n"}),
    ("group_leave", {"group": "g", "member": "m"}),
    ("group_delete", {"group": "g"}),
    ("delete", {"key": "k"}),
    ("session_close", {"session": 1}),
]


def test_each_write_answers_the_keys_its_op_declares() -> None:
    machine = StateMachine()
    opened = machine.apply(encode_command({"op": "session_open", "ttl": 10, "node": "n1",
                                           "key_hash": hash_session_key(KEY)}), 1)
    assert set(opened) - {"key_hash"} | {"session_key"} == set(OPS["session_open"].answer)
    index = 1
    lock_key = None
    for op, body in WRITES:
        index += 1
        if op == "session_close":
            command = {"op": op, "session": 1, "admin": True}
        else:
            command = validate.command_for(op, {**body, "session_key": KEY}, LIMITS, ADMIN)
        answer = machine.apply(encode_command(command), index)
        assert "error" not in answer, (op, answer)
        assert set(answer) == set(OPS[op].answer), op
        if op == "lock_acquire":
            lock_key = answer["key"]
    index += 1
    release = validate.command_for("lock_release", {"name": "l", "key": lock_key}, LIMITS, ADMIN)
    assert set(machine.apply(encode_command(release), index)) == set(OPS["lock_release"].answer)


def test_each_read_answers_the_keys_its_op_declares() -> None:
    machine = StateMachine()
    bodies = {"get": {"key": "k"}, "groups_members": {"group": "g"}, "names_whereis": {"name": "n"},
              "locks_status": {"name": "l"}, "elections_leader": {"name": "e"}}
    for op, read in READS.items():
        answer = read.answer(machine, read.parse(bodies.get(op, {})), LIMITS)
        assert set(answer) == set(OPS[op].answer), op


def test_the_service_dispatches_by_the_table_with_the_body_timeout() -> None:
    """``call`` parses the body's timeout for writes and reads, and refuses an unknown op."""
    service = KVService.__new__(KVService)
    seen: list[tuple[str, Any]] = []

    async def fake_read(op: str, body: dict[str, Any], timeout: float | None = None, *,
                        caller: Any = None) -> dict[str, Any]:
        seen.append((op, timeout))
        return {}
    service.read = fake_read   # type: ignore[method-assign]
    service.handlers = service._handlers()
    asyncio.run(service.call("get", {"timeout": 2}))
    assert seen == [("get", 2.0)]
    with pytest.raises(InvalidRequest):
        service.call("get", {"timeout": 301})
    with pytest.raises(InvalidRequest):
        service.call("frobnicate", {})
