"""``durability = "fsync"``: an entry is on disk on a majority before it is acknowledged.

pysyncobj 0.3.17 writes its journal through mmap and never syncs it (upstream issue #84), so a
power loss can drop acknowledged entries.  Here each node fsyncs its journal once per batch,
before the batch can count towards a commit:
  - a follower, before ``next_node_idx`` (its acknowledgement of appended entries) leaves;
  - the leader, at the end of every tick, right after that tick's AppendEntries went out (Raft
    thesis 10.2.1: the leader writes its log in parallel with replicating it).  It counts
    itself towards a commit only in a later tick: pysyncobj computes the commit index at the
    start of a tick, before it appends new commands, and acknowledgements are handled between
    ticks on the same thread.  So its fsync overlaps the followers' work instead of delaying it.
The term/vote meta file is fsynced before any vote leaves, the snapshot before the journal is
truncated behind it.  Installed per instance by swapping the journal's class (no global patch).
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

from pysyncobj.journal import FileJournal

from consensus_store.node.journal import AtomicJournal, fsync_directory_of, fsync_path

FLUSH_TRIGGERS = frozenset({"next_node_idx"})   # messages that must not leave unsynced


class DurableJournal(AtomicJournal):
    """A journal that knows whether it has unsynced entries.  Same memory layout as
    FileJournal, so an open one can become one (``make_durable``)."""

    sync_files = True
    _dirty = False
    synced_index = 0          # highest log index known to be on disk
    fsync_count = 0
    snapshot_path: str | None = None
    on_sync: Callable[[int, float], None] | None = None   # test instrumentation

    def _journal_fd(self) -> int:
        return self._FileJournal__journalFile._ResizableFile__f.fileno()

    def _meta_path(self) -> str:
        return self._FileJournal__metaStorer.getPath()

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._dirty = True

    def clear(self) -> None:
        super().clear()
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        super().deleteEntriesFrom(entryFrom)
        self._dirty = True
        self.synced_index = min(self.synced_index, self[-1][1] if len(self) else 0)

    def deleteEntriesTo(self, entryTo: int) -> None:
        # The snapshot must be on disk before the entries it replaces leave the journal.
        if self.snapshot_path and os.path.exists(self.snapshot_path):
            fsync_path(self.snapshot_path)
            fsync_directory_of(self.snapshot_path)
        super().deleteEntriesTo(entryTo)   # a new, synced file (journal.py)
        self._dirty = True                 # so that synced_index and on_sync see the new file
        self.sync_if_dirty()

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        super().setCurrentTerm(term, votedForNodeId)
        fsync_path(self._meta_path())
        fsync_directory_of(self._meta_path())

    def sync_if_dirty(self) -> None:
        if not self._dirty:
            return
        os.fsync(self._journal_fd())   # also writes back the pages dirtied through mmap
        self._dirty = False
        self.fsync_count += 1
        self.synced_index = self[-1][1] if len(self) else 0
        if self.on_sync is not None:
            self.on_sync(self.synced_index, time.monotonic())


def make_durable(journal: FileJournal, snapshot_path: str) -> DurableJournal:
    journal.__class__ = DurableJournal
    assert isinstance(journal, DurableJournal)
    journal.snapshot_path = snapshot_path
    journal._dirty = True      # whatever was loaded may not be on disk yet
    journal.sync_if_dirty()
    return journal
