"""Writes with retries and group commit, read barriers, applied-index waits.

Runs on the node's loop, the thread that also ticks Raft (runner.py): pysyncobj's callbacks
settle the waiting futures directly, with no thread hand-off.  Writes carry a (client id,
request id) pair; writes that arrive without one get this
node's own pair, so the node may retry any write after an ambiguous failure
(``LEADER_CHANGED``, a lost callback) without applying it twice.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from functools import partial
from typing import Any, Callable

from consensus_store.errors import (InvalidRequest, PayloadTooLarge, Timeout, Unavailable,
                                    error_from_json)
from consensus_store.node.engine.failures import FAIL_NAMES, SUCCESS
from consensus_store.node.engine.runner import RaftRunner
from consensus_store.state import encode_batch, encode_command
from consensus_store.state.commands import BATCHED_OPS

ATTEMPT_TIMEOUT_S = 2.0     # no callback by then: assume it was lost, propose again (deduplicated)
RETRY_BACKOFF_S = 0.05
LEADER_POLL_S = 0.02
READ_INDEX_RETRY_S = 0.02
_Deliver = Callable[[Any], None]   # a batched write's (index, outcome), or None: go alone

MAX_BATCHES_IN_FLIGHT = 2   # group commit: proposed and not yet answered


class Proposer:
    def __init__(self, runner: RaftRunner, loop: asyncio.AbstractEventLoop) -> None:
        self._runner = runner
        self._loop = loop
        # An election takes at most about two election timeouts.
        self._no_leader_wait_s = 2 * runner.config.raft.election_timeout_max_s
        self._max_entry_bytes = runner.config.limits.max_entry_bytes
        self._node_client_id = f"node-{uuid.uuid4().hex}"
        self._node_request_ids = itertools.count(1)
        self._pending_node_requests: set[int] = set()
        self._applied = 0
        # group commit: (command, deliver, deadline) of writes not yet in a proposed batch
        self._waiting: list[tuple[dict[str, Any], _Deliver, float]] = []
        self._waiting_timer: asyncio.TimerHandle | None = None
        self._waiting_deadline = 0.0
        self._proposal_scheduled = False
        self._batches_in_flight = 0
        self._applied_waiters: list[tuple[int, int, asyncio.Future]] = []
        self._waiter_order = itertools.count()
        self._next_barrier: asyncio.Future | None = None
        self._next_barrier_deadline = 0.0    # the latest deadline of its readers
        self._barrier_running = False

    # ---- from the tick -------------------------------------------------------------------------
    def on_applied(self, index: int) -> None:
        """Called at the end of a tick whenever the applied index moved."""
        if self._applied_waiters:
            self._advance_applied(index)

    def _advance_applied(self, index: int) -> None:
        self._applied = max(self._applied, index)
        waiters = self._applied_waiters
        while waiters and waiters[0][0] <= self._applied:
            _settle(heapq.heappop(waiters)[2], None)

    # ---- writes -------------------------------------------------------------------------------
    async def write(self, command: dict[str, Any], timeout: float,
                    deduplicate: bool = True, alone: bool = False) -> tuple[int, dict[str, Any]]:
        """Replicate ``command``; returns (index, result) or raises a typed error.
        ``alone``: in an entry of its own (after a batch did not confirm it)."""
        deadline = self._loop.time() + timeout
        own_request = None
        if deduplicate and "cid" not in command:
            own_request = next(self._node_request_ids)
            self._pending_node_requests.add(own_request)
            command = {**command, "cid": self._node_client_id, "rid": own_request,
                       "done": min(self._pending_node_requests)}
        try:
            if not alone and _batchable(command):
                answer = await self._write_in_batch(command, timeout)
                if answer is not None:
                    return answer
            # Alone: not batchable, or the batch's outcome is unknown (retried alone, the
            # state machine's at-most-once table answers if the batch did apply it).
            return await self._propose_until_done(encode_command(command),
                                                  max(0.0, deadline - self._loop.time()))
        finally:
            if own_request is not None:
                self._pending_node_requests.discard(own_request)

    # ---- group commit -----------------------------------------------------------------------
    async def _write_in_batch(self, command: dict[str, Any], timeout: float
                              ) -> tuple[int, dict[str, Any]] | None:
        """Single-key writes share log entries: pysyncobj's per-entry work (journal record,
        pickling, apply dispatch, callbacks) on every node is paid once per batch.  At most
        ``MAX_BATCHES_IN_FLIGHT`` batches are proposed and unanswered; writes arriving meanwhile
        wait for the next one, so batches grow with the load instead of the pipeline filling
        with tiny entries.  None: the batch did not confirm it; write it alone."""
        await self.wait_for_leader(min(timeout, self._no_leader_wait_s))
        future: asyncio.Future = self._loop.create_future()
        self._join_batch(command, timeout, partial(_settle, future))
        # Settled by the batch's answer or by a timer (one per batch: a wait_for per write
        # cost a tenth of the loop's time at 64 clients).
        outcome = await future
        if outcome is None:
            return None
        return self.applied_answer(*outcome)

    def try_write_in_batch(self, command: dict[str, Any], timeout: float,
                           deliver: _Deliver) -> bool:
        """``_write_in_batch`` without a task, for the native protocol: False if the write
        cannot join a batch now (not a single-key write, no client identity, no leader known);
        else ``deliver`` gets (index, outcome) for ``applied_answer``, or None when the batch
        did not confirm the write and the caller must ``write`` it alone."""
        if not (_batchable(command) and "cid" in command and self._leader_known()):
            return False
        self._join_batch(command, timeout, deliver)
        return True

    def _join_batch(self, command: dict[str, Any], timeout: float, deliver: _Deliver) -> None:
        deadline = self._loop.time() + min(timeout, ATTEMPT_TIMEOUT_S)
        self._waiting.append((command, deliver, deadline))
        if self._waiting_timer is None or deadline < self._waiting_deadline:
            self._set_waiting_timer()
        self._schedule_proposal()

    def applied_answer(self, index: int, outcome: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A write's answer once the state machine applied it (alone or in a batch)."""
        # Applied here already (the callback runs after apply), even if pysyncobj's counter
        # moves only later: answers must report it, for session reads.
        self._advance_applied(index)
        if "error" in outcome:
            raise error_from_json(400, outcome)
        # A copy: the state machine keeps this dict for at-most-once answers, and callers add
        # to theirs (the answer's header).
        return index, dict(outcome)

    def _set_waiting_timer(self) -> None:
        if self._waiting_timer is not None:
            self._waiting_timer.cancel()
        self._waiting_timer = None
        if self._waiting:
            self._waiting_deadline = min(item[2] for item in self._waiting)
            self._waiting_timer = self._loop.call_at(self._waiting_deadline, self._expire_waiting)

    def _expire_waiting(self) -> None:
        """Writes that never got into a batch in time (batches in flight got no answer)."""
        self._waiting_timer = None
        waiting, self._waiting = self._waiting, []
        for _, deliver, _ in waiting:
            deliver(None)

    def _schedule_proposal(self) -> None:
        if (not self._proposal_scheduled and self._waiting
                and self._batches_in_flight < MAX_BATCHES_IN_FLIGHT):
            self._proposal_scheduled = True
            self._loop.call_soon(self._propose_batch)

    def _propose_batch(self) -> None:
        self._proposal_scheduled = False
        if not self._waiting or self._batches_in_flight >= MAX_BATCHES_IN_FLIGHT:
            return
        # Never two writes to one key in an entry: each write keeps its own mod_revision.
        keys: set[str] = set()
        batch, later = [], []
        for item in self._waiting:
            if item[0]["key"] in keys:
                later.append(item)
            else:
                keys.add(item[0]["key"])
                batch.append(item)
        try:
            data = encode_batch([command for command, _, _ in batch])
            while len(data) > self._max_entry_bytes and len(batch) > 1:
                half = len(batch) // 2     # too big for one entry: the rest waits for the next
                batch, later = batch[:half], batch[half:] + later
                data = encode_batch([command for command, _, _ in batch])
        except InvalidRequest:
            data = None
        self._waiting = later
        self._set_waiting_timer()
        delivers = [deliver for _, deliver, _ in batch]
        if data is None or len(data) > self._max_entry_bytes:
            for deliver in delivers:
                deliver(None)           # alone, the bad or oversized one gets its own error
            self._schedule_proposal()
            return
        self._batches_in_flight += 1
        # [answered]: a batch's raft answer and its timer both call _answer_batch
        answered = [False]
        timer = self._loop.call_at(min(deadline for _, _, deadline in batch),
                                   self._answer_batch, delivers, answered, None, None)
        self._runner.propose(data, lambda res, err: self._answer_batch(
            delivers, answered, res, err, timer))
        self._schedule_proposal()        # a slot may be left (writes to a repeated key)

    def _answer_batch(self, delivers: list[_Deliver], answered: list[bool], result: Any,
                      error: int | None, timer: asyncio.TimerHandle | None = None) -> None:
        """The batch's outcome, or (error None) its timer: writes not confirmed go alone."""
        if timer is not None:
            timer.cancel()
        if answered[0]:
            return                      # the timer came first: they went alone already
        answered[0] = True
        self._batches_in_flight -= 1
        self._schedule_proposal()
        if error != SUCCESS:
            for deliver in delivers:
                deliver(None)
            return
        index, outcome = result
        for deliver, answer in zip(delivers, outcome["results"]):
            deliver((index, answer))

    async def _propose_until_done(self, data: bytes, timeout: float) -> tuple[int, dict[str, Any]]:
        if len(data) > self._max_entry_bytes:
            raise PayloadTooLarge(f"the write would make a {len(data)}-byte log entry; this "
                                  f"cluster takes at most {self._max_entry_bytes}")
        deadline = self._loop.time() + timeout
        last_error = "no attempt finished"
        while (remaining := deadline - self._loop.time()) > 0:
            await self.wait_for_leader(min(remaining, self._no_leader_wait_s))
            future = self._loop.create_future()
            self._runner.propose(data, lambda res, err, f=future: _settle(f, (res, err)))
            try:
                result, error = await asyncio.wait_for(future, min(ATTEMPT_TIMEOUT_S, remaining))
            except asyncio.TimeoutError:
                last_error = "no answer from the raft layer"
                continue   # a lost callback: propose again (deduplicated)
            if error == SUCCESS:
                return self.applied_answer(*result)
            last_error = FAIL_NAMES.get(error, str(error))
            await asyncio.sleep(min(RETRY_BACKOFF_S, max(0.0, deadline - self._loop.time())))
        raise Timeout(f"write not confirmed within {timeout:g}s ({last_error}); "
                      "it may still be applied", outcome="unknown")

    async def wait_for_leader(self, wait_s: float) -> None:
        """Fail fast on a node that knows no leader (cut off from the majority): pysyncobj
        would keep the command queued with no answer, and the client could not move on to a
        node that can serve it.  A command already queued may still apply later; retries
        are deduplicated."""
        deadline = self._loop.time() + wait_s
        while not self._leader_known():
            if self._loop.time() >= deadline:
                raise Unavailable(f"this node has known no leader for {wait_s:g}s; "
                                  "try another node", retry="elsewhere")
            await asyncio.sleep(LEADER_POLL_S)

    def _leader_known(self) -> bool:
        return self._runner.leader_address() is not None

    # ---- reads ----------------------------------------------------------------------------------
    @property
    def applied_index(self) -> int:
        return max(self._applied, self._runner.raft_applied_index())

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Wait until this replica applied ``index`` (session reads)."""
        if self.applied_index >= index:
            return
        future = self._loop.create_future()
        heapq.heappush(self._applied_waiters, (index, next(self._waiter_order), future))
        self._advance_applied(self.applied_index)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise Unavailable(f"replica has applied {self.applied_index}, not {index}, after "
                              f"{timeout:g}s; retry on another node") from None

    async def barrier(self, timeout: float) -> int:
        """Wait until every write acknowledged before this call is applied here; returns the
        index confirmed by the leader (ReadIndex, see node/engine/read_index.py).

        Reads arriving while a confirmation is in flight share the next one, never the current
        one: an index noted before a read began could miss writes acknowledged just before it.
        """
        deadline = self._loop.time() + timeout
        if self._next_barrier is None:
            self._next_barrier = self._loop.create_future()
            self._next_barrier_deadline = deadline
        group = self._next_barrier
        self._next_barrier_deadline = max(self._next_barrier_deadline, deadline)
        if not self._barrier_running:
            self._loop.create_task(self._run_barriers())
        try:
            index = await asyncio.wait_for(asyncio.shield(group), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"read index not confirmed within {timeout:g}s (no quorum reachable "
                          "from this node?); retry on another node") from None
        await self.wait_applied(index, max(0.0, deadline - self._loop.time()))
        return index

    async def _run_barriers(self) -> None:
        self._barrier_running = True
        try:
            while self._next_barrier is not None:
                group, self._next_barrier = self._next_barrier, None
                index = await self._confirmed_read_index(self._next_barrier_deadline)
                if index is not None:
                    _settle(group, result=index)
                # else: the group's readers time out; later readers start a new run
        finally:
            self._barrier_running = False

    async def _confirmed_read_index(self, deadline: float) -> int | None:
        """Ask Raft until it confirms an index, or None once ``deadline`` passed."""
        while (remaining := deadline - self._loop.time()) > 0:
            future: asyncio.Future[int | None] = self._loop.create_future()
            self._runner.request_read_index(lambda index, f=future: _settle(f, index))
            try:
                index = await asyncio.wait_for(future, remaining)
            except asyncio.TimeoutError:
                return None
            if index is not None:
                return index
            # No leader, or it lost leadership during the round: ask again shortly.
            await asyncio.sleep(min(READ_INDEX_RETRY_S, max(0.0, deadline - self._loop.time())))
        return None


def _batchable(command: dict[str, Any]) -> bool:
    """A single-key write, which a group-commit batch may carry."""
    return command.get("op") in BATCHED_OPS and "key" in command


def _settle(future: asyncio.Future, result: Any = None, exception: BaseException | None = None) -> None:
    if future.done():
        return
    if exception is None:
        future.set_result(result)
    else:
        future.set_exception(exception)
        future.exception()  # mark retrieved: readers that gave up must not log a warning
