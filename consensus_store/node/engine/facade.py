"""``Engine``: the one way the rest of the node uses Raft.

Everything here runs on the node's loop (the thread that also ticks Raft, runner.py), except
where a method says "any thread".  Nothing outside ``node/engine/`` imports pysyncobj or reaches
into the store; pysyncobj's failure reasons become our errors in one place (failures.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, Callable, Iterator, NamedTuple

from consensus_store.config import NodeConfig
from consensus_store.errors import Unavailable
from consensus_store.node.engine.durability import DurableJournal
from consensus_store.node.engine.failures import SUCCESS, error_for
from consensus_store.node.engine.membership import MembershipChanges
from consensus_store.node.engine.proposer import Proposer
from consensus_store.node.engine.replica import connected_replicas, replica_lag
from consensus_store.node.engine.runner import RaftRunner, RaftStatus
from consensus_store.node.engine.storage import SNAPSHOT_NAME
from consensus_store.state import StateMachine
from consensus_store.state.chunked_copy import copy_in_chunks

log = logging.getLogger("consensus_store.raft")

EventsCallback = Callable[[int, list[dict[str, Any]]], None]


class StorageStats(NamedTuple):
    journal_bytes: int
    snapshot_at: float | None     # wall-clock time the snapshot file was written (None: none)


class Engine:
    """Raft with our state machine, driven on ``loop`` (which the node runs on its own thread).

    ``on_events(index, events)`` runs in apply with the changes of each applied entry;
    ``on_reset(index)`` when a snapshot replaced the state wholesale."""

    def __init__(self, config: NodeConfig, loop: asyncio.AbstractEventLoop, *,
                 on_events: EventsCallback | None = None,
                 on_reset: Callable[[int], None] | None = None) -> None:
        self.config = config
        self._loop = loop
        self.runner = RaftRunner(config, on_applied=self._on_applied, on_events=on_events,
                                 on_reset=on_reset, loop=loop)
        self.proposer = Proposer(self.runner, loop)
        self._node_by_raft_address = {str(config.raft_address): config.id}
        self._node_by_raft_address.update({str(p.raft_address): p.id for p in config.peers})
        # member list/add/remove and the live member table (membership.py; on the loop)
        self.membership = MembershipChanges(config, lambda: self.runner.store,
                                            self.runner.request_tick)

    # ---- lifecycle (any thread but the loop's; the loop must be running) ---------------------
    def start(self) -> None:
        """Open the data dir and the raft port.  StorageCorrupt for damaged files, ConfigError
        for anything else that stops it (a port in use, a data dir that cannot be made)."""
        self.runner.start()
        self.runner.call_on_loop(self.membership.report_mismatch)   # one line if they differ

    def stop(self) -> None:
        """Stop ticking, close the raft port and the journal.  Idempotent."""
        self.runner.stop()

    @property
    def started(self) -> bool:
        return self.runner.store is not None

    # ---- writes -----------------------------------------------------------------------------
    async def write(self, command: dict[str, Any], timeout: float, *, deduplicate: bool = True,
                    alone: bool = False) -> tuple[int, dict[str, Any]]:
        """Replicate a command (group-committed when it can be), retrying ambiguous failures
        under the command's at-most-once identity; (index, result) or a typed error."""
        return await self.proposer.write(command, timeout, deduplicate=deduplicate, alone=alone)

    def try_write_in_batch(self, command: dict[str, Any], timeout: float,
                           deliver: Callable[[Any], None]) -> bool:
        return self.proposer.try_write_in_batch(command, timeout, deliver)

    def applied_answer(self, index: int, outcome: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self.proposer.applied_answer(index, outcome)

    def propose(self, data: bytes) -> asyncio.Future[Any]:
        """One proposal of an encoded command, no retry: its apply result, or the typed error
        of pysyncobj's failure reason (``failures.error_for``)."""
        future: asyncio.Future[Any] = self._loop.create_future()

        def done(result: Any, reason: int) -> None:
            if future.done():
                return
            if reason == SUCCESS:
                future.set_result(result)
            else:
                future.set_exception(error_for(reason))

        self.runner.propose(data, done)
        return future

    # ---- reads ------------------------------------------------------------------------------
    async def barrier(self, timeout: float) -> int:
        """ReadIndex: returns once every write acknowledged before the call is applied here."""
        return await self.proposer.barrier(timeout)

    async def wait_applied(self, index: int, timeout: float) -> None:
        await self.proposer.wait_applied(index, timeout)

    async def wait_for_leader(self, wait_s: float) -> None:
        await self.proposer.wait_for_leader(wait_s)

    @property
    def applied_index(self) -> int:
        """What this replica has applied (any thread)."""
        store = self.runner.store
        machine_index = store.machine.applied_index if store is not None else 0
        # The machine's index moves before pysyncobj's counter: a read that saw entry k must
        # report at least k, or a session read elsewhere could go back in time.
        return max(self.proposer.applied_index, machine_index)

    @property
    def machine(self) -> StateMachine:
        """The replica's state, for reads that need no lock: on the loop (apply runs there
        too), or single dict lookups from other threads (the embedded ``Node``)."""
        store = self.runner.store
        if store is None:
            raise Unavailable("node is not running")
        return store.machine

    @contextlib.contextmanager
    def reading(self) -> Iterator[StateMachine]:
        """The machine under the apply lock (any thread): for reads that iterate."""
        store = self.runner.store
        if store is None:
            raise Unavailable("node is not running")
        with store.state_lock:
            yield store.machine

    def plain_state(self) -> dict[str, Any]:
        """The machine's plain state, copied a chunk at a time (any thread; apply waits a
        chunk at most, and a copying thread lets a waiting apply go first)."""
        store = self.runner.store
        assert store is not None
        return copy_in_chunks(store.copy_lock, lambda: store.machine)

    # ---- who leads ------------------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.runner.is_leader()

    def leader_address(self) -> str | None:
        return self.runner.leader_address()

    def leader_id(self) -> str | None:
        """The id of the node this one believes leads, or None."""
        address = self.runner.leader_address()
        if address is None:
            return None
        node_id = self.node_id(address)
        return node_id if node_id != address else None

    # ---- leadership transfer (transfer.py) -------------------------------------------------------
    async def transfer_leadership(self, to: str | None, timeout: float) -> dict[str, Any]:
        """Hand leadership to voter ``to`` (an id; None: the most caught-up one), the Raft way:
        writes wait (at most an election timeout) while its log catches up, then it campaigns
        at once.  ``{"leader": id, "term": n}`` once it leads (at once if ``to`` is this
        leader).  NotLeader on a follower; InvalidRequest for an unknown id or a target that is
        not connected; Unavailable if it did not win in time (this node takes writes again)."""
        handover = self.runner.transfer
        if handover is None:
            raise Unavailable("node is not running")
        return await handover.hand_to(to, timeout)

    def hand_over(self) -> str | None:
        """Any thread but the loop's: if this node leads, hand leadership to the most
        caught-up voter before stopping (at most about two election timeouts).  Returns the
        new leader's id, or None (not leading, alone, or the transfer failed: logged)."""
        if not self.started or not self.is_leader() or not self.config.peers:
            return None
        bound = 2 * self.config.raft.election_timeout_max_s
        future = asyncio.run_coroutine_threadsafe(self.transfer_leadership(None, bound),
                                                  self._loop)
        try:
            return future.result(bound + 1.0)["leader"]
        except Exception as exc:  # noqa: BLE001 - stopping anyway
            future.cancel()
            log.warning("stopping without handing leadership over: %s", exc)
            return None

    # ---- read replicas (replica.py) ---------------------------------------------------------------
    @property
    def is_replica(self) -> bool:
        """This node is a read replica: it never votes, and the leader never waits for it."""
        return self.config.is_replica

    def replicas(self) -> list[dict[str, Any]]:
        """On the loop: the read replicas connected to this voter ({id, match_index, lag};
        the last two only on the leader)."""
        store = self.runner.store
        if store is None or self.is_replica:
            return []
        return connected_replicas(store, store._SyncObj__transport)

    def replica_lag(self) -> int | None:
        """On a replica: entries the leader has committed that it has not applied yet."""
        store = self.runner.store
        return replica_lag(store) if store is not None and self.is_replica else None

    def node_id(self, raft_address: str) -> str:
        known = self._node_by_raft_address.get(raft_address)
        if known is None:      # a member added since start (membership.py)
            known = next((m["id"] for m in self.membership.table()
                          if m["raft_address"] == raft_address), raft_address)
        return known

    async def status(self) -> RaftStatus:
        """Raft's view of this node (role, term, indexes, leader, connected peers)."""
        return self.runner.status()

    # ---- instrumentation ----------------------------------------------------------------------
    @property
    def durable_journal(self) -> DurableJournal | None:
        store = self.runner.store
        return store.durable_journal if store is not None else None

    def storage_stats(self) -> StorageStats:
        """The journal's bytes and the last snapshot's time (on the loop; one stat call)."""
        store = self.runner.store
        journal = store.journal if store is not None else None
        try:
            snapshot_at: float | None = os.stat(self.config.data_dir / SNAPSHOT_NAME).st_mtime
        except OSError:
            snapshot_at = None                 # none written yet
        return StorageStats(journal.size_bytes if journal is not None else 0, snapshot_at)

    def _on_applied(self, index: int) -> None:
        self.proposer.on_applied(index)
