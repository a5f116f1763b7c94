"""Digests of the replicated state.

The digest of a replica is computed from its plain state (``StateMachine.plain_state``, or a
copy taken without blocking apply by ``chunked_copy.copy_in_chunks``): equal on replicas that
applied the same log.  The hashing runs without the lock, a piece at a time (so the GIL changes
hands too: a single ``json.dumps`` of the whole state would keep it ~100 ms).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator

PIECE_BYTES = 64 * 1024   # JSON per encoder call while hashing
_encode = json.JSONEncoder(sort_keys=True).encode


def parts_of(plain_state: dict[str, Any]) -> dict[str, str]:
    """Digests of each part of a plain state, to tell which part of two replicas differs."""
    # a replica may have applied a trailing no-op more or less: applied_index is not hashed
    return {part: _sha256(value) for part, value in plain_state.items() if part != "applied_index"}


def digest_of(parts: dict[str, str]) -> str:
    return _sha256(parts)


def _sha256(value: Any) -> str:
    """SHA-256 of ``json.dumps(value, sort_keys=True)``, fed a piece at a time: one C call
    encoding a whole large list would hold the GIL, and so stall the node's loop (and Raft's
    heartbeats), throughout."""
    hasher = hashlib.sha256()
    for piece in _json_pieces(value):
        hasher.update(piece.encode())
    return hasher.hexdigest()


def _json_pieces(value: Any) -> Iterator[str]:
    """``json.dumps(value, sort_keys=True)`` in pieces of about PIECE_BYTES each (the dicts of a
    plain state have string keys)."""
    if _weight(value) <= PIECE_BYTES:
        yield _encode(value)
    elif isinstance(value, dict):
        yield "{"
        for position, key in enumerate(sorted(value)):
            yield (", " if position else "") + _encode(key) + ": "
            yield from _json_pieces(value[key])
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        batch: list[Any] = []
        weight, separator = 0, ""
        for item in value:
            item_weight = _weight(item)
            if batch and (item_weight > PIECE_BYTES or weight + item_weight > PIECE_BYTES):
                yield separator + _encode(batch)[1:-1]
                batch, weight, separator = [], 0, ", "
            if item_weight > PIECE_BYTES:
                yield separator
                yield from _json_pieces(item)
                separator = ", "
            else:
                batch.append(item)
                weight += item_weight
        if batch:
            yield separator + _encode(batch)[1:-1]
        yield "]"
    else:
        yield _encode(value)      # a long string: one piece however long


def _weight(value: Any) -> int:
    """About how many bytes of JSON ``value`` makes, counted no further than PIECE_BYTES."""
    total, stack = 0, [value]
    while stack and total <= PIECE_BYTES:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            total += 2 + 2 * len(item)
            stack.extend(item)
        else:
            total += 8
    return total
