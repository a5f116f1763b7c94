"""Digests of the replicated state, and a consistent copy of it taken without blocking apply.

The digest of a replica is computed from its plain state (``StateMachine._plain_state``): equal
on replicas that applied the same log.  Hashing a large state takes long, and a copy of it in
one go holds the lock apply needs for as long as the copy takes (220 ms at 20k keys, measured).
``copy_in_chunks`` copies the key space and the at-most-once table a chunk at a time, taking
the lock for each chunk only, while the machine notes which keys and clients change meanwhile
(``trackers``); a last short hold re-copies just those, so the copy is the state as of that
last hold, exactly.  The hashing then runs without the lock, a piece at a time (so the GIL
changes hands too: a single ``json.dumps`` of the whole state would keep it ~100 ms).
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator

from consensus_store.errors import Unavailable

if TYPE_CHECKING:
    from consensus_store.state.machine import StateMachine

CHUNK_KEYS = 500
CHUNK_ANSWERS = 500   # at-most-once answers (a client's are copied together)
PIECE_BYTES = 64 * 1024   # JSON per encoder call while hashing
_encode = json.JSONEncoder(sort_keys=True).encode
ATTEMPTS = 3     # a snapshot install replaces the machine mid-copy: start again


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


def _merged(copied: list[tuple[str, list, int | None]], changed: set[str],
            now: dict[str, tuple[str, list, int | None]]) -> list[tuple[str, list, int | None]]:
    """The copied entries (in key order) with the changed keys as they are ``now`` (absent:
    deleted), in key order; a merge, not a sort of everything."""
    fresh = [now[key] for key in sorted(now)]
    merged: list[tuple[str, list, int | None]] = []
    position = 0
    for entry in copied:
        while position < len(fresh) and fresh[position][0] < entry[0]:
            merged.append(fresh[position])
            position += 1
        if entry[0] not in changed:
            merged.append(entry)
    merged.extend(fresh[position:])
    return merged


def copy_in_chunks(lock: Callable[[], ContextManager[Any]],
                   current: Callable[[], "StateMachine"]) -> dict[str, Any]:
    """The plain state of ``current()``, as ``_plain_state`` gives it, copied while apply goes
    on: ``lock()`` is held for a chunk at a time only."""
    for _ in range(ATTEMPTS):
        state = _copy(lock, current)
        if state is not None:
            return state
    raise Unavailable("the state was replaced (snapshot installs) during every digest attempt")


def _copy(lock: Callable[[], ContextManager[Any]],
          current: Callable[[], "StateMachine"]) -> dict[str, Any] | None:
    from consensus_store.state.machine import SNAPSHOT_FORMAT   # (machine imports this module)

    keys_changed: set[str] = set()
    clients_changed: set[str] = set()
    with lock():
        machine = current()
        keyspace, answers = machine.keyspace, machine._answers
        keyspace.trackers.append(keys_changed)
        answers.trackers.append(clients_changed)
        cids = list(answers.clients)
    try:
        copied: list[tuple[str, list, int | None]] = []    # in key order, chunk after chunk
        while True:
            with lock():
                if current() is not machine:
                    return None
                chunk = keyspace.chunk_after(copied[-1][0] if copied else None, CHUNK_KEYS)
            if not chunk:
                break
            copied.extend(chunk)
        clients: dict[str, list[Any]] = {}
        next_cid = 0
        while next_cid < len(cids):
            with lock():
                if current() is not machine:
                    return None
                copied_answers = 0
                while next_cid < len(cids) and copied_answers < CHUNK_ANSWERS:
                    cid = cids[next_cid]
                    next_cid += 1
                    if cid in answers.clients:
                        clients[cid] = answers.plain_client(cid)
                        copied_answers += 1 + len(clients[cid][2])
        with lock():
            if current() is not machine:
                return None
            changed = set(keys_changed)     # the tracker fills on until the tracking stops
            now = {key: (key, keyspace.records[key], keyspace.key_session.get(key))
                   for key in changed if key in keyspace.records}
            for cid in clients_changed:
                if cid in answers.clients:
                    clients[cid] = answers.plain_client(cid)
                else:
                    clients.pop(cid, None)
            order = list(answers.clients)
            sessions = machine.sessions.plain_state()
            head = {"format": SNAPSHOT_FORMAT, "applied_index": machine.applied_index}
            revision = keyspace.revision
    finally:
        with lock():
            keyspace.trackers[:] = [t for t in keyspace.trackers if t is not keys_changed]
            answers.trackers[:] = [t for t in answers.trackers if t is not clients_changed]
    entries = _merged(copied, changed, now)
    return {
        **head,
        "keyspace": {"revision": revision, "kv": [[k, record] for k, record, _ in entries],
                     "key_session": [(k, session) for k, _, session in entries
                                     if session is not None]},
        "sessions": sessions,
        "clients": [clients[cid] for cid in order],
    }
