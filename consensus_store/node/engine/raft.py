"""The Raft adapter: the only module that touches pysyncobj.

One thread (``RaftRunner``) constructs the ``SyncObj`` and drives it with ``doTick``.  Everything
pysyncobj does (socket I/O, apply, callbacks) therefore runs on that thread; other threads talk
to it only through ``propose`` (pysyncobj's queue is thread-safe) and ``call_on_raft_thread``.

Timing ("hybrid flush", see docs/pysyncobj.md): batching stays on, and right before
each poll we send AppendEntries at once if the log grew, so a commit costs one round trip
instead of waiting for the 100 ms heartbeat.  A commit index that moved alone is announced
``COMMIT_NOTICE_DELAY_S`` later unless new entries carry it first: under load they always do,
which halves the messages, and the commit notice no longer competes for the CPU with the
answers to the writes just committed.  A pipe registered with pysyncobj's poller wakes the
tick when a command or job is queued.

Private pysyncobj names used here and in read_index.py (pinned to 0.3.17 in pyproject.toml):
``_SyncObj__sendAppendEntries``, ``_SyncObj__raftLog``, ``_SyncObj__raftNextIndex``,
``_SyncObj__raftMatchIndex``, ``_SyncObj__transport``, ``_SyncObj__otherNodes``,
``_SyncObj__getEntries``, ``_SyncObj__lastSerializedEntry``, ``_SyncObj__conf``, ``_poller``,
and, at start-up (``ReplicatedStore._open_storage``), ``_SyncObj__raftCurrentTerm``,
``_SyncObj__votedForNodeId``, ``_SyncObj__raftCommitIndex``, ``_SyncObj__serializer``,
``_SyncObj__loadDumpFile``, ``_SyncObj__needLoadDumpFile``.  The storage modules (storage.py,
journal.py) and the raft port (peer_connection.py) list their own.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.poller import POLL_EVENT_TYPE

from consensus_store.config import NodeConfig
from consensus_store.errors import ConfigError
from consensus_store.node.engine import read_index
from consensus_store.node.engine.durability import FLUSH_TRIGGERS, DurableJournal
from consensus_store.node.engine.journal import MAGIC as JOURNAL_MAGIC
from consensus_store.node.engine.journal import RecordJournal
from consensus_store.node.engine.storage import (JOURNAL_NAME, META_NAME, SNAPSHOT_NAME,
                                          StorageCorrupt, StorageFailure, load_snapshot,
                                          make_checked, prepare_data_dir, report_failure)
from consensus_store.node.engine.peer_connection import SealedTransport
from consensus_store.state import StateMachine

log = logging.getLogger("consensus_store.raft")

ApplyCallback = Callable[[Any, int], None]   # (result or None, FAIL_REASON code)


def stored_entry_bound(max_entry_bytes: int) -> int:
    """The most bytes pysyncobj stores for one of our commands: it pickles the method call
    with protocol 2, which writes each byte >= 0x80 of ``bytes`` as two."""
    return 2 * max_entry_bytes + 4096


# Followers learn of a commit at most this much later than the leader (when no entries follow).
COMMIT_NOTICE_DELAY_S = 0.002

# FAIL_REASONs after which the command may still have been applied (or may apply later).
MAYBE_APPLIED = frozenset({FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME})


def syncobj_conf(config: NodeConfig) -> SyncObjConf:
    """The single translation from our config to pysyncobj's."""
    timing = config.raft
    data = config.data_dir
    return SyncObjConf(
        autoTick=False,
        bindAddress=str(config.raft_address),       # pysyncobj would bind 0.0.0.0
        password=config.peer_secret,
        journalFile=None,           # ours, checksummed (journal.py): ReplicatedStore opens it
        fullDumpFile=str(data / SNAPSHOT_NAME),     # a journal without a dump loses state
        useFork=False,                              # no fork() from a threaded process
        appendEntriesUseBatch=True,
        appendEntriesPeriod=timing.heartbeat_interval_s,
        raftMinTimeout=timing.election_timeout_min_s,
        raftMaxTimeout=timing.election_timeout_max_s,
        leaderFallbackTimeout=timing.leader_fallback_timeout_s,
        connectionTimeout=timing.connection_timeout_s,
        connectionRetryTime=timing.connection_retry_s,
        logCompactionMinEntries=timing.log_compaction_min_entries,
        logCompactionMinTime=timing.log_compaction_min_time_s,
        commandsQueueSize=200_000,
        # Above any entry the proposer lets through, so every entry travels whole, as in etcd.
        # pysyncobj sends larger ones in pieces: its last-piece test is off by the pickle
        # overhead (a follower fails to unpickle, "raft tick failed") and a resend of pieces
        # bypasses our follower's keep-matching-entries fix.
        appendEntriesBatchSizeBytes=stored_entry_bound(config.limits.max_entry_bytes) + 1,
        # pysyncobj's 8 KiB socket buffers split a busy AppendEntries into several sends, each
        # waiting for a poll round.
        sendBufferSize=2 ** 18,
        recvBufferSize=2 ** 18,
        bindRetryTime=0.2,
        maxBindRetries=10,
    )


class _GuardedTransport(SealedTransport):
    """The raft port's transport (peer_connection.py) that also syncs a durable journal before
    a follower's acks, and corrects how pysyncobj's leader moves a follower's next index on
    replies (all on the raft thread).

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
        kind = message.get("type") if isinstance(message, dict) else None
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


class ReplicatedStore(SyncObj):
    """SyncObj with one replicated entry point; the state machine is the replicated state."""

    def __init__(self, self_address: str, peer_addresses: list[str], conf: SyncObjConf,
                 fsync: bool = False) -> None:
        # Attributes set before super().__init__ stay out of snapshots.
        self.state_lock = threading.Lock()
        self.on_events: Callable[[int, list[dict[str, Any]]], None] | None = None
        self.durable_journal: DurableJournal | None = None
        self.journal: RecordJournal | None = None
        super().__init__(self_address, peer_addresses, conf, transportClass=_GuardedTransport)
        self.machine = StateMachine()
        try:
            self._open_storage(os.path.dirname(conf.fullDumpFile), fsync)
        except BaseException:
            self.destroy()
            raise

    def _open_storage(self, data_dir: str, fsync: bool) -> None:
        """Our journal in place of the in-memory one pysyncobj made, and the snapshot loaded
        now, checked, rather than at the first tick, where pysyncobj logs a failure and goes
        on with an empty state.  Refuses (StorageCorrupt) a damaged journal, term/vote file or
        snapshot, and a journal that starts past what the node has applied.  Sets no new
        attribute: those would be replicated state."""
        journal_class = DurableJournal if fsync else RecordJournal
        journal = journal_class(os.path.join(data_dir, JOURNAL_NAME),
                                os.path.join(data_dir, META_NAME))
        if len(journal) == 0:
            journal.add(*self._SyncObj__raftLog[0])    # pysyncobj's first entry: no-op at 1
        self._SyncObj__raftLog = self.journal = journal
        if fsync:
            self.durable_journal = journal
        # What SyncObj.__init__ restored from the journal it made.
        self._SyncObj__raftCurrentTerm = max(journal.getCurrentTerm(), journal[-1][2])
        self._SyncObj__votedForNodeId = journal.getVotedForNodeId()
        self._SyncObj__raftCommitIndex = journal.getRaftCommitIndex()
        serializer = make_checked(self._SyncObj__serializer)
        path = self._SyncObj__conf.fullDumpFile
        has_snapshot = os.path.isfile(path)
        if has_snapshot:
            data = load_snapshot(path)
            journal.align_with_snapshot(previous=data[2], last=data[1])
            serializer.preloaded = data
            self._SyncObj__loadDumpFile(clearJournal=False)
            self._SyncObj__needLoadDumpFile = False
            if self.raftLastApplied != data[1][1]:
                raise StorageCorrupt(f"{path}: the snapshot did not load (see the error "
                                     f"above); refusing to start")
        applied, first = self.raftLastApplied, journal[0][1]
        if first > applied + 1:
            source = f"the snapshot {path}" if has_snapshot else f"no snapshot ({path} missing)"
            raise StorageCorrupt(f"{journal.path}: journal starts at index {first} (offset "
                                 f"{len(JOURNAL_MAGIC)}) but the node has applied only up to "
                                 f"index {applied}, from {source}: entries {applied + 1}.."
                                 f"{first - 1} are missing; refusing to start")

    @replicated
    def apply_command(self, data: bytes) -> tuple[int, dict[str, Any]]:
        index = self.raftLastApplied + 1
        with self.state_lock:
            result = self.machine.apply(data, index)
            events = self.machine.drain_events()
        if events and self.on_events is not None:
            self.on_events(index, events)
        return index, result


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
    """Owns the raft thread and the ReplicatedStore it drives."""

    def __init__(self, config: NodeConfig, on_applied: Callable[[int], None],
                 on_events: Callable[[int, list[dict[str, Any]]], None] | None = None,
                 on_reset: Callable[[int], None] | None = None) -> None:
        self.config = config
        self._on_applied = on_applied
        self._on_events = on_events
        self._on_reset = on_reset
        self._machine_seen: object = None
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        self._wake_pending = False
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._running = threading.Event()
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"raft-{config.id}", daemon=True)
        self._flushed_entries = 0           # last log index sent to the followers
        self._flushed_commit = 0            # commit index they were last told
        self._commit_notice_due: float | None = None
        self._reported_applied = 0
        self._compaction_bytes = config.raft.log_compaction_max_bytes
        self._snapshot_seen: int | None = -1   # snapshot whose size was read (-1: none yet)
        self.store: ReplicatedStore | None = None
        self._read_index: read_index.ReadIndex | None = None

    # ---- lifecycle (any thread) -------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        _check_bindable(self.config)
        try:
            prepare_data_dir(self.config.data_dir)     # 0700, its files 0600 (storage.py)
        except OSError as exc:
            raise ConfigError(f"{self.config.path}: data_dir: cannot create "
                              f"{self.config.data_dir}: {exc.strerror or exc}") from None
        self._running.set()
        self._thread.start()
        if not self._started.wait(timeout):
            raise ConfigError(f"raft node {self.config.raft_address} did not start in {timeout}s")
        if isinstance(self._start_error, StorageCorrupt):
            raise self._start_error                  # names the file and the offset
        if self._start_error is not None:
            raise ConfigError(f"raft node {self.config.raft_address}: {self._start_error}")

    def stop(self, timeout: float = 5.0) -> None:
        self._running.clear()
        self.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- cross-thread entry points ---------------------------------------------------------
    def propose(self, data: bytes, callback: ApplyCallback) -> None:
        assert self.store is not None
        self.store.apply_command(data, callback=callback)
        self.wake()

    def request_read_index(self, callback: read_index.Callback) -> None:
        """Any thread: ``callback`` gets (on the raft thread) an index confirmed by the leader
        to cover every write acknowledged before this call, or None to ask again."""
        reader = self._read_index
        assert reader is not None, "raft node not started"
        self.call_on_raft_thread(lambda: reader.request(callback))

    def call_on_raft_thread(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)
        self.wake()

    def wake(self) -> None:
        # One byte per batch, not per command (see _drain_wake_pipe for why none is lost).
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            os.write(self._wake_write, b"\0")
        except (BlockingIOError, OSError):
            pass  # pipe full: a wake-up is already pending

    # ---- raft thread ------------------------------------------------------------------------
    def _run(self) -> None:
        config = self.config
        try:
            peers = [str(p.raft_address) for p in config.peers]
            self.store = ReplicatedStore(str(config.raft_address), peers, syncobj_conf(config),
                                         fsync=config.durability == "fsync")
            self.store.on_events = self._on_events
            self._machine_seen = self.store.machine
            self.store._poller.subscribe(self._wake_read, self._drain_wake_pipe,
                                        POLL_EVENT_TYPE.READ)
            self.store.addOnTickCallback(self._before_poll)
            transport = self.store._SyncObj__transport
            self._read_index = read_index.ReadIndex(self.store, transport,
                                                    self._send_append_entries)
            transport.on_ack = self._read_index.advance
            transport.on_read_index_message = self._read_index.on_message
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        tick = min(0.1, config.raft.heartbeat_interval_s)   # timers need no finer grain
        journal = self.store.journal
        assert journal is not None
        try:
            while self._running.is_set():
                try:
                    self.store.doTick(self._poll_timeout(tick))
                except StorageFailure as exc:   # disk full, I/O or fsync error: stop
                    report_failure(exc)
                    return
                except Exception:  # noqa: BLE001 - one bad tick must not kill the node
                    log.exception("raft tick failed")
                if journal.failure is not None:     # raised where pysyncobj swallows errors
                    report_failure(journal.failure)
                    return
        finally:
            self._drain_jobs()
            self.store.destroy()
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _drain_wake_pipe(self, descr: int, event: int) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        # Cleared after reading: a wake() that saw the flag still set queued its work before
        # this point, and the tick that follows this poll will take it.
        self._wake_pending = False

    def _before_poll(self) -> None:
        """Runs on every tick right before poll: jobs, hybrid flush, fsync, applied index."""
        store = self.store
        assert store is not None
        self._drain_jobs()
        self._read_index.tick()
        if store._isLeader():
            self._flush(store)
        if store.durable_journal is not None:   # after the send: see durability.py
            store.durable_journal.sync_if_dirty()
        self._compact_if_large(store)
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

    def _poll_timeout(self, tick: float) -> float:
        """Short while a commit notice may be due (entries in flight or a notice pending)."""
        store = self.store
        if store is None or not store._isLeader():
            return tick
        if (self._commit_notice_due is not None
                or store.raftCommitIndex < store._SyncObj__raftLog[-1][1]):
            return COMMIT_NOTICE_DELAY_S
        return tick

    def _drain_jobs(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            try:
                job()
            except Exception:  # noqa: BLE001
                log.exception("raft-thread job failed")

    def status(self) -> RaftStatus:
        """Call on the raft thread only (getStatus iterates unguarded sets)."""
        store = self.store
        assert store is not None
        raw = store.getStatus()
        connected = tuple(str(p.raft_address) for p in self.config.peers
                          if raw.get(f"partner_node_status_server_{p.raft_address}") == 2)
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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address.host, address.port))
        except OSError as exc:
            raise ConfigError(f"{config.path}: raft_address: cannot listen on {address}: "
                              f"{exc.strerror}") from None
