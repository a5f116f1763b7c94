"""Our corrections to pysyncobj's replication, in the transport it sends and receives through.

``GuardedTransport`` is the raft port's transport (peer_connection.py) that also syncs a durable
journal before a follower's acknowledgements, numbers AppendEntries for the read index
(read_index.py), and corrects how pysyncobj's leader moves a follower's next index on replies.
Everything here runs on the node's loop thread (runner.py).  docs/pysyncobj.md, "Timing",
explains why the corrections are needed.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from consensus_store.node.engine import read_index, transfer
from consensus_store.node.engine.durability import FLUSH_TRIGGERS, DurableJournal
from consensus_store.node.engine.peer_connection import SealedTransport

log = logging.getLogger("consensus_store.raft")


class GuardedTransport(SealedTransport):
    """The raft port's transport (peer_connection.py) that also syncs a durable journal before
    a follower's acks, and corrects how pysyncobj's leader moves a follower's next index on
    replies.

    pysyncobj applies every ``next_node_idx`` reply as it comes, which goes wrong because the
    hybrid flush keeps several AppendEntries in flight per follower:
    - an ack sets nextIndex back to the acked index although later entries are already on
      their way, so they would be sent again (docs/pysyncobj.md, "Timing"): an ack
      only ever moves it forward;
    - a reset older than what the follower has acknowledged in this term (a late answer to an
      earlier probe) would make the leader resend acked entries, and pysyncobj's follower then
      truncates its log behind them, even though they match; for a moment it lacks entries that
      count towards commits.  Such resets are ignored (a follower that keeps asking for them,
      say after losing its page cache, is believed after ``STALE_RESETS_BELIEVED`` answers);
    - while probing for the point where the logs agree, one burst gets a "conflict at p, go
      to p" answer and then "too short, go to end+1" answers; applied in order they undo each
      other forever.  Until the next ack the next index only goes down.
    """

    STALE_RESETS_BELIEVED = 50

    def __init__(self, syncObj: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(syncObj, *args, **kwargs)
        self._probe_floor: dict[Any, tuple[int, int]] = {}   # node -> (term, lowest reset)
        self._stale_resets: dict[Any, int] = {}
        # ReadIndex bookkeeping (read_index.py): AppendEntries numbers sent to / answered by
        # each follower, and the one this node is answering right now.
        self.sent_seq: dict[Any, int] = {}
        self.acked_seq: dict[Any, int] = {}
        self._answering: tuple[Any, int] | None = None
        self.on_ack: Callable[[], None] | None = None
        self.on_read_index_message: Callable[[Any, dict[str, Any]], None] | None = None
        # Leadership transfer (transfer.py): the target's TimeoutNow, and a hook after each
        # message that keeps its campaign due until it starts.
        self.on_timeout_now: Callable[[Any, dict[str, Any]], None] | None = None
        self.after_message: Callable[[], None] | None = None

    def forget_node(self, node: Any) -> None:
        for per_node in (self._probe_floor, self._stale_resets, self.sent_seq, self.acked_seq):
            per_node.pop(node, None)

    def send(self, node: Any, message: Any) -> bool:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries":              # numbered for read_index.py
            seq = self.sent_seq.get(node, 0) + 1
            self.sent_seq[node] = seq
            message = {**message, "cs_seq": seq}
        elif kind in FLUSH_TRIGGERS:
            journal = self._syncObj._SyncObj__raftLog
            if isinstance(journal, DurableJournal):
                journal.sync_if_dirty()
            answering = self._answering            # FLUSH_TRIGGERS is the follower's ack
            if answering is not None and answering[0] is node:
                message = {**message, "cs_ack": answering[1]}
        return super().send(node, message)

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        self._dispatch_message(node, message)
        if self.after_message is not None:
            self.after_message()

    def _dispatch_message(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in transfer.MESSAGES:
            if self.on_timeout_now is not None:
                self.on_timeout_now(node, message)
            return
        if kind in read_index.MESSAGES:
            if self.on_read_index_message is not None:
                self.on_read_index_message(node, message)
            return
        if kind == "append_entries":
            # Replies sent while handling it name it (pysyncobj answers synchronously).
            self._answering = (node, message.get("cs_seq", 0))
            try:
                self._receive(node, message)
            finally:
                self._answering = None
            return
        self._receive(node, message)
        if kind == "next_node_idx" and message.get("cs_ack", 0) > self.acked_seq.get(node, 0):
            self.acked_seq[node] = message["cs_ack"]
            if self.on_ack is not None:
                self.on_ack()

    def _receive(self, node: Any, message: Any) -> None:
        if (isinstance(message, dict) and message.get("type") == "append_entries"
                and message.get("entries") and "prevLogIdx" in message
                and "transmission" not in message):
            message = self._skip_matching_entries(node, message)
            if message is None:
                return
        if not (isinstance(message, dict) and message.get("type") == "next_node_idx"
                and self._syncObj._isLeader()):
            super()._onMessageReceived(node, message)
            return
        store = self._syncObj
        next_index = store._SyncObj__raftNextIndex
        before = next_index.get(node)
        if message.get("reset"):
            message = self._guard_reset(node, message, store)
        elif message.get("success"):
            self._probe_floor.pop(node, None)
            self._stale_resets.pop(node, None)
        super()._onMessageReceived(node, message)
        if message.get("success") and before is not None and next_index.get(node, 0) < before:
            next_index[node] = before

    def _skip_matching_entries(self, node: Any, message: dict[str, Any]) -> dict[str, Any] | None:
        """Follower side: never truncate entries that match the leader's (Raft, section 5.3).

        pysyncobj deletes everything after prevLogIdx before appending, even entries identical
        to the ones sent.  So a resent batch shortens the log below what this node has
        acknowledged, and a vote or a crash at that moment can lose committed entries.  Here
        the entries this log already holds with the same term are dropped from the message;
        only a real conflict reaches pysyncobj's truncation.  Returns None when the message
        was fully handled here.
        """
        store = self._syncObj
        if message["term"] < store._getTerm():
            return message                          # stale leader: pysyncobj ignores it
        log = store._SyncObj__raftLog
        first, last = log[0][1], log[-1][1]

        def term_at(index: int) -> int | None:
            return log[index - first][2] if first <= index <= last else None

        prev = message["prevLogIdx"]
        if term_at(prev) != message["prevLogTerm"]:
            return message                          # pysyncobj answers with a reset
        entries = message["entries"]
        skip = 0
        while skip < len(entries) and term_at(entries[skip][1]) == entries[skip][2]:
            skip += 1
        if skip == 0:
            return message
        verified = entries[skip - 1][1]             # last index known to equal the leader's
        if skip < len(entries) or verified == last:
            return {**message, "prevLogIdx": verified, "prevLogTerm": entries[skip - 1][2],
                    "entries": entries[skip:]}
        # Everything sent is already here, and more after it that the leader has not vouched
        # for: take the leader's term, leadership and commit (capped at what was verified),
        # and acknowledge up to the verified index ourselves.
        capped = {key: value for key, value in message.items()
                  if key not in ("prevLogIdx", "prevLogTerm", "entries")}
        capped["commit_index"] = min(message["commit_index"], verified)
        super()._onMessageReceived(node, capped)
        self.send(node, {"type": "next_node_idx", "next_node_idx": verified + 1,
                         "reset": False, "success": True})
        return None

    def _guard_reset(self, node: Any, message: dict[str, Any], store: Any) -> dict[str, Any]:
        wanted = message["next_node_idx"]
        term = store._getTerm()
        if wanted <= store._SyncObj__raftMatchIndex.get(node, 0):
            stale = self._stale_resets.get(node, 0) + 1
            self._stale_resets[node] = stale
            if stale < self.STALE_RESETS_BELIEVED:
                return {**message, "reset": False, "success": False}   # only "still alive"
            log.warning("follower %s keeps asking for entries it acknowledged; resending", node)
            store._SyncObj__raftMatchIndex[node] = wanted - 1
        self._stale_resets.pop(node, None)
        floor_term, floor = self._probe_floor.get(node, (term, wanted))
        if floor_term == term:
            wanted = min(wanted, floor)
        self._probe_floor[node] = (term, wanted)
        return {**message, "next_node_idx": wanted}
