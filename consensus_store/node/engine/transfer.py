"""Leadership transfer, the Raft way (Raft thesis, section 3.10).

The leader stops taking new writes (``ReplicatedStore.writes_held``: commands wait in
pysyncobj's queue, from this node's clients and from followers alike), brings the target's log
up to date with AppendEntries, then sends it ``cs_timeout_now``.  The target, on that message
from the node it follows in the same term, makes its election deadline now, so its next tick
campaigns at once with a log at least as long as anyone's: it wins in one round trip, without
waiting for an election timeout.  If it has not won within an election timeout, the old leader
takes writes again and the call fails.  Once another node leads, the held commands go out of
the queue as a follower's do: forwarded to the new leader (or refused, and retried, by the
proposer).

Private pysyncobj names used here: ``_SyncObj__otherNodes``, ``_SyncObj__raftMatchIndex``,
``_SyncObj__raftLog``, ``_SyncObj__transport`` (to send our message) and
``_SyncObj__raftElectionDeadline`` (the target's campaign trigger: pysyncobj campaigns at the
first tick after it).  Everything here runs on the node's loop thread (runner.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from consensus_store.errors import InvalidRequest, NotLeader, Unavailable

TIMEOUT_NOW = "cs_timeout_now"
MESSAGES = frozenset({TIMEOUT_NOW})
POLL_S = 0.005          # how often the leader looks at the target's progress and the term
PUSH_INTERVAL_S = 0.05  # AppendEntries to a target still behind, at most this often

log = logging.getLogger("consensus_store.raft")


@dataclass(frozen=True)
class TransferResult:
    leader: str         # the target's raft address, which now leads
    term: int           # the term it won


class LeadershipTransfer:
    """Both sides of a transfer: ``run`` on the leader, ``on_message`` on the target."""

    def __init__(self, store: Any, transport: Any, *, election_timeout_s: float,
                 send_append_entries: Callable[[], None], request_tick: Callable[[], None],
                 node_ids: dict[str, str] | None = None) -> None:
        """``node_ids``: raft address -> node id, of every voter (this node included)."""
        self._store = store
        self._node_ids = dict(node_ids or {})
        self._addresses = {node_id: address for address, node_id in self._node_ids.items()}
        self._transport = transport
        self._election_timeout_s = election_timeout_s
        self._send_append_entries = send_append_entries
        self._request_tick = request_tick
        self._running = False
        self._campaign_term: int | None = None     # target side: the term it was asked in

    # ---- leader side ------------------------------------------------------------------------
    async def hand_to(self, to: str | None, timeout: float) -> dict[str, Any]:
        """``run`` by node id (None: the most caught-up voter): ``{"leader": id, "term": n}``
        once it leads, at once if ``to`` already leads here.  InvalidRequest for an id that
        is no voter."""
        address = None
        if to is not None:
            address = self._addresses.get(to) or self._live_ids().get(to)
            if address is None:
                raise InvalidRequest(f"no voter named {to!r} (voters: "
                                     f"{', '.join(sorted(self._addresses))})",
                                     reason="unknown_target")
            if address == self._store.selfNode.address and self._store._isLeader():
                return {"leader": to, "term": self._store._getTerm()}
        result = await self.run(address, timeout)
        leader = self._node_ids.get(result.leader) or next(
            (i for i, a in self._live_ids().items() if a == result.leader), result.leader)
        return {"leader": leader, "term": result.term}

    def _live_ids(self) -> dict[str, str]:
        """id -> raft address of the members added since start (the live member table that
        membership changes keep in the store, membership.py)."""
        live = getattr(self._store, "members", None) or ()
        return {m["id"]: m["raft_address"] for m in live}

    def pick_target(self, address: str | None) -> Any:
        """The follower to hand over to: the one at ``address``, or (None) the connected voter
        with the highest match index.  InvalidRequest when there is none."""
        store = self._store
        voters = store._SyncObj__otherNodes
        if address is None:
            connected = [n for n in voters if store.isNodeConnected(n)]
            if not connected:
                raise InvalidRequest("no other voter is connected to the leader: nothing to "
                                     "hand leadership to", reason="no_target")
            match = store._SyncObj__raftMatchIndex
            return max(connected, key=lambda n: (match.get(n, 0), n.address))
        for node in voters:
            if node.address == address:
                if not store.isNodeConnected(node):
                    raise InvalidRequest(f"{address} is not connected to the leader (down or "
                                         f"cut off): leadership stays", reason="target_down")
                return node
        raise InvalidRequest(f"{address} is not another voter of this cluster",
                             reason="unknown_target")

    async def run(self, address: str | None, timeout: float) -> TransferResult:
        """Hand leadership over to ``address`` (None: the most caught-up voter).  Writes are
        held for at most an election timeout (or ``timeout`` when shorter)."""
        store = self._store
        if not store._isLeader():
            raise NotLeader("leadership can only be handed over by the leader",
                            retry="leader")
        if self._running:
            raise Unavailable("a leadership transfer is already running; retry shortly")
        target = self.pick_target(address)
        start_term = store._getTerm()
        started = time.monotonic()
        deadline = started + min(timeout, self._election_timeout_s)
        self._running = True
        store.writes_held = True
        sent, pushed_at = False, 0.0
        try:
            while time.monotonic() < deadline:
                leader = store._getLeader()
                if store._getTerm() > start_term and leader is not None:
                    if leader == target:
                        log.info("raft: handed leadership to %s (term %d)", target.address,
                                 store._getTerm())
                        return TransferResult(target.address, store._getTerm())
                    raise Unavailable(f"{leader.address} was elected instead of "
                                      f"{target.address}", reason="transfer_failed")
                if not sent and store._isLeader():
                    if self._caught_up(target):
                        self._transport.send(target, {"type": TIMEOUT_NOW, "term": start_term})
                        sent = True
                    elif not store.isNodeConnected(target):
                        raise InvalidRequest(f"{target.address} disconnected from the leader",
                                             reason="target_down")
                    elif time.monotonic() - pushed_at >= PUSH_INTERVAL_S:
                        pushed_at = time.monotonic()
                        self._send_append_entries()     # bring its log up to date
                await asyncio.sleep(POLL_S)
            why = "it was asked to" if sent else "its log did not catch up"
            raise Unavailable(f"{target.address} did not take over leadership within "
                              f"{deadline - started:.2g}s ({why}); writes resume",
                              reason="transfer_failed")
        finally:
            store.writes_held = False
            self._running = False
            self._request_tick()          # held commands: appended, or forwarded

    def _caught_up(self, target: Any) -> bool:
        store = self._store
        return store._SyncObj__raftMatchIndex.get(target, 0) >= store._SyncObj__raftLog[-1][1]

    # ---- target side ------------------------------------------------------------------------
    def on_message(self, node: Any, message: dict[str, Any]) -> None:
        """``cs_timeout_now``: campaign now, if it comes from the leader of this term."""
        store = self._store
        term = message["term"]
        if store._isLeader() or term != store._getTerm() or store._getLeader() != node:
            log.info("raft: ignored a stale request to take over leadership (term %d)", term)
            return
        log.info("raft: asked to take over leadership (term %d): campaigning", term)
        self._campaign_term = term
        store._SyncObj__raftElectionDeadline = 0
        self._request_tick()

    def keep_campaign_due(self) -> None:
        """After each message: the old leader's heartbeats push the election deadline back;
        until the campaign starts (the term moves) it stays due."""
        if self._campaign_term is None:
            return
        store = self._store
        if store._getTerm() == self._campaign_term and not store._isLeader():
            store._SyncObj__raftElectionDeadline = 0
        else:
            self._campaign_term = None
