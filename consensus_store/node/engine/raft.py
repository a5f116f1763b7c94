"""pysyncobj configured and extended: the config translation and the replicated store.

``ReplicatedStore`` is the ``SyncObj`` with our one replicated entry point, our journal and
snapshot files (journal.py, storage.py), our transport (replication.py), a poller that is the
node's asyncio loop (loop_poller.py), and the leader's commit rule under background fsync
(``durable_commit``).  runner.py drives it.  docs/pysyncobj.md explains the behaviour.

Private pysyncobj names used here, in runner.py and in read_index.py (pinned to 0.3.17 in
pyproject.toml): ``_SyncObj__sendAppendEntries``, ``_SyncObj__raftLog``,
``_SyncObj__raftNextIndex``, ``_SyncObj__raftMatchIndex``, ``_SyncObj__transport``,
``_SyncObj__otherNodes``, ``_SyncObj__getEntries``, ``_SyncObj__lastSerializedEntry``,
``_SyncObj__conf``, ``_SyncObj__applyLogEntries`` (overridden), ``_SyncObj__leaderCommitIndex``,
``_SyncObj__doApplyCommand`` (overridden: a membership entry's member table, membership.py),
``_checkCommandsToApply`` (overridden: held during a leadership transfer, transfer.py),
``_poller`` (a property here), and, at start-up (``ReplicatedStore._open_storage``),
``_SyncObj__raftCurrentTerm``, ``_SyncObj__votedForNodeId``, ``_SyncObj__raftCommitIndex``,
``_SyncObj__serializer``, ``_SyncObj__loadDumpFile``, ``_SyncObj__needLoadDumpFile``.  The
storage modules (storage.py, journal.py) and the raft port (peer_connection.py) list their own.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Callable, Iterator

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.poller import Poller

from consensus_store.config import NodeConfig
from consensus_store.node.engine import membership
from consensus_store.node.engine.durability import DurableJournal
from consensus_store.node.engine.journal import MAGIC as JOURNAL_MAGIC
from consensus_store.node.engine.journal import RecordJournal
from consensus_store.node.engine.replication import GuardedTransport
from consensus_store.node.engine.snapshots import PlainMachine, make_background
from consensus_store.node.engine.storage import (JOURNAL_NAME, META_NAME, SNAPSHOT_NAME,
                                                 StorageCorrupt, load_snapshot, make_checked)
from consensus_store.state import StateMachine
from consensus_store.state.chunked_copy import copy_in_chunks

ApplyCallback = Callable[[Any, int], None]   # (result or None, FAIL_REASON code)


def stored_entry_bound(max_entry_bytes: int) -> int:
    """The most bytes pysyncobj stores for one of our commands: it pickles the method call
    with protocol 2, which writes each byte >= 0x80 of ``bytes`` as two."""
    return 2 * max_entry_bytes + 4096


# How long the snapshot thread steps aside when apply waits for the state lock.
APPLY_FIRST_S = 0.0002

# Followers learn of a commit at most this much later than the leader (when no entries follow).
COMMIT_NOTICE_DELAY_S = 0.002

# FAIL_REASONs after which the command may still have been applied (or may apply later).
MAYBE_APPLIED = frozenset({FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME})


def syncobj_conf(config: NodeConfig) -> SyncObjConf:
    """The single translation from our config to pysyncobj's."""
    timing = config.raft
    data = config.data_dir
    conf = SyncObjConf(
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
        dynamicMembershipChange=True,    # member add/remove (membership.py)
    )
    # A read replica (self_address None) names itself to the voters, with where clients reach
    # it (peer_connection.py, REPLICA_PREFIX).
    native = config.native_address
    conf.replica_announcement = (f"{config.id} {config.scheme}://{config.api_address} "
                                 f"{native if native is not None else '-'}"
                                 if config.is_replica else None)
    return conf


class ReplicatedStore(SyncObj):
    """SyncObj with one replicated entry point; the state machine is the replicated state."""

    def __init__(self, self_address: str | None, peer_addresses: list[str], conf: SyncObjConf,
                 poller: Poller, fsync: bool = False) -> None:
        # Attributes set before super().__init__ stay out of snapshots.
        self.state_lock = threading.Lock()
        self.on_events: Callable[[int, list[dict[str, Any]]], None] | None = None
        self.durable_journal: DurableJournal | None = None
        self.journal: RecordJournal | None = None
        self.loop_poller = poller
        self.apply_waiting = False      # apply wants ``state_lock`` (snapshot_copy lets it in)
        self.commit_floor = 0           # the commit index as ``durable_commit`` last left it
        self.commit_held = False        # it held the commit below pysyncobj's (an fsync runs)
        self.writes_held = False        # a leadership transfer holds new commands (transfer.py)
        super().__init__(self_address, peer_addresses, conf, transportClass=GuardedTransport)
        self.machine = StateMachine()
        self.members: list[dict[str, Any]] | None = None   # live member table (membership.py)
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
        serializer = make_background(make_checked(self._SyncObj__serializer), self.snapshot_copy)
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

    @property
    def _poller(self) -> Poller:
        """pysyncobj's sockets register with the node's loop (loop_poller.py)."""
        return self.loop_poller

    @_poller.setter
    def _poller(self, created: Poller) -> None:
        pass    # the one SyncObj.__init__ makes (createPoller) is not used

    def _checkCommandsToApply(self) -> None:
        """pysyncobj moves queued commands (ours and those followers forward) into the log, or
        forwards them to the leader, here, once per tick: a leadership transfer holds them
        (transfer.py), so that the target can catch up with a log that no longer grows."""
        if not self.writes_held:
            SyncObj._checkCommandsToApply(self)

    def _SyncObj__applyLogEntries(self) -> bool:
        """pysyncobj's tick computes the leader's commit index and then applies: in between,
        hold the commit to what a majority has on disk (``durable_commit``)."""
        self.commit_held = False
        if self.durable_journal is not None and self._isLeader():
            commit = self.durable_commit()
            if commit != self._SyncObj__raftCommitIndex:
                self.commit_held = True
                self._SyncObj__raftCommitIndex = self._SyncObj__leaderCommitIndex = commit
                self.durable_journal.setRaftCommitIndex(commit)
        self.commit_floor = self._SyncObj__raftCommitIndex
        return SyncObj._SyncObj__applyLogEntries(self)    # type: ignore[attr-defined]

    def durable_commit(self) -> int:
        """The leader's commit index counting itself only up to its synced index.

        pysyncobj counts the leader as holding every entry it appended; with its fsync in the
        background (durability.py) that holds only up to ``synced_index``.  Returns the highest
        index at most pysyncobj's commit index that a majority holds on disk and whose entry is
        of the current term (Raft's rule: earlier terms' entries commit only below one of
        ours), or the previous commit index."""
        journal = self.durable_journal
        assert journal is not None
        commit, floor = self._SyncObj__raftCommitIndex, self.commit_floor
        if commit <= floor or commit <= journal.synced_index:
            return commit
        match, others = self._SyncObj__raftMatchIndex, self._SyncObj__otherNodes
        majority = (len(others) + 1) // 2 + 1
        term = self._getTerm()
        for index in range(commit, floor, -1):
            holders = (journal.synced_index >= index) + sum(
                1 for node in others if match.get(node, 0) >= index)
            if holders < majority:
                continue
            entries = self._SyncObj__getEntries(index, 1)
            if entries and entries[0][2] == term:
                return index
        return floor

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:
        """A membership entry also carries the member table after it (membership.py)."""
        request = membership.decode_change(command)
        if request is not None and membership.table_after(request) is not None:
            with self.state_lock:      # snapshot_copy reads it under the lock
                self.members = membership.table_after(request)
        return SyncObj._SyncObj__doApplyCommand(self, command)  # type: ignore[attr-defined]

    def snapshot_running(self) -> bool:
        return self._SyncObj__serializer.running

    def snapshot_copy(self, data: Any) -> tuple[Any, int]:
        """On the snapshot thread (snapshots.py): pysyncobj's snapshot tuple ``data``
        (state, last entry, the one before, cluster) made consistent with a chunked copy of
        the machine, and the index pysyncobj may cut the journal before."""
        self_data, last, previous, cluster = data
        state = copy_in_chunks(self.copy_lock, lambda: self.machine)
        copied = state["applied_index"]
        if copied > last[1]:
            # Entries applied meanwhile are in the copy: it ends at ``copied``.
            with self.state_lock:
                entries = self._SyncObj__getEntries(copied - 1, 2)
                # membership changes applied meanwhile belong in it too (membership.py)
                self_data = {**self_data, "members": self.members}
                cluster = self._SyncObj__otherNodes | {self.selfNode}
            if len(entries) != 2 or entries[1][1] != copied:
                raise RuntimeError(f"entries {copied - 1}..{copied} are not in the journal")
            previous, last = entries
        # (else no command was applied after ``last``: what followed it are no-ops)
        snapshot = ({**self_data, "machine": PlainMachine(state)}, last, previous, cluster)
        return snapshot, previous[1]

    @contextlib.contextmanager
    def copy_lock(self) -> Iterator[None]:
        """``state_lock`` for a thread copying the state (snapshots, backups), never taken
        again while apply waits for it: Python's lock is not fair, and the thread, holding
        the GIL, would otherwise take it back chunk after chunk while the loop waits (apply
        stalled for seconds)."""
        while self.apply_waiting:
            time.sleep(APPLY_FIRST_S)
        with self.state_lock:
            yield

    @replicated
    def apply_command(self, data: bytes) -> tuple[int, dict[str, Any]]:
        index = self.raftLastApplied + 1
        self.apply_waiting = True
        with self.state_lock:
            self.apply_waiting = False
            result = self.machine.apply(data, index)
            events = self.machine.drain_events()
        if events and self.on_events is not None:
            self.on_events(index, events)
        return index, result
