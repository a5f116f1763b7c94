"""What a peer may send on the raft port, checked before pysyncobj (or raft.py) reads it.

A frame decodes to plain data (peer_frames.py); pysyncobj then indexes it as it expects a
peer's messages to be (``message['term']``...), so a malformed one raised in the raft tick.
Each message is checked here, by the connection that received it, according to where the
connection's handshake is (``Phase``): a 32-byte key first; then, on an accepted connection,
who the other side is (a node's address, ``"readonly"``, or a utility command such as
``["status"]``); then Raft messages, each of a known type with exactly the fields pysyncobj
and read_index.py send, of the right types (``RAFT_FIELDS``: a field added to a message must
be added there).  Anything else drops the connection.

Log commands.  pysyncobj's log commands are a type byte and a pickle (protocol 2), and
pysyncobj unpickles each one when it applies the entry: on every node, and again after every
restart, since the journal keeps it.  So a peer holding the cluster secret could still put an
object that runs code into the log, through a forwarded ``apply_command`` or an
``append_entries``.  ``check_command`` recognises the usual command by its layout and opens any
other with an unpickler that builds nothing but what our commands hold, and checks its shape,
so that neither such a payload nor a malformed command (which would raise in apply and wedge
the node: pysyncobj re-applies a failed entry forever) reaches the log.  A command may be
(pysyncobj's ``_COMMAND_TYPE``):
- REGULAR: ``(method id, (bytes, ...))`` with a method id the node has; a ``bytes`` argument
  is pickled as ``_codecs.encode(str, "latin1")`` (``__builtin__.bytes()`` when empty);
- NO_OP: the type byte alone;
- VERSION: an int (``set_version``);
- MEMBERSHIP: only ``[kind, address, address, table]`` of plain strings, as membership.py
  writes it (pysyncobj's own form pickles a Node object: refused).

Not covered: a snapshot a leader sends (``serialized`` pieces) is unpickled by the storage
code when it is installed; it is only ever taken from a peer that authenticated.  And a peer
holding the secret is still believed about what Raft lets a peer say (terms, entries, votes).
"""
from __future__ import annotations

import enum
import io
import pickle
import re
import struct
from typing import Any, Callable, Container

REGULAR, NO_OP, MEMBERSHIP, VERSION = 0, 1, 2, 3

_BUILDABLE = frozenset({("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes")})


# The usual command, (method id, (bytes,)), exactly as pysyncobj's protocol-2 pickler writes it:
# recognised without unpickling (unpickling it here would cost as much as applying it).
_ONE_BYTES_CALL = re.compile(rb"\x80\x02(?:K(.)|M(..))c_codecs\nencode\nq\x00X", re.S)
_ONE_BYTES_CALL_END = b"q\x01X\x06\x00\x00\x00latin1q\x02\x86q\x03Rq\x04\x85q\x05\x86q\x06."
_STRING_LENGTH = struct.Struct("<I")


class UnsafeMessage(Exception):
    """A message no node of ours sends: drop the connection."""


class UnsafeCommand(UnsafeMessage):
    """A command that could construct an object, or that our state machine cannot apply."""


class Phase(enum.Enum):
    """Where a connection's handshake is: what its next message may be."""
    KEY = "key"                  # pysyncobj's random connection key
    IDENTITY = "identity"        # accepted connections: who is calling, or a utility command
    RAFT = "raft"                # Raft messages


class _CommandUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _BUILDABLE:
            return super().find_class(module, name)
        raise UnsafeCommand(f"a log command may not build {module}.{name}")


def _unpickle(command: bytes) -> Any:
    stream = io.BytesIO(command)        # shares the bytes: no copy
    stream.seek(1)
    try:
        return _CommandUnpickler(stream).load()
    except UnsafeCommand:
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed pickle
        raise UnsafeCommand(f"a log command does not unpickle: {exc}") from None


def _is_one_bytes_call(command: bytes, method_ids: Container[int]) -> bool:
    """Whether ``command`` is the usual call, by its layout: the one string it holds runs to
    exactly where the fixed ending starts, so it is data to the unpickler, and what the pickle
    builds is ``_codecs.encode(that string, "latin1")`` in two tuples.  (A string that is not
    latin-1 would fail in apply: a key holder can stop a node, not run code.)"""
    match = _ONE_BYTES_CALL.match(command, 1)
    if match is None:
        return False
    method = int.from_bytes(match.group(1) or match.group(2), "little")
    (length,) = _STRING_LENGTH.unpack_from(command, match.end())
    end = match.end() + _STRING_LENGTH.size + length
    return (end + len(_ONE_BYTES_CALL_END) == len(command)
            and command.endswith(_ONE_BYTES_CALL_END) and method in method_ids)


def check_command(command: Any, method_ids: Container[int]) -> None:
    """Raises UnsafeCommand unless ``command`` is one our nodes write and can apply."""
    if not isinstance(command, bytes) or not command:
        raise UnsafeCommand("a log command must be non-empty bytes")
    kind = command[0]
    if kind == REGULAR and _is_one_bytes_call(command, method_ids):
        return
    if kind == NO_OP:
        if len(command) != 1:
            raise UnsafeCommand("a no-op command carries nothing")
    elif kind == REGULAR:
        call = _unpickle(command)
        if not (isinstance(call, tuple) and len(call) == 2 and type(call[0]) is int
                and call[0] in method_ids and isinstance(call[1], tuple)
                and all(isinstance(arg, bytes) for arg in call[1])):
            raise UnsafeCommand("a log command is not (method id, (bytes, ...))")
    elif kind == MEMBERSHIP:
        from consensus_store.node.engine.membership import is_valid_change
        if not is_valid_change(_unpickle(command)):
            raise UnsafeCommand("a membership command is not [kind, address, address, table]")
    elif kind == VERSION:
        if type(_unpickle(command)) is not int:
            raise UnsafeCommand("a version command is not an int")
    else:
        raise UnsafeCommand(f"log command type {kind} is not accepted")


KEY_BYTES = 32
_INDEX_END = 2 ** 63           # the journal stores indexes and terms as unsigned 64-bit


def _index(value: Any) -> bool:
    return type(value) is int and 0 <= value < _INDEX_END


def _flag(value: Any) -> bool:
    return type(value) is bool


def _index_or_none(value: Any) -> bool:
    return value is None or _index(value)


def _entries(value: Any) -> bool:
    return type(value) is list            # each entry: check_raft_message


def _snapshot_piece(value: Any) -> bool:
    return value is None or (type(value) is list and len(value) == 3
                             and type(value[0]) is bytes and _flag(value[1])
                             and _flag(value[2]))


def _any_command(value: Any) -> bool:
    return True                  # check_command looks at it


# Every field of every message pysyncobj (0.3.17), read_index.py and transfer.py send, and what it holds.
RAFT_FIELDS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "append_entries": {"term": _index, "commit_index": _index, "prevLogIdx": _index,
                       "prevLogTerm": _index, "entries": _entries,
                       "serialized": _snapshot_piece, "cs_seq": _index},
    "request_vote": {"term": _index, "last_log_index": _index, "last_log_term": _index},
    "response_vote": {"term": _index},
    "timeout_now": {"term": _index},
    "next_node_idx": {"next_node_idx": _index, "reset": _flag, "success": _flag,
                      "cs_ack": _index},
    "apply_command": {"command": _any_command, "request_id": _index},
    "apply_command_response": {"request_id": _index, "error": _index, "log_idx": _index,
                               "log_term": _index},
    "cs_read_index": {"id": _index},
    "cs_read_index_reply": {"id": _index, "index": _index_or_none},
    "cs_timeout_now": {"term": _index},
}
_REQUIRED: dict[str, frozenset[str]] = {
    "append_entries": frozenset({"term", "commit_index"}),
    "request_vote": frozenset({"term", "last_log_index", "last_log_term"}),
    "response_vote": frozenset({"term"}),
    "timeout_now": frozenset({"term"}),
    "next_node_idx": frozenset({"next_node_idx", "reset", "success"}),
    "apply_command": frozenset({"command"}),
    "apply_command_response": frozenset({"request_id"}),
    "cs_read_index": frozenset({"id"}),
    "cs_read_index_reply": frozenset({"id", "index"}),
    "cs_timeout_now": frozenset({"term"}),
}


# The same, split for speed (this runs for every message): fields holding an index or a term,
# flags, and the others with their checks.
_INDEX_FIELDS = {kind: frozenset(n for n, f in fields.items() if f is _index)
                 for kind, fields in RAFT_FIELDS.items()}
_FLAG_FIELDS = {kind: frozenset(n for n, f in fields.items() if f is _flag)
                for kind, fields in RAFT_FIELDS.items()}


def check_raft_message(message: Any, method_ids: Container[int]) -> None:
    """Raises UnsafeMessage unless ``message`` is a Raft message our nodes send."""
    if type(message) is not dict:
        raise UnsafeMessage("a Raft message must be a map")
    kind = message.get("type")
    fields = RAFT_FIELDS.get(kind) if type(kind) is str else None
    if fields is None:
        raise UnsafeMessage(f"unknown Raft message type {kind!r:.40}")
    indexes, flags = _INDEX_FIELDS[kind], _FLAG_FIELDS[kind]
    for name, value in message.items():
        if name in indexes:
            if type(value) is not int or not 0 <= value < _INDEX_END:
                raise UnsafeMessage(f"{kind}: {name!r} is not an index or a term")
        elif name in flags:
            if type(value) is not bool:
                raise UnsafeMessage(f"{kind}: {name!r} is not true or false")
        elif name != "type":
            valid = fields.get(name) if type(name) is str else None
            if valid is None or not valid(value):
                raise UnsafeMessage(f"{kind}: bad or unknown field {name!r:.40}")
    if not _REQUIRED[kind] <= message.keys():
        raise UnsafeMessage(f"{kind}: missing {sorted(_REQUIRED[kind] - message.keys())}")
    if kind == "append_entries":
        chained = "prevLogIdx" in message
        if chained != ("prevLogTerm" in message) or (
                "entries" in message and not chained) or (
                chained and message.get("serialized") is not None):
            raise UnsafeMessage("append_entries: entries or a snapshot piece, not both")
        for entry in message.get("entries", ()):
            if not (type(entry) is list and len(entry) == 3 and _index(entry[1])
                    and _index(entry[2])):
                raise UnsafeMessage("append_entries: an entry is [command, index, term]")
            check_command(entry[0], method_ids)
    elif kind == "apply_command":
        check_command(message["command"], method_ids)
    elif kind == "apply_command_response" and "error" not in message and not (
            "log_idx" in message and "log_term" in message):
        raise UnsafeMessage("apply_command_response: an error, or the entry's index and term")


def check_key(message: Any) -> None:
    if type(message) is not bytes or len(message) != KEY_BYTES:
        raise UnsafeMessage(f"a connection key must be {KEY_BYTES} bytes")


def check_identity(message: Any, utility_commands: Container[str]) -> None:
    """Who is calling: an address or "readonly" (pysyncobj hangs up on unknown ones), or a
    utility command with plain arguments."""
    if type(message) is str:
        return
    if not (type(message) is list and message and type(message[0]) is str
            and message[0] in utility_commands
            and all(type(arg) in (str, int) for arg in message[1:])):
        raise UnsafeMessage(f"not a node, nor a utility command: {message!r:.60}")


def check_peer_message(phase: Phase, message: Any, method_ids: Container[int],
                       utility_commands: Container[str]) -> None:
    if phase is Phase.RAFT:
        check_raft_message(message, method_ids)
    elif phase is Phase.IDENTITY:
        check_identity(message, utility_commands)
    else:
        check_key(message)
