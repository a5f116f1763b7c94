"""pysyncobj's file journal with a crash-atomic rewrite after a snapshot.

After a snapshot pysyncobj rewrites its journal in place: it marks the file empty, then writes
the entries it keeps over the old records.  A crash in between left a node without every entry
after its snapshot, acknowledged ones included.  ``AtomicJournal`` writes the kept entries to
a new file and renames it over the old one, so a crash leaves either journal, whole.  Installed
per instance by swapping the journal's class, like ``DurableJournal`` (which adds the fsyncs).

Private pysyncobj names used (pinned to 0.3.17): FileJournal's ``_FileJournal__journal``,
``_FileJournal__journalFile`` and ``_FileJournal__currentOffset``; ResizableFile's
``_ResizableFile__fileName``, ``_ResizableFile__f`` and ``_ResizableFile__mm``.
"""
from __future__ import annotations

import os

from pysyncobj.journal import FileJournal, ResizableFile

REWRITE_SUFFIX = ".rewrite"


class AtomicJournal(FileJournal):
    """Same memory layout as FileJournal, so an open one can become one (``make_atomic``)."""

    sync_files = False      # DurableJournal: the new file is on disk before the rename

    def _path(self) -> str:
        return self._FileJournal__journalFile._ResizableFile__fileName

    def deleteEntriesTo(self, entryTo: int) -> None:
        kept = self._FileJournal__journal[entryTo:]
        path = self._path()
        new_path = path + REWRITE_SUFFIX
        if os.path.exists(new_path):
            os.unlink(new_path)         # left by a crash during an earlier rewrite
        fresh = FileJournal(new_path)   # writes the header; keeps no meta file of its own
        for entry in kept:
            fresh.add(*entry)
        offset = fresh._FileJournal__currentOffset
        fresh_file = fresh._FileJournal__journalFile
        if self.sync_files:
            os.fsync(fresh_file._ResizableFile__f.fileno())
        _close(fresh_file)
        os.replace(new_path, path)
        if self.sync_files:
            fsync_directory_of(path)
        _close(self._FileJournal__journalFile)   # the old file: its name now belongs to the new
        self._FileJournal__journalFile = ResizableFile(path)
        self._FileJournal__journal = kept
        self._FileJournal__currentOffset = offset


def _close(journal_file: ResizableFile) -> None:
    journal_file._ResizableFile__mm.close()
    journal_file._ResizableFile__f.close()


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory_of(path: str) -> None:
    """Make a file's creation or rename in its directory durable."""
    fsync_path(os.path.dirname(path) or ".")


def make_atomic(journal: FileJournal) -> AtomicJournal:
    journal.__class__ = AtomicJournal
    assert isinstance(journal, AtomicJournal)
    return journal
