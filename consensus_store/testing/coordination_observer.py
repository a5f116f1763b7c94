"""The observer of the lock and election checks: the cluster's own history.

``CoordinationObserver`` is a thread that watches ``_cs/`` and rebuilds, in Raft log order, the
sequence of lock grants (``Grant``: the head of the FIFO queue) and of leaderships
(``Leadership``: the leader key).  Its times are ``time.monotonic()``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from consensus_store.coordination_keys import RESERVED_PREFIX, leader_key, lock_prefix

MAX_EVENTS_PER_WATCH = 1000            # the node's cap on one watch answer (node/watch.py)


@dataclass
class Grant:
    """The lock's holder changed to this waiter (the head of the FIFO queue), at ``revision``."""
    token: int
    owner: str | None
    session: int | None
    revision: int
    t: float                 # when the observer learnt it (monotonic)


@dataclass
class Leadership:
    """The election's leader key was written (or deleted: member None) at ``revision``."""
    token: int | None
    member: str | None
    session: int | None
    revision: int
    t: float


class CoordinationObserver:
    """Watches ``_cs/`` and rebuilds, in log order, the grants of one lock and the leaderships
    of one election.  ``gaps`` lists where history was skipped (compaction: then it re-reads)."""

    def __init__(self, endpoints: Iterable[str], token: str, lock_name: str,
                 election_name: str) -> None:
        from consensus_store.client import Client
        self._client = Client(list(endpoints), token=token, timeout=5.0)
        self.lock_prefix = lock_prefix(lock_name)
        self.leader_key = leader_key(election_name)
        self.grants: list[Grant] = []
        self.leaderships: list[Leadership] = []
        self.gaps: list[str] = []
        self.errors = 0
        self.rotations = 0
        self.revision = 0
        self._queue: dict[str, dict[str, Any]] = {}
        self._head: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coordination-observer",
                                        daemon=True)

    def start(self, timeout: float = 20.0) -> "CoordinationObserver":
        self._thread.start()
        if not self._synced.wait(timeout):
            raise TimeoutError("observer: no initial read")
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()

    # ---- queries (any thread) --------------------------------------------------------------------
    def current_holder(self) -> Grant | None:
        with self._lock:
            return self.grants[-1] if self.grants and self._head is not None else None

    def current_leader(self) -> Leadership | None:
        with self._lock:
            last = self.leaderships[-1] if self.leaderships else None
            return last if last is not None and last.member is not None else None

    def snapshot(self) -> tuple[list[Grant], list[Leadership], int]:
        with self._lock:
            return list(self.grants), list(self.leaderships), self.revision

    # ---- the watch loop --------------------------------------------------------------------------
    def _run(self) -> None:
        from consensus_store.errors import ConsensusStoreError
        need_read = True
        while not self._stop.is_set():
            try:
                if need_read:
                    self._read_all()
                    need_read = False
                    self._synced.set()
                answer = self._client._request("watch", {"prefix": RESERVED_PREFIX,
                                                         "after_revision": self.revision,
                                                         "wait": 0.5}, 3.0)
                self._apply(answer["events"])
                if (answer.get("header") or {}).get("leader") is None:
                    # A node cut off from the majority answers watches without error, but sees
                    # no new entries: go to another node.
                    self.rotations += 1
                    core = self._client._core
                    core.rotate_from(core.preferred)
            except ConsensusStoreError as exc:
                if exc.code == "compacted":
                    self.gaps.append(f"history after revision {self.revision} compacted")
                    need_read = True
                else:
                    self.errors += 1
                    self._stop.wait(0.1)

    def _read_all(self) -> None:
        answer = self._client._request("range", {"prefix": RESERVED_PREFIX,
                                                 "consistency": "linearizable"}, 5.0)
        now = time.monotonic()
        with self._lock:
            self._queue = {kv["key"]: kv["value"] for kv in answer["kvs"]
                           if kv["key"].startswith(self.lock_prefix)}
            if self.revision and answer["read_index"] > self.revision:
                self.gaps.append(f"re-read at {answer['read_index']} after {self.revision}")
            self.revision = max(self.revision, answer["read_index"])
            self._note_head(self.revision, now)
            leader = next((kv for kv in answer["kvs"] if kv["key"] == self.leader_key), None)
            if leader is not None:
                self._note_leader(leader["value"], leader["mod_revision"], now)

    def _apply(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        revision_of = [e["kv"]["mod_revision"] if e["type"] == "put" else e["revision"]
                       for e in events]
        if len(events) >= MAX_EVENTS_PER_WATCH:   # the last revision may be cut: take it next time
            last = revision_of[-1]
            keep = [i for i, r in enumerate(revision_of) if r != last]
            events, revision_of = [events[i] for i in keep], [revision_of[i] for i in keep]
        now = time.monotonic()
        with self._lock:
            for i, event in enumerate(events):
                revision = revision_of[i]
                if revision <= self.revision:
                    continue
                key = event["kv"]["key"] if event["type"] == "put" else event["key"]
                if key.startswith(self.lock_prefix):
                    if event["type"] == "put":
                        self._queue[key] = event["kv"]["value"]
                    else:
                        self._queue.pop(key, None)
                elif key == self.leader_key:
                    if event["type"] == "put":
                        self._note_leader(event["kv"]["value"], revision, now)
                    else:
                        self.leaderships.append(Leadership(None, None, None, revision, now))
                if i + 1 == len(events) or revision_of[i + 1] != revision:   # end of one entry
                    self._note_head(revision, now)
                    self.revision = revision

    def _note_head(self, revision: int, now: float) -> None:
        head = min(self._queue) if self._queue else None
        if head != self._head:
            self._head = head
            if head is not None:
                value = self._queue[head]
                self.grants.append(Grant(value["token"], value.get("owner"), value.get("session"),
                                         revision, now))

    def _note_leader(self, value: dict[str, Any], revision: int, now: float) -> None:
        if self.leaderships and self.leaderships[-1].token == value["token"]:
            return
        self.leaderships.append(Leadership(value["token"], value["member"], value.get("session"),
                                           revision, now))
