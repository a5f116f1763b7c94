"""Drives pysyncobj on the node's asyncio loop: one thread serves clients and ticks Raft.

pysyncobj runs with ``autoTick=False`` and a poller that is the loop (loop_poller.py), so its
socket events, apply and command callbacks all run on the loop thread.  A tick
(``SyncObj.doTick(0)``, whose poll does nothing) runs:
  - at once (``call_soon``, coalesced to one per loop iteration) after any Raft socket event,
    a proposal, a read-index request or a finished background fsync;
  - on a timer otherwise: every ``min(0.1 s, heartbeat)``, or ``COMMIT_NOTICE_DELAY_S`` while
    the leader has a commit notice due (timers need no finer grain).

Timing ("hybrid flush", see docs/pysyncobj.md): batching stays on, and at the end of each tick
we send AppendEntries at once if the log grew, so a commit costs one round trip instead of
waiting for the 100 ms heartbeat.  A commit index that moved alone is announced
``COMMIT_NOTICE_DELAY_S`` later unless new entries carry it first: under load they always do,
which halves the messages.

Blocking work leaves the loop: the leader's fsync runs on a helper thread (durability.py) and
it counts itself only up to its synced index (raft.py, ``durable_commit``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

from consensus_store.config import NodeConfig
from consensus_store.errors import ConfigError
from consensus_store.node.engine import heap, read_index, transfer
from consensus_store.node.engine.loop_poller import EventCallback, LoopPoller
from consensus_store.node.engine.raft import (COMMIT_NOTICE_DELAY_S, ApplyCallback,
                                              ReplicatedStore, syncobj_conf)
from consensus_store.node.engine.storage import (StorageCorrupt, StorageFailure,
                                                 prepare_data_dir, report_failure)

log = logging.getLogger("consensus_store.raft")

START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RaftStatus:
    role: str                 # leader / follower / candidate
    term: int
    commit_index: int
    applied_index: int
    log_length: int
    leader: str | None        # raft address
    connected_peers: tuple[str, ...]
    ready: bool


class RaftRunner:
    """Owns the ReplicatedStore and ticks it on ``loop`` (which runs on its own thread)."""

    def __init__(self, config: NodeConfig, on_applied: Callable[[int], None],
                 on_events: Callable[[int, list[dict[str, Any]]], None] | None = None,
                 on_reset: Callable[[int], None] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self.loop = loop
        self._on_applied = on_applied
        self._on_events = on_events
        self._on_reset = on_reset
        self._machine_seen: object = None
        self._loop_thread_id: int | None = None
        self._running = False
        self._tick_scheduled = False
        self._timer: asyncio.Handle | None = None
        self._timer_due = 0.0
        self._tick_s = min(0.1, config.raft.heartbeat_interval_s)
        self._flushed_entries = 0           # last log index sent to the followers
        self._flushed_commit = 0            # commit index they were last told
        self._commit_notice_due: float | None = None
        self._reported_applied = 0
        self._term_seen, self._leader_seen = 0, None
        self._heap = heap.LargeHeap()
        self._compaction_bytes = config.raft.log_compaction_max_bytes
        self._snapshot_seen: int | None = -1   # snapshot whose size was read (-1: none yet)
        self.store: ReplicatedStore | None = None
        self._read_index: read_index.ReadIndex | None = None
        self.transfer: transfer.LeadershipTransfer | None = None

    # ---- lifecycle (any thread but the loop's) -----------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if not self.config.is_replica:       # a replica dials the voters and never listens
            _check_bindable(self.config)
        try:
            prepare_data_dir(self.config.data_dir)     # 0700, its files 0600 (storage.py)
        except OSError as exc:
            raise ConfigError(f"{self.config.path}: data_dir: cannot create "
                              f"{self.config.data_dir}: {exc.strerror or exc}") from None
        assert self.loop is not None, "RaftRunner needs the node's loop"
        done: Future[None] = Future()

        def open_on_loop() -> None:
            try:
                self._open()
                done.set_result(None)
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(open_on_loop)
        try:
            done.result(timeout)
        except TimeoutError:
            raise ConfigError(f"raft node {self.config.raft_address} did not start in "
                              f"{timeout}s") from None
        except StorageCorrupt:
            raise                                      # names the file and the offset
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"raft node {self.config.raft_address}: {exc}") from None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop ticking, close the Raft sockets and the journal.  Idempotent."""
        loop = self.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            self._close()
            return
        if self._on_loop_thread():
            self._close()
            return
        done: Future[None] = Future()

        def close_on_loop() -> None:
            try:
                self._close()
            finally:
                done.set_result(None)

        try:
            loop.call_soon_threadsafe(close_on_loop)
            done.result(timeout)
        except (RuntimeError, TimeoutError):
            log.warning("raft node %s: the loop did not close the store", self.config.id)

    # ---- entry points ---------------------------------------------------------------------
    def propose(self, data: bytes, callback: ApplyCallback) -> None:
        """Any thread; ``callback(result, FAIL_REASON)`` runs on the loop, inside the tick."""
        assert self.store is not None

        def guarded(result: Any, error: int) -> None:
            # An exception here would leave pysyncobj's apply loop before it counted the
            # entry as applied: the next tick would apply it again.
            try:
                callback(result, error)
            except Exception:  # noqa: BLE001
                log.exception("a write's callback failed")

        self.store.apply_command(data, callback=guarded)
        self.request_tick()

    # ---- what the node asks of Raft (any thread; plain reads of the store's fields) --------
    def is_leader(self) -> bool:
        store = self.store
        return store is not None and store._isLeader()

    def leader_address(self) -> str | None:
        """The raft address of the node this one believes leads, or None."""
        store = self.store
        leader = store._getLeader() if store is not None else None
        return leader.address if leader is not None else None

    def raft_applied_index(self) -> int:
        store = self.store
        return store.raftLastApplied if store is not None else 0

    def request_read_index(self, callback: read_index.Callback) -> None:
        """Any thread: ``callback`` gets (on the loop) an index confirmed by the leader to
        cover every write acknowledged before this call, or None to ask again."""
        reader = self._read_index
        assert reader is not None, "raft node not started"
        if self._on_loop_thread():
            reader.request(callback)
            self.request_tick()
        else:
            self.call_on_loop(lambda: reader.request(callback))

    def call_on_loop(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the loop (the thread that drives Raft), then tick."""
        def run() -> None:
            try:
                job()
            except Exception:  # noqa: BLE001
                log.exception("raft job failed")
            self.request_tick()

        assert self.loop is not None
        if self._on_loop_thread():
            self.loop.call_soon(run)
        else:
            self.loop.call_soon_threadsafe(run)

    def request_tick(self) -> None:
        """A tick soon (once per loop iteration however often asked)."""
        if self._tick_scheduled or not self._running:
            return
        self._tick_scheduled = True
        assert self.loop is not None
        if self._on_loop_thread():
            self.loop.call_soon(self._tick)
        else:
            self.loop.call_soon_threadsafe(self._tick)

    wake = request_tick     # the old name

    # ---- loop thread ------------------------------------------------------------------------
    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread_id

    def _open(self) -> None:
        loop = self.loop
        assert loop is not None
        self._loop_thread_id = threading.get_ident()
        config = self.config
        peers = [str(p.raft_address) for p in config.peers]
        poller = LoopPoller(loop, self._dispatch)
        try:
            # pysyncobj's read-only node: SyncObj(None, voters) (docs/replicas.md)
            self_address = None if config.is_replica else str(config.raft_address)
            store = ReplicatedStore(self_address, peers, syncobj_conf(config),
                                    poller, fsync=config.durability == "fsync")
        except BaseException:
            poller.close()
            raise
        self.store = store
        store.on_events = self._on_events
        self._machine_seen = store.machine
        store.addOnTickCallback(self._before_poll)
        transport = store._SyncObj__transport
        self._read_index = read_index.ReadIndex(store, transport, self._send_append_entries)
        transport.on_ack = self._read_index.advance
        transport.on_read_index_message = self._read_index.on_message
        self.transfer = transfer.LeadershipTransfer(
            store, transport, election_timeout_s=config.raft.election_timeout_max_s,
            send_append_entries=self._send_append_entries, request_tick=self.request_tick,
            node_ids={str(n.raft_address): n.id for n in (config, *config.peers)})
        transport.on_timeout_now = self.transfer.on_message
        transport.after_message = self.transfer.keep_campaign_due
        if store.durable_journal is not None:
            store.durable_journal.post_from_thread = loop.call_soon_threadsafe
            store.durable_journal.on_synced = self._on_synced
        self._running = True
        heap.watch_collections()
        self.request_tick()

    def _on_synced(self) -> None:
        """A background fsync ended: tick only if it was what held the commit back (a tick
        per fsync cost ~15 us of CPU per write at 64 clients)."""
        store = self.store
        if store is not None and store.commit_held:
            self.request_tick()

    def _dispatch(self, callback: EventCallback, descr: int, event: int) -> None:
        """A Raft socket event (loop_poller.py): pysyncobj's handler, then a tick."""
        if not self._running:
            return
        try:
            callback(descr, event)
        except StorageFailure as exc:       # disk full, I/O or fsync error: stop
            self._fail(exc)
            return
        except Exception:  # noqa: BLE001 - one bad message must not kill the node
            log.exception("raft event failed")
        self.request_tick()

    def _tick(self) -> None:
        self._tick_scheduled = False
        store = self.store
        if not self._running or store is None:
            return
        try:
            store.doTick(0.0)
        except StorageFailure as exc:
            self._fail(exc)
            return
        except Exception:  # noqa: BLE001 - one bad tick must not kill the node
            log.exception("raft tick failed")
        journal = store.journal
        if journal is not None and journal.failure is not None:   # where pysyncobj swallows
            self._fail(journal.failure)
            return
        self._arm_timer()

    def _arm_timer(self) -> None:
        """The next timed tick; an earlier one already armed stays (an extra tick is free)."""
        assert self.loop is not None
        due = self.loop.time() + self._poll_timeout()
        timer = self._timer
        if timer is not None:
            if self._timer_due <= due:
                return
            timer.cancel()
        # (uvloop's handles have no ``when()``: the due time is kept here)
        self._timer_due = due
        self._timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._tick()

    def _fail(self, failure: StorageFailure) -> None:
        self._close()
        report_failure(failure)

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        was_running, self._running = self._running, False
        store = self.store
        if store is None or not was_running:
            return
        try:
            store.destroy()
        finally:
            store.loop_poller.close()
            if store.durable_journal is not None:
                store.durable_journal.stop_background()

    def _before_poll(self) -> None:
        """Runs at the end of every tick: read index, hybrid flush, fsync, applied index."""
        store = self.store
        assert store is not None and self._read_index is not None
        self._read_index.tick()
        if store._isLeader():
            self._flush(store)
        if store.durable_journal is not None:   # after the send: see durability.py
            store.durable_journal.sync_in_background()
        self._compact_if_large(store)
        term, leader = store._getTerm(), store._getLeader()
        if term != self._term_seen or leader is not self._leader_seen:
            self._term_seen, self._leader_seen = term, leader
            log.info("raft: term %d, leader %s", term,
                     leader.address if leader is not None else "unknown")
        self._heap.after_tick(store.machine, replaced=store.machine is not self._machine_seen)
        applied = store.raftLastApplied
        if store.machine is not self._machine_seen:   # a snapshot replaced the state
            self._machine_seen = store.machine
            if self._on_reset is not None:
                self._on_reset(applied)
        if applied != self._reported_applied:
            self._reported_applied = applied
            self._on_applied(applied)

    def _flush(self, store: ReplicatedStore) -> None:
        """The hybrid flush: new entries go out at once, a commit index alone a bit later."""
        last, commit = store._SyncObj__raftLog[-1][1], store.raftCommitIndex
        if last == self._flushed_entries:
            if commit == self._flushed_commit:
                return
            now = time.monotonic()
            if self._commit_notice_due is None:
                self._commit_notice_due = now + COMMIT_NOTICE_DELAY_S
            if now < self._commit_notice_due:
                return
        self._send_append_entries()

    def _compact_if_large(self, store: ReplicatedStore) -> None:
        """Bound the journal, and the log pysyncobj keeps in memory, by bytes: pysyncobj
        compacts by entry count or age only, and a group-commit entry may carry many writes.
        The bound is the last snapshot's size when that is larger, so that a large state is not
        written out again for every few megabytes of writes."""
        journal_bytes = store._SyncObj__raftLog.size_bytes
        if journal_bytes < self._compaction_bytes:
            return
        if store.snapshot_running():
            return        # the journal is cut once that snapshot is written
        snapshot = store._SyncObj__lastSerializedEntry
        if snapshot != self._snapshot_seen:          # a new snapshot: read its size once
            self._snapshot_seen = snapshot
            try:
                snapshot_bytes = os.stat(store._SyncObj__conf.fullDumpFile).st_size
            except OSError:
                snapshot_bytes = 0
            self._compaction_bytes = max(self.config.raft.log_compaction_max_bytes,
                                         snapshot_bytes)
            if journal_bytes < self._compaction_bytes:
                return
        store.forceLogCompaction()    # a flag: pysyncobj compacts once it has applied more

    def _send_append_entries(self) -> None:
        """Send AppendEntries to every follower now (entries they lack, or a heartbeat)."""
        store = self.store
        assert store is not None
        self._flushed_entries = store._SyncObj__raftLog[-1][1]
        self._flushed_commit = store.raftCommitIndex
        self._commit_notice_due = None
        store._SyncObj__sendAppendEntries()

    def _poll_timeout(self) -> float:
        """Short while a commit notice may be due (entries in flight or a notice pending)."""
        store = self.store
        if store is None or not store._isLeader():
            return self._tick_s
        if (self._commit_notice_due is not None
                or store.raftCommitIndex < store._SyncObj__raftLog[-1][1]):
            return COMMIT_NOTICE_DELAY_S
        return self._tick_s

    def status(self) -> RaftStatus:
        """Call on the loop thread only (getStatus iterates sets the loop changes)."""
        store = self.store
        assert store is not None
        raw = store.getStatus()
        # the live voters (membership.py): the configured peers first, then added ones
        live = {node.address for node in store._SyncObj__otherNodes}
        voters = [str(p.raft_address) for p in self.config.peers if str(p.raft_address) in live]
        voters += sorted(live - set(voters))
        connected = tuple(a for a in voters if raw.get(f"partner_node_status_server_{a}") == 2)
        leader = raw.get("leader")
        return RaftStatus(
            role={0: "follower", 1: "candidate", 2: "leader"}.get(raw["state"], "follower"),
            term=raw["raft_term"], commit_index=raw["commit_idx"],
            applied_index=raw["last_applied"], log_length=raw["log_len"],
            leader=leader.address if leader is not None else None,
            connected_peers=connected, ready=store.isReady(),
        )


def _check_bindable(config: NodeConfig) -> None:
    """Fail fast with a clear message instead of pysyncobj's silent bind retries."""
    address = config.raft_address
    try:     # the family pysyncobj will bind: IPv4 first, as its resolver prefers
        found = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"{config.path}: raft_address: cannot resolve {address.host}: "
                          f"{exc.strerror}") from None
    family, *_, where = min(found, key=lambda info: info[0] != socket.AF_INET)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError as exc:
            raise ConfigError(f"{config.path}: raft_address: cannot listen on "
                              f"{address.authority}: {exc.strerror}") from None
