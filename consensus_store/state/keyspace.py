"""The ordered key space: records, session bindings, and the change events of one apply.

A record is a list ``[value, create_revision, mod_revision, version]`` (revisions are Raft
indexes, as in etcd); records are replaced, never mutated, so a reader holding one sees a
consistent snapshot of that key.  ``events`` collects what the current apply changed, for
watchers; it is transient (not part of snapshots or digests).
"""
from __future__ import annotations

from typing import Any, Iterator

from sortedcontainers import SortedDict

Record = list
_MAX_CHAR = "\U0010ffff"


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
        self.events.append({"type": "put", "kv": kv_json(key, record)})
        return record

    def delete(self, key: str, index: int) -> Record | None:
        prev = self.records.pop(key, None)
        if prev is not None:
            self.key_session.pop(key, None)
            self.revision = index
            self.events.append({"type": "delete", "key": key, "revision": index})
        return prev

    def keys_with_prefix(self, prefix: str) -> Iterator[str]:
        if not prefix:
            return iter(list(self.records))
        return (k for k in list(self.records.irange(prefix, prefix + _MAX_CHAR))
                if k.startswith(prefix))

    def range(self, prefix: str, limit: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Keys starting with ``prefix`` in order: (at most ``limit`` of them, total count)."""
        keys = self.records.irange(prefix, prefix + _MAX_CHAR) if prefix else iter(self.records)
        kvs, count = [], 0
        for key in keys:
            if not key.startswith(prefix):
                continue
            count += 1
            if not limit or len(kvs) < limit:
                kvs.append(kv_json(key, self.records[key]))
        return kvs, count

    def plain_state(self) -> dict[str, Any]:
        return {"revision": self.revision, "kv": [[k, r] for k, r in self.records.items()],
                "key_session": sorted(self.key_session.items())}

    def restore(self, state: dict[str, Any]) -> None:
        self.revision = state["revision"]
        self.records.update((k, r) for k, r in state["kv"])
        self.key_session.update((k, s) for k, s in state.get("key_session", []))
