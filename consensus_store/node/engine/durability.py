"""``durability = "fsync"``: an entry is on disk on a majority before it is acknowledged.

pysyncobj 0.3.17 never syncs its journal (upstream issue #84), so a power loss can drop
acknowledged entries.  Here each node fsyncs its journal (journal.py) once per batch, before
the batch can count towards a commit:
  - a follower, before ``next_node_idx`` (its acknowledgement of appended entries) leaves;
  - the leader, at the end of every tick, right after that tick's AppendEntries went out (Raft
    thesis 10.2.1: the leader writes its log in parallel with replicating it).  It counts
    itself towards a commit only in a later tick: pysyncobj computes the commit index at the
    start of a tick, before it appends new commands, and acknowledgements are handled between
    ticks on the same thread.  So its fsync overlaps the followers' work instead of delaying it.
The term/vote file is synced before any vote leaves (MetaFile), a snapshot before it replaces
the old one and so before the journal is cut behind it (storage.CheckedSerializer).

A failed fsync is fatal and never retried: after one the kernel may have dropped the dirty
pages and marked them clean, so a later fsync can succeed without the data being on disk.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from consensus_store.node.engine.journal import RecordJournal
from consensus_store.node.engine.storage import StorageFailure, fsync_fd

FLUSH_TRIGGERS = frozenset({"next_node_idx"})   # messages that must not leave unsynced


class DurableJournal(RecordJournal):
    """A journal that knows whether it has unsynced entries."""

    sync_files = True
    synced_index = 0          # highest log index known to be on disk
    fsync_count = 0
    on_sync: Callable[[int, float], None] | None = None   # test instrumentation

    def __init__(self, path: str, meta_path: str) -> None:
        super().__init__(path, meta_path)
        self._dirty = True        # whatever was loaded may not be on disk yet
        self.sync_if_dirty()

    def add(self, command: Any, idx: int, term: int) -> None:
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
        super().deleteEntriesTo(entryTo)   # a new, synced file (journal.py)
        self._dirty = True                 # so that synced_index and on_sync see the new file
        self.sync_if_dirty()

    def sync_if_dirty(self) -> None:
        self._check()
        if not self._dirty:
            return
        try:
            fsync_fd(self._fd, self.path)   # no retry: see the module docstring
        except StorageFailure as exc:
            self._fail(exc.message, exc)
        self._dirty = False
        self.fsync_count += 1
        self.synced_index = self[-1][1] if len(self) else 0
        if self.on_sync is not None:
            self.on_sync(self.synced_index, time.monotonic())
