"""``durability = "fsync"``: an entry is on disk on a majority before it is acknowledged.

pysyncobj 0.3.17 never syncs its journal (upstream issue #84), so a power loss can drop
acknowledged entries.  Here each node fsyncs its journal (journal.py) once per batch, before
the batch can count towards a commit:
  - a follower, before ``next_node_idx`` (its acknowledgement of appended entries) leaves
    (``sync_if_dirty``, on the loop: the acknowledgement waits for it anyway);
  - the leader, in the background (``sync_in_background``, on a helper thread), right after a
    tick's AppendEntries went out (Raft thesis 10.2.1: the leader writes its log in parallel
    with replicating it).  It counts itself towards a commit only up to ``synced_index``
    (raft.py, ``ReplicatedStore.durable_commit``), so its fsync overlaps the followers' work
    and the loop keeps serving clients meanwhile.
The term/vote file is synced before any vote leaves (MetaFile), a snapshot before it replaces
the old one and so before the journal is cut behind it (storage.CheckedSerializer).

Every journal fsync's duration goes to ``fsync_latency`` (for ``/metrics``), recorded on the
loop.

A failed fsync is fatal and never retried: after one the kernel may have dropped the dirty
pages and marked them clean, so a later fsync can succeed without the data being on disk.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any, Callable

from consensus_store.node.engine.journal import RecordJournal
from consensus_store.node.engine.latency import FSYNC_BUCKETS_S, LatencyHistogram
from consensus_store.node.engine.storage import StorageFailure, describe_os_error, fsync_fd

FLUSH_TRIGGERS = frozenset({"next_node_idx"})   # messages that must not leave unsynced


class DurableJournal(RecordJournal):
    """A journal that knows which of its entries are on disk.

    ``generation`` changes whenever entries are removed: a background fsync that started
    before then proves nothing about the entries now at those indexes."""

    sync_files = True
    synced_index = 0          # highest log index known to be on disk
    fsync_count = 0
    on_sync: Callable[[int, float], None] | None = None   # test instrumentation
    # Set by the runner: runs a call on the loop from the helper thread; and what to do once
    # a background fsync is done (the leader's commit may move).
    post_from_thread: Callable[..., Any] | None = None
    on_synced: Callable[[], None] | None = None

    def __init__(self, path: str, meta_path: str) -> None:
        super().__init__(path, meta_path)
        self._dirty = True        # whatever was loaded may not be on disk yet
        self.generation = 0
        self._in_flight = False
        self._fd_lock = threading.RLock()     # the fd is not closed during a background fsync
        self._requests: queue.SimpleQueue[tuple[int, int, int] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self.fsync_latency = LatencyHistogram(FSYNC_BUCKETS_S)
        self.sync_if_dirty()

    @property
    def unsynced(self) -> bool:
        return self._dirty or self._in_flight

    def add(self, command: Any, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._dirty = True

    def clear(self) -> None:
        super().clear()
        self._removed()

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        super().deleteEntriesFrom(entryFrom)
        self._removed()

    def deleteEntriesTo(self, entryTo: int) -> None:
        super().deleteEntriesTo(entryTo)   # a new, synced file (journal.py)
        self.generation += 1
        self._dirty = True                 # so that synced_index and on_sync see the new file
        self.sync_if_dirty()

    def _removed(self) -> None:
        self.generation += 1
        self._dirty = True
        self.synced_index = min(self.synced_index, self[-1][1] if len(self) else 0)

    def _last_index(self) -> int:
        return self[-1][1] if len(self) else 0

    # ---- on the loop: now ------------------------------------------------------------------
    def sync_if_dirty(self) -> None:
        self._check()
        if not self._dirty:
            return
        started = time.monotonic()
        try:
            fsync_fd(self._fd, self.path)   # no retry: see the module docstring
        except StorageFailure as exc:
            self._fail(exc.message, exc)
        self._dirty = False
        done_at = time.monotonic()
        self.fsync_latency.observe(done_at - started)
        self._synced(self._last_index(), done_at)

    # ---- in the background -----------------------------------------------------------------
    def sync_in_background(self) -> None:
        """Start an fsync of everything written so far on the helper thread, unless one runs
        (its end starts the next).  Synchronous without a loop to report back to."""
        self._check()
        if not self._dirty or self._in_flight:
            return
        if self.post_from_thread is None:
            self.sync_if_dirty()
            return
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="journal-fsync", daemon=True)
            self._worker.start()
        self._dirty = False
        self._in_flight = True
        self._requests.put((self._fd, self._last_index(), self.generation))

    def _work(self) -> None:
        while (request := self._requests.get()) is not None:
            fd, index, generation = request
            error: OSError | None = None
            seconds: float | None = None   # None: no fsync ran
            with self._fd_lock:
                # Else the file was replaced (synced by its rewrite) or closed (stopping).
                if fd >= 0 and fd == self._fd:
                    started = time.monotonic()
                    try:
                        os.fsync(fd)
                    except OSError as exc:
                        error = exc
                    seconds = time.monotonic() - started
            done_at = time.monotonic()
            try:
                assert self.post_from_thread is not None
                self.post_from_thread(self._background_done, index, generation, done_at, error,
                                      seconds)
            except RuntimeError:
                return                     # the loop is closed: the node is stopping

    def _background_done(self, index: int, generation: int, done_at: float,
                         error: OSError | None, seconds: float | None = None) -> None:
        self._in_flight = False
        if seconds is not None:
            self.fsync_latency.observe(seconds)
        if error is not None:
            self.failure = StorageFailure(f"fsync of {self.path} failed: "
                                          f"{describe_os_error(error)}")
            return                         # the runner sees ``failure`` and stops the node
        if generation == self.generation:
            self._synced(index, done_at)
        else:
            self._dirty = True             # entries were replaced meanwhile: sync them again
        if self._dirty:
            self.sync_in_background()
        if self.on_synced is not None:
            self.on_synced()

    def _synced(self, index: int, at: float) -> None:
        self.fsync_count += 1
        self.synced_index = max(self.synced_index, index)
        if self.on_sync is not None:
            self.on_sync(self.synced_index, at)

    def _rewrite(self, entries: list[Any]) -> None:
        with self._fd_lock:
            super()._rewrite(entries)

    def _destroy(self) -> None:
        with self._fd_lock:                # never close the fd under a running fsync
            super()._destroy()

    def stop_background(self) -> None:
        """End the helper thread (after the last background fsync finished)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            self._requests.put(None)
            worker.join(5.0)
