"""The ordered key space: records, session bindings, and the change events of one apply.

A record is a list ``[value, create_revision, mod_revision, version]`` (revisions are Raft
indexes, as in etcd); records are replaced, never mutated, so a reader holding one sees a
consistent snapshot of that key.  ``events`` collects what the current apply changed (with
the previous record, for watchers asking for it); it is transient (not part of snapshots or
digests).

Ranges are bounded while they are built (a count and a byte budget, ``RangeBudget``): a reply
never holds more than the budget, and ``count`` (from two bisections, not a scan) says how many
keys matched, so ``count > len(kvs)`` means "more".  Byte sizes are estimates from the values
(``value_bytes``), the same on every replica, since a range inside a txn is built in apply.
"""
from __future__ import annotations

from typing import Any, Iterator

from sortedcontainers import SortedDict

from consensus_store import fast_json

Record = list
_MAX_CHAR = "\U0010ffff"
KV_OVERHEAD_BYTES = 64    # a kv's revisions, version and field names, as JSON


def value_bytes(value: Any) -> int:
    """About how many bytes ``value`` takes as JSON: exact enough to bound replies, cheap for
    the common values (a string is not encoded), deterministic (a function of the value)."""
    if type(value) is str:
        return len(value) + 2
    if value is None or type(value) in (bool, int, float):
        return 8
    return len(fast_json.encode(value))


def kv_bytes(key: str, record: Record) -> int:
    return len(key) + value_bytes(record[0]) + KV_OVERHEAD_BYTES


class RangeBudget:
    """How much a range (or all the ranges of one txn) may still return.  The first key taken
    may exceed the bytes (one value always fits a reply, so a reader can make progress)."""

    __slots__ = ("keys", "bytes", "taken")

    def __init__(self, keys: int, bytes_: int) -> None:
        self.keys, self.bytes, self.taken = keys, bytes_, 0

    def take(self, size: int) -> bool:
        """Spend ``size`` bytes and a key, if they are left."""
        if self.keys <= 0 or (size > self.bytes and self.taken):
            return False
        self.keys -= 1
        self.bytes -= size
        self.taken += 1
        return True


def prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix`` (None: no such bound)."""
    stripped = prefix.rstrip(_MAX_CHAR)
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


def kv_json(key: str, record: Record) -> dict[str, Any]:
    value, create_rev, mod_rev, version = record
    return {"key": key, "value": value, "create_revision": create_rev,
            "mod_revision": mod_rev, "version": version}


class Keyspace:
    def __init__(self) -> None:
        self.records: SortedDict = SortedDict()
        self.key_session: dict[str, int] = {}   # ephemeral key -> owning session id
        self.revision = 0                       # index of the last change
        self.events: list[dict[str, Any]] = []
        self.trackers: list[set[str]] = []      # each collects the keys changed (digest.py)

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> Record | None:
        return self.records.get(key)

    def put(self, key: str, value: Any, index: int, session: int | None = None) -> Record:
        prev = self.records.get(key)
        record = [value, prev[1], index, prev[3] + 1] if prev else [value, index, index, 1]
        self.records[key] = record
        if session is None:
            self.key_session.pop(key, None)
        else:
            self.key_session[key] = session
        self.revision = index
        event = {"type": "put", "kv": kv_json(key, record)}
        if prev is not None:     # for watchers asking for previous values
            event["prev_kv"] = kv_json(key, prev)
        self.events.append(event)
        for changed in self.trackers:
            changed.add(key)
        return record

    def delete(self, key: str, index: int) -> Record | None:
        prev = self.records.pop(key, None)
        if prev is not None:
            self.key_session.pop(key, None)
            self.revision = index
            self.events.append({"type": "delete", "key": key, "revision": index,
                                "prev_kv": kv_json(key, prev)})
            for changed in self.trackers:
                changed.add(key)
        return prev

    def _prefix_span(self, prefix: str) -> tuple[int, int]:
        """Positions [start, stop) of the keys starting with ``prefix`` (O(log n))."""
        end = prefix_end(prefix)
        stop = self.records.bisect_left(end) if end is not None else len(self.records)
        return (self.records.bisect_left(prefix) if prefix else 0), stop

    def count_prefix(self, prefix: str) -> int:
        start, stop = self._prefix_span(prefix)
        return stop - start

    def first_with_prefix(self, prefix: str) -> str | None:
        start, stop = self._prefix_span(prefix)
        return self.records.peekitem(start)[0] if start < stop else None

    def keys_with_prefix(self, prefix: str) -> Iterator[str]:
        """A copy of the keys (callers delete while iterating)."""
        start, stop = self._prefix_span(prefix)
        return iter(list(self.records.islice(start, stop)))

    def range(self, prefix: str, limit: int = 0,
              budget: RangeBudget | None = None) -> tuple[list[dict[str, Any]], int]:
        """Keys starting with ``prefix`` in order: (at most ``limit`` of them, and no more than
        ``budget`` allows, which they are taken from; how many keys match).  The budget is
        spent while the reply is built: nothing past it is ever made."""
        start, stop = self._prefix_span(prefix)
        count = stop - start
        if limit:
            stop = min(stop, start + limit)
        if budget is not None:
            stop = min(stop, start + max(budget.keys, 0))
        kvs: list[dict[str, Any]] = []
        records = self.records
        for key in records.islice(start, stop):
            record = records[key]
            if budget is not None and not budget.take(kv_bytes(key, record)):
                break
            kvs.append(kv_json(key, record))
        return kvs, count

    def chunk_after(self, after: str | None, count: int) -> list[tuple[str, Record, int | None]]:
        """Up to ``count`` (key, record, session) in key order, from the first key above
        ``after`` (None: from the start)."""
        records = self.records
        start = 0 if after is None else records.bisect_right(after)
        return [(key, records[key], self.key_session.get(key))
                for key in records.islice(start, start + count)]

    def plain_state(self) -> dict[str, Any]:
        return {"revision": self.revision, "kv": [[k, r] for k, r in self.records.items()],
                "key_session": sorted(self.key_session.items())}

    def restore(self, state: dict[str, Any]) -> None:
        self.revision = state["revision"]
        self.records.update((k, r) for k, r in state["kv"])
        self.key_session.update((k, s) for k, s in state.get("key_session", []))
