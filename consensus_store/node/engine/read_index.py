"""Linearizable reads without a log entry: Raft's ReadIndex (Raft thesis, section 6.4).

The leader notes its commit index, then proves it still leads with one heartbeat round: a
majority accepted an AppendEntries it sent after noting the index.  Every write acknowledged
before the read began is at or below that index, so the reader only waits until its replica
has applied it: no log entry, no fsync, no apply.  Reads that arrive during a round wait for
the next one (the noted index could miss writes acknowledged after it was noted).  A follower
asks the leader for a confirmed index over the Raft connection.

Proof of acceptance: pysyncobj's replies carry no term, so our transport numbers each
AppendEntries per follower (``cs_seq``) and a follower's reply names the message it answers
(``cs_ack``).  A follower answers only AppendEntries whose term is at least its own, so an
answer to a message of this round means it had not moved to a newer term when it got it.

Everything here runs on the node's loop thread (runner.py), inside Raft ticks and events.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

REQUEST = "cs_read_index"
REPLY = "cs_read_index_reply"
MESSAGES = frozenset({REQUEST, REPLY})
ASK_TIMEOUT_S = 1.0     # a follower's question unanswered by then is asked again

Callback = Callable[[int | None], None]   # a confirmed index, or None: ask again later


@dataclass
class _Round:
    term: int
    index: int
    needed: dict[Any, int]                # follower -> first AppendEntries number of the round
    callbacks: list[Callback] = field(default_factory=list)


class ReadIndex:
    def __init__(self, store: Any, transport: Any, send_append_entries: Callable[[], None]) -> None:
        self._store = store
        self._transport = transport
        self._send_append_entries = send_append_entries
        self._waiting: list[Callback] = []            # leader: for the next round
        self._round: _Round | None = None
        self._asked: dict[int, tuple[Callback, float]] = {}   # follower: id -> (callback, sent)
        self._asked_leader: Any = None
        self._ids = itertools.count(1)

    # ---- entry points ------------------------------------------------------------------------
    def request(self, callback: Callback) -> None:
        store = self._store
        if store._isLeader():
            self._waiting.append(callback)
            self.advance()
            return
        leader = store._getLeader()
        if leader is None:
            callback(None)
            return
        if leader is not self._asked_leader:
            self._fail_asked()
            self._asked_leader = leader
        request_id = next(self._ids)
        self._asked[request_id] = (callback, time.monotonic())
        if not self._transport.send(leader, {"type": REQUEST, "id": request_id}):
            self._asked.pop(request_id, None)
            callback(None)

    def on_message(self, node: Any, message: dict[str, Any]) -> None:
        if message.get("type") == REPLY:
            asked = self._asked.pop(message.get("id"), None)
            index = message.get("index")
            if asked is not None:
                asked[0](index if isinstance(index, int) else None)
            return
        request_id = message.get("id")

        def reply(index: int | None) -> None:
            self._transport.send(node, {"type": REPLY, "id": request_id, "index": index})

        if self._store._isLeader():
            self._waiting.append(reply)
            self.advance()
        else:
            reply(None)

    def tick(self) -> None:
        self.advance()
        if self._asked:
            if self._store._getLeader() is not self._asked_leader:
                self._fail_asked()
            else:
                expired = time.monotonic() - ASK_TIMEOUT_S
                for request_id in [i for i, (_, at) in self._asked.items() if at < expired]:
                    self._asked.pop(request_id)[0](None)

    def advance(self) -> None:
        """Finish the current round if it is confirmed (or lost), then start the next one."""
        store = self._store
        current = self._round
        if current is not None:
            if not store._isLeader() or store._getTerm() != current.term:
                self._round = None
                _call_all(current.callbacks, None)
            elif self._confirmed(current):
                self._round = None
                _call_all(current.callbacks, current.index)
            else:
                return
        if not self._waiting:
            return
        if not store._isLeader():
            waiting, self._waiting = self._waiting, []
            _call_all(waiting, None)
            return
        term, commit = store._getTerm(), store.raftCommitIndex
        # A new leader knows what is committed only once an entry of its own term is (its
        # election no-op, moments after the election); until then the round waits.
        if self._term_at(commit) != term:
            return
        waiting, self._waiting = self._waiting, []
        sent = self._transport.sent_seq
        needed = {node: sent.get(node, 0) + 1 for node in store._SyncObj__otherNodes}
        self._round = _Round(term, commit, needed, waiting)
        if self._confirmed(self._round):          # a single-node cluster
            self.advance()
        else:
            self._send_append_entries()            # the heartbeat that confirms the round

    # ---- helpers ----------------------------------------------------------------------------
    def _confirmed(self, current: _Round) -> bool:
        acked = self._transport.acked_seq
        votes = 1 + sum(1 for node, first in current.needed.items() if acked.get(node, 0) >= first)
        return votes * 2 > len(current.needed) + 1

    def _term_at(self, index: int) -> int | None:
        entries = self._store._SyncObj__getEntries(index, 1)
        return entries[0][2] if entries else None

    def _fail_asked(self) -> None:
        asked, self._asked = self._asked, {}
        for callback, _ in asked.values():
            callback(None)


def _call_all(callbacks: list[Callback], index: int | None) -> None:
    for callback in callbacks:
        callback(index)
