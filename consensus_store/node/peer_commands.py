"""The log commands inside a peer's Raft messages: checked before pysyncobj takes them.

A frame decodes to plain data (peer_frames.py), but pysyncobj's log commands are a type byte and
a pickle (protocol 2), and pysyncobj unpickles each one when it applies the entry: on every
node, and again after every restart, since the journal keeps it.  So a peer holding the cluster
secret could still put an object that runs code into the log, through a forwarded
``apply_command`` or an ``append_entries``.  ``check_message`` opens every command such a
message carries with an unpickler that builds nothing but what our commands hold, and checks
their shape, so that neither the payload nor a malformed command (which would raise in apply
and wedge the node: pysyncobj re-applies a failed entry forever) reaches the log.

What a command may be (pysyncobj's ``_COMMAND_TYPE``):
- REGULAR: ``(method id, (bytes, ...))`` with a method id the node has; a ``bytes`` argument
  is pickled as ``_codecs.encode(str, "latin1")`` (``__builtin__.bytes()`` when empty);
- NO_OP: the type byte alone;
- VERSION: an int (``set_version``);
- MEMBERSHIP: refused (no dynamic membership here, and it pickles a Node object).

Not covered: a snapshot a leader sends (``serialized`` pieces) is unpickled by the storage
code when it is installed; it is only ever taken from a peer that authenticated.
"""
from __future__ import annotations

import io
import pickle
import re
import struct
from typing import Any, Container

REGULAR, NO_OP, MEMBERSHIP, VERSION = 0, 1, 2, 3

_BUILDABLE = frozenset({("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes")})


# The usual command, (method id, (bytes,)), exactly as pysyncobj's protocol-2 pickler writes it:
# recognised without unpickling (unpickling it here would cost as much as applying it).
_ONE_BYTES_CALL = re.compile(rb"\x80\x02(?:K(.)|M(..))c_codecs\nencode\nq\x00X", re.S)
_ONE_BYTES_CALL_END = b"q\x01X\x06\x00\x00\x00latin1q\x02\x86q\x03Rq\x04\x85q\x05\x86q\x06."
_STRING_LENGTH = struct.Struct("<I")


class UnsafeCommand(Exception):
    """A command that could construct an object, or that our state machine cannot apply."""


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
    elif kind == VERSION:
        if type(_unpickle(command)) is not int:
            raise UnsafeCommand("a version command is not an int")
    else:
        raise UnsafeCommand(f"log command type {kind} is not accepted")


def check_message(message: Any, method_ids: Container[int]) -> None:
    """Check every log command a peer's message carries (plain data otherwise)."""
    if not isinstance(message, dict):
        return
    kind = message.get("type")
    if kind == "apply_command":
        check_command(message.get("command"), method_ids)
    elif kind == "append_entries":
        if "transmission" in message:
            # An entry sent in pieces (only above appendEntriesBatchSizeBytes, which raft.py
            # sets above any entry) would be unpickled whole by pysyncobj, unchecked.
            raise UnsafeCommand("entries sent in pieces are not accepted")
        entries = message.get("entries", ())
        if not isinstance(entries, list):
            raise UnsafeCommand("entries must be a list")
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 3):
                raise UnsafeCommand("an entry must be [command, index, term]")
            check_command(entry[0], method_ids)
