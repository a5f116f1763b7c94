"""Log commands inside peer messages (node/peer_commands.py): what pysyncobj may unpickle."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from pysyncobj import pickle as syncobj_pickle

from consensus_store.node.peer_commands import (MEMBERSHIP, NO_OP, REGULAR, VERSION,
                                                UnsafeCommand, check_command, check_message)

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
    check_message({"type": "append_entries", "term": 1, "entries": entries}, METHOD_IDS)
    check_message({"type": "apply_command", "command": good, "request_id": 3}, METHOD_IDS)
    check_message({"type": "next_node_idx", "next_node_idx": 3}, METHOD_IDS)
    check_message("127.0.0.1:7000", METHOD_IDS)            # handshake: plain data
    for message in ({"type": "apply_command", "command": bad},
                    {"type": "append_entries", "entries": entries + [[bad, 3, 1]]},
                    {"type": "append_entries", "entries": [[good, 2]]},
                    {"type": "append_entries", "transmission": "start", "data": good}):
        with pytest.raises(UnsafeCommand):
            check_message(message, METHOD_IDS)
    assert not (tmp_path / "ran").exists()


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
