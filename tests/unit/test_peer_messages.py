"""What a peer may send on the raft port (node/engine/peer_messages.py): handshake messages, Raft
messages, and the log commands in them, which pysyncobj unpickles."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from pysyncobj import pickle as syncobj_pickle

from consensus_store.node.engine.peer_messages import (MEMBERSHIP, NO_OP, REGULAR, VERSION, Phase,
                                                UnsafeCommand, UnsafeMessage, check_command,
                                                check_peer_message, check_raft_message)

METHOD_IDS = {0}


def regular(call: object) -> bytes:
    """A command as pysyncobj's @replicated wrapper writes it."""
    return bytes((REGULAR,)) + syncobj_pickle.dumps(call)


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("command", [
    regular((0, (b"",))),
    regular((0, (b"a command",))),
    regular((0, (bytes(range(256)) * 64,))),              # every byte value, 16 KiB
    bytes((NO_OP,)),
    bytes((VERSION,)) + syncobj_pickle.dumps(2),
], ids=["empty", "ascii", "binary", "no-op", "version"])
def test_the_commands_our_nodes_write_pass(command: bytes) -> None:
    check_command(command, METHOD_IDS)


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_command_that_would_run_code_is_refused_without_running_it(tmp_path: Path,
                                                                     protocol: int) -> None:
    marker = tmp_path / "ran"
    command = bytes((REGULAR,)) + pickle.dumps((0, (RunsCode(marker),)), protocol=protocol)
    with pytest.raises(UnsafeCommand, match="may not build posix.mkdir"):
        check_command(command, METHOD_IDS)
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    regular((1, (b"x",))),                                 # no such method
    regular((0, (b"x",), {"key": b"y"})),                  # keyword arguments
    regular((0, ("text",))),                               # not bytes
    regular((0, b"x")),                                    # arguments not a tuple
    regular(0),
    bytes((MEMBERSHIP,)) + syncobj_pickle.dumps(["add", "127.0.0.1:1", None]),
    bytes((VERSION,)) + syncobj_pickle.dumps("2"),
    bytes((NO_OP,)) + b"x",
    bytes((9,)) + b"x",
    bytes((REGULAR,)) + b"not a pickle",
    b"",
    "text",
], ids=["unknown-method", "kwargs", "str-arg", "args-not-tuple", "bare-id", "membership",
        "version-not-int", "no-op-with-data", "unknown-type", "garbage", "empty", "not-bytes"])
def test_commands_our_nodes_do_not_write_are_refused(command: object) -> None:
    with pytest.raises(UnsafeCommand):
        check_command(command, METHOD_IDS)


def test_messages_are_checked_command_by_command(tmp_path: Path) -> None:
    good, bad = regular((0, (b"ok",))), regular((0, (RunsCode(tmp_path / "ran"),)))
    entries = [[bytes((NO_OP,)), 1, 1], [good, 2, 1]]
    heartbeat = {"type": "append_entries", "term": 1, "commit_index": 1, "prevLogIdx": 0,
                 "prevLogTerm": 0}
    check_raft_message({**heartbeat, "entries": entries}, METHOD_IDS)
    check_raft_message({"type": "apply_command", "command": good, "request_id": 3}, METHOD_IDS)
    for message in ({"type": "apply_command", "command": bad},
                    {**heartbeat, "entries": entries + [[bad, 3, 1]]},
                    {**heartbeat, "transmission": "start", "data": good}):
        with pytest.raises(UnsafeMessage):
            check_raft_message(message, METHOD_IDS)
    assert not (tmp_path / "ran").exists()


# Each message as pysyncobj 0.3.17 (and read_index.py) sends it.
SENT = [
    {"type": "append_entries", "term": 3, "commit_index": 9, "entries": [[b"\x01", 10, 3]],
     "prevLogIdx": 9, "prevLogTerm": 2, "cs_seq": 4},
    {"type": "append_entries", "term": 3, "commit_index": 9, "entries": [], "prevLogIdx": 9,
     "prevLogTerm": 2},
    {"type": "append_entries", "term": 3, "commit_index": 9, "serialized": [b"gz", True, False]},
    {"type": "append_entries", "term": 3, "commit_index": 9, "serialized": None},
    {"type": "request_vote", "term": 4, "last_log_index": 9, "last_log_term": 3},
    {"type": "response_vote", "term": 4},
    {"type": "timeout_now", "term": 4},
    {"type": "next_node_idx", "next_node_idx": 10, "reset": False, "success": True, "cs_ack": 4},
    {"type": "next_node_idx", "next_node_idx": 10, "reset": True, "success": False},
    {"type": "apply_command", "command": b"\x01"},
    {"type": "apply_command_response", "request_id": 1, "log_idx": 10, "log_term": 3},
    {"type": "apply_command_response", "request_id": 1, "error": 4},
    {"type": "cs_read_index", "id": 7},
    {"type": "cs_read_index_reply", "id": 7, "index": 12},
    {"type": "cs_read_index_reply", "id": 7, "index": None},
]


@pytest.mark.parametrize("message", SENT, ids=[m["type"] for m in SENT])
def test_every_message_our_nodes_send_passes(message: dict) -> None:
    check_raft_message(message, METHOD_IDS)


@pytest.mark.parametrize("message", [
    {"type": "append_entries", "term": 3},                              # no commit_index
    {"type": "append_entries", "term": -1, "commit_index": 0},
    {"type": "append_entries", "term": 2 ** 63, "commit_index": 0},
    {"type": "append_entries", "term": True, "commit_index": 0},
    {"type": "append_entries", "term": 1.0, "commit_index": 0},
    {"type": "append_entries", "term": 1, "commit_index": 0, "prevLogIdx": 1},
    {"type": "append_entries", "term": 1, "commit_index": 0, "entries": []},
    {"type": "append_entries", "term": 1, "commit_index": 0, "prevLogIdx": 1, "prevLogTerm": 1,
     "entries": [[b"\x01", 2]]},
    {"type": "append_entries", "term": 1, "commit_index": 0, "serialized": [b"x", 1, 0]},
    {"type": "request_vote", "term": 1, "last_log_index": 1},
    {"type": "response_vote", "term": "1"},
    {"type": "next_node_idx", "next_node_idx": 1, "reset": 0, "success": True},
    {"type": "apply_command_response", "request_id": 1},
    {"type": "apply_command_response", "request_id": [1], "error": 1},
    {"type": "cs_read_index", "id": None},
    {"type": "response_vote", "term": 1, "id": 3},                      # another type's field
    {"type": "bogus"}, {"term": 1}, {"type": None}, {"type": ["x"]},
    [], "text", None, 3,
], ids=str)
def test_malformed_raft_messages_are_refused(message: object) -> None:
    with pytest.raises(UnsafeMessage):
        check_raft_message(message, METHOD_IDS)


UTILITIES = {"status", "add", "remove", "set_version", "transfer"}


@pytest.mark.parametrize("phase, message", [
    (Phase.KEY, b"k" * 32),
    (Phase.IDENTITY, "127.0.0.1:7000"),
    (Phase.IDENTITY, "readonly"),
    (Phase.IDENTITY, ["status"]),
    (Phase.IDENTITY, ["set_version", 2]),
])
def test_the_handshake_our_nodes_and_tools_send_passes(phase: Phase, message: object) -> None:
    check_peer_message(phase, message, METHOD_IDS, UTILITIES)


@pytest.mark.parametrize("phase, message", [
    (Phase.KEY, b"short"), (Phase.KEY, "k" * 32), (Phase.KEY, None),
    (Phase.IDENTITY, []), (Phase.IDENTITY, [{}]), (Phase.IDENTITY, ["nope"]),
    (Phase.IDENTITY, ["status", {}]), (Phase.IDENTITY, {"a": 1}), (Phase.IDENTITY, b"x"),
    (Phase.RAFT, "127.0.0.1:7000"),
], ids=str)
def test_a_malformed_handshake_is_refused(phase: Phase, message: object) -> None:
    with pytest.raises(UnsafeMessage):
        check_peer_message(phase, message, METHOD_IDS, UTILITIES)


@pytest.mark.parametrize("method", [0, 255, 256, 65535])
def test_the_usual_command_is_recognised_by_its_layout(method: int) -> None:
    for size in (1, 255, 256, 70_000):
        payload = (bytes(range(256)) * (size // 256 + 1))[:size]
        command = regular((method, (payload,)))
        check_command(command, {method})
        with pytest.raises(UnsafeCommand):
            check_command(command, {method + 1})           # a method the node lacks


def test_the_usual_layout_with_more_after_it_is_unpickled_and_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    usual = regular((0, (b"x",)))
    # Drop the STOP and go on with a call: pysyncobj's loads would run it (and return None).
    smuggled = usual[:-1] + pickle.dumps(RunsCode(marker), protocol=2)[2:]
    with pytest.raises(UnsafeCommand, match="may not build"):
        check_command(smuggled, METHOD_IDS)
    assert not marker.exists()
