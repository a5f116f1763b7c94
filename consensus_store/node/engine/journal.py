"""The raft journal: checksummed records appended with ``pwrite`` into preallocated space.

pysyncobj's FileJournal writes through mmap: a full disk kills the process with SIGBUS, a torn or
changed record is replayed (or stops the node with a bare struct error), and nothing is ever
synced.  ``RecordJournal`` implements pysyncobj's journal interface instead:

    file    = MAGIC (16 bytes) + record* + zeros (space preallocated with posix_fallocate)
    record  = length u32 | crc32 u32 | index u64 | term u64 | command (length bytes)

The CRC-32 covers length, index, term and command.  The end of the log is the first all-zero
record header (a real record has index >= 1).  Space is reserved before a record is written, so
a full disk is an ``ENOSPC`` error before the entry exists (and so before it can be
acknowledged), never a signal.  Any write error is a ``StorageFailure``: the journal refuses
every later operation and the raft runner stops the node.

Reading a journal checks every record.  Damage is a ``StorageCorrupt`` naming the file and the
offset; it is a *torn tail* (what a crash leaves: a last record cut short or failing its
checksum, nothing valid after it, which ``consensus-store repair`` may cut) or damage in the
middle (never repaired).  A journal in pysyncobj's old format is read once and rewritten in this
one.  After a snapshot the kept entries go to a new file renamed over the old one, so a crash
leaves either journal, whole (``durability = "fsync"``: synced before and after the rename).
"""
from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Iterable

from pysyncobj.journal import Journal
from pysyncobj.pickle import to_bytes

from consensus_store.node.engine.storage import (NOT_REPAIRABLE, MetaFile, StorageCorrupt, StorageFailure,
                                          describe_os_error, fsync_directory_of, fsync_fd,
                                          open_private, write_all)

log = logging.getLogger("consensus_store.journal")

MAGIC = b"consensus-jrnl1\n"
RECORD = struct.Struct("<IIQQ")          # command length, CRC-32, index, term
_CRC_FIELDS = struct.Struct("<IQQ")      # what the CRC covers besides the command
ZERO_HEADER = bytes(RECORD.size)
PREALLOCATE_MIN = 1 << 20                # grow the file by a quarter, within these bounds
PREALLOCATE_MAX = 64 << 20
REWRITE_SUFFIX = ".rewrite"
WRITE_CHUNK = 4 << 20
_SEARCH_AHEAD = 16                       # indexes looked for past a damaged record
LEGACY_MAGIC = b"PYSYNCOBJ"
_LEGACY_FIRST_RECORD = 40                # pysyncobj's header: name 24, version 8, format 4, end 4

Entry = tuple[Any, int, int]             # (command, index, term), as pysyncobj keeps them


def record_crc(command: bytes, index: int, term: int) -> int:
    return zlib.crc32(command, zlib.crc32(_CRC_FIELDS.pack(len(command), index, term)))


def encode_record(command: Any, index: int, term: int) -> bytes:
    data = to_bytes(command)
    return RECORD.pack(len(data), record_crc(data, index, term), index, term) + data


# ---- reading --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Damage:
    offset: int
    reason: str
    torn: bool            # a torn tail: nothing valid follows, so repair may cut it


@dataclass(frozen=True)
class JournalScan:
    entries: list[Entry]
    end: int              # offset just past the last good record
    size: int             # file size (preallocated zeros included)
    damage: Damage | None
    legacy: bool = False  # pysyncobj's format: read, to be rewritten in ours

    def error(self, path: str) -> StorageCorrupt:
        assert self.damage is not None
        damage = self.damage
        data_dir = os.path.dirname(os.path.abspath(path))
        if damage.torn:
            advice = (f"a torn tail after a crash: run `consensus-store repair --data-dir "
                      f"{data_dir}` to cut it")
        else:
            advice = f"valid records follow it, so not a torn tail; {NOT_REPAIRABLE}"
        return StorageCorrupt(f"{path}: journal damaged at offset {damage.offset}: "
                              f"{damage.reason} ({advice})")


def _record_ok(data: bytes, offset: int) -> bool:
    if offset < 0 or offset + RECORD.size > len(data):
        return False
    length, crc, index, term = RECORD.unpack_from(data, offset)
    end = offset + RECORD.size + length
    return index >= 1 and end <= len(data) and \
        record_crc(data[offset + RECORD.size:end], index, term) == crc


def _valid_record_after(data: bytes, start: int, damaged_index: int | None) -> bool:
    """Whether a good record starts anywhere after ``start``: looked up by the index the next
    records would carry (records hold consecutive indexes), which ``bytes.find`` locates fast."""
    if damaged_index is None:
        return any(data[start:])   # nothing to look for: only zeros after it is a torn tail
    for index in range(damaged_index + 1, damaged_index + 1 + _SEARCH_AHEAD):
        pattern = struct.pack("<Q", index)
        position = data.find(pattern, start + 8)
        hits = 0
        while position != -1 and hits < 10_000:
            if _record_ok(data, position - 8):
                return True
            position = data.find(pattern, position + 1)
            hits += 1
    return False


def parse_records(data: bytes) -> JournalScan:
    """Every good record of a journal file's bytes, and the first damage if any."""
    entries: list[Entry] = []
    size = len(data)
    if size == 0:
        return JournalScan(entries, 0, 0, None)
    if not data.startswith(MAGIC):
        if data.startswith(LEGACY_MAGIC):
            return _parse_legacy(data)
        torn = size < len(MAGIC) and MAGIC.startswith(data.rstrip(b"\0"))
        return JournalScan(entries, 0, size, Damage(0, "not a journal (unknown header)", torn))
    offset, expected = len(MAGIC), None
    while offset < size:
        if offset + RECORD.size > size:
            if not any(data[offset:]):
                break
            return JournalScan(entries, offset, size,
                               Damage(offset, "record header cut short at the end of the file",
                                      True))
        header = data[offset:offset + RECORD.size]
        if header == ZERO_HEADER:
            if not any(data[offset:]):
                break                       # the end: preallocated zeros
            return JournalScan(entries, offset, size, Damage(
                offset, "a blank record header with data after it",
                not _valid_record_after(data, offset, expected and expected - 1)))
        length, crc, index, term = RECORD.unpack(header)
        end = offset + RECORD.size + length
        damaged_index = index if expected is None else expected
        if end > size:
            return JournalScan(entries, offset, size, Damage(
                offset, f"record of {length} bytes cut short at the end of the file",
                not _valid_record_after(data, offset, damaged_index)))
        command = data[offset + RECORD.size:end]
        if record_crc(command, index, term) != crc:
            return JournalScan(entries, offset, size, Damage(
                offset, f"record fails its checksum (index {index} as stored)",
                not _valid_record_after(data, offset, damaged_index)))
        if expected is not None and index != expected:
            return JournalScan(entries, offset, size, Damage(
                offset, f"record has index {index} where {expected} was expected", False))
        entries.append((command, index, term))
        offset, expected = end, index + 1
    return JournalScan(entries, offset, size, None)


def _parse_legacy(data: bytes) -> JournalScan:
    """pysyncobj 0.3.17's FileJournal: header, then ``len | index, term, command | len``."""
    entries: list[Entry] = []
    size = len(data)
    if size < _LEGACY_FIRST_RECORD:
        return JournalScan(entries, 0, size, Damage(0, "old-format header cut short", True),
                           legacy=True)
    (last,) = struct.unpack_from("<I", data, _LEGACY_FIRST_RECORD - 4)
    offset = _LEGACY_FIRST_RECORD
    while offset < last:
        if offset + 20 > size:
            return JournalScan(entries, offset, size,
                               Damage(offset, "old-format record cut short", True), legacy=True)
        (length,) = struct.unpack_from("<I", data, offset)
        end = offset + 8 + length
        if length < 16 or end > size or data[end - 4:end] != data[offset:offset + 4]:
            return JournalScan(entries, offset, size,
                               Damage(offset, "old-format record damaged (no checksum to tell "
                                      "more)", False), legacy=True)
        index, term = struct.unpack_from("<QQ", data, offset + 4)
        entries.append((data[offset + 20:end - 4], index, term))
        offset = end
    return JournalScan(entries, offset, size, None, legacy=True)


def scan_journal(path: str) -> JournalScan:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return JournalScan([], 0, 0, None)
    except OSError as exc:
        raise StorageCorrupt(f"{path}: cannot read the journal: "
                             f"{describe_os_error(exc)}") from None
    return parse_records(data)


def _same_entry(entry: Entry, other: Entry) -> bool:
    return entry[1:] == other[1:] and to_bytes(entry[0]) == to_bytes(other[0])


def write_records(fd: int, entries: Iterable[Entry], offset: int) -> int:
    """Write records from ``offset`` in large chunks; returns the offset after the last one."""
    chunk: list[bytes] = []
    pending = 0
    for entry in entries:
        record = encode_record(*entry)
        chunk.append(record)
        pending += len(record)
        if pending >= WRITE_CHUNK:
            write_all(fd, b"".join(chunk), offset)
            offset, chunk, pending = offset + pending, [], 0
    if chunk:
        write_all(fd, b"".join(chunk), offset)
        offset += pending
    return offset


def replace_journal_file(path: str, entries: list[Entry], *, sync: bool) -> tuple[int, int]:
    """Write ``entries`` to a new file renamed over ``path`` (a crash leaves either file);
    returns the new file's open descriptor and the offset after its last record."""
    new_path = path + REWRITE_SUFFIX
    fd = -1
    try:
        if os.path.exists(new_path):
            os.unlink(new_path)          # left by a crash during an earlier rewrite
        fd = open_private(new_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        write_all(fd, MAGIC, 0)
        end = write_records(fd, entries, len(MAGIC))
        if sync:
            fsync_fd(fd, new_path)
        os.replace(new_path, path)
        if sync:
            fsync_directory_of(path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(new_path)
        except OSError:
            pass
        raise
    return fd, end


# ---- the journal pysyncobj uses ------------------------------------------------------------------
class RecordJournal(Journal):
    """pysyncobj's journal interface over checksummed records (``durability = "process"``;
    DurableJournal in durability.py adds the fsyncs)."""

    sync_files = False

    def __init__(self, path: str, meta_path: str) -> None:
        self.path = path
        self.failure: StorageFailure | None = None
        self._meta_file = MetaFile(meta_path, sync=self.sync_files)
        self._meta = self._meta_file.load()
        self._meta_saved = True
        scan = scan_journal(path)
        if scan.damage is not None:
            raise scan.error(path)
        self._entries: list[Entry] = scan.entries
        self._fd = -1
        self._can_preallocate = True
        if scan.legacy:
            self._rewrite(self._entries)
            log.info("%s: converted from pysyncobj's format (%d entries) to checksummed "
                     "records", path, len(self._entries))
            return
        try:
            self._fd = open_private(path, os.O_RDWR | os.O_CREAT)
            if scan.size == 0:
                write_all(self._fd, MAGIC, 0)
                scan = JournalScan([], len(MAGIC), len(MAGIC), None)
        except OSError as exc:
            raise StorageFailure(f"cannot open {path}: {describe_os_error(exc)}") from exc
        self._end = scan.end
        self._allocated = scan.size

    @property
    def size_bytes(self) -> int:
        """Bytes of records on disk (what compaction by bytes bounds)."""
        return self._end

    # ---- pysyncobj's journal interface ----------------------------------------------------
    def add(self, command: Any, idx: int, term: int) -> None:
        self._check()
        record = encode_record(command, idx, term)
        try:
            self._reserve(self._end + len(record))
            write_all(self._fd, record, self._end)
        except OSError as exc:
            self._fail(f"cannot append to {self.path} at offset {self._end}: "
                       f"{describe_os_error(exc)}", exc)
        self._end += len(record)
        self._entries.append((command, idx, term))

    def clear(self) -> None:
        self._check()
        self._truncate(len(MAGIC))
        self._entries = []

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        self._check()
        removed = self._entries[entryFrom:]
        if not removed:
            return
        size = sum(RECORD.size + len(to_bytes(entry[0])) for entry in removed)
        self._truncate(self._end - size)
        del self._entries[entryFrom:]

    def deleteEntriesTo(self, entryTo: int) -> None:
        self._check()
        kept = self._entries[entryTo:]
        self._rewrite(kept)
        self._entries = kept

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def flush(self) -> None:
        pass                                 # pwrite leaves nothing in our process to flush

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._meta["raftCommitIndex"] = raftCommitIndex
        self._meta_saved = False

    def getRaftCommitIndex(self) -> int:
        return self._meta.get("raftCommitIndex", 1)

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        # Raft: term and vote are stored before any message reflecting them leaves.
        self._meta["currentTerm"] = term
        self._meta["votedForNodeId"] = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return self._meta.get("currentTerm", 0)

    def getVotedForNodeId(self) -> Any:
        return self._meta.get("votedForNodeId")

    def onOneSecondTimer(self) -> None:
        if not self._meta_saved:
            self._store_meta()

    # ---- ours ------------------------------------------------------------------------------
    def align_with_snapshot(self, previous: Entry, last: Entry) -> None:
        """Cut the prefix up to the snapshot's last two entries (``previous``, ``last``) if
        this journal holds them.  A crash between a snapshot and the rewrite that follows it
        leaves a journal that starts before the snapshot; pysyncobj would then reset the
        journal to the snapshot's two entries, dropping every later one, acknowledged ones
        included."""
        if len(self) < 2 or self[0][1] >= previous[1]:
            return
        position = previous[1] - self[0][1]
        if position + 1 < len(self) and _same_entry(self[position], previous) \
                and _same_entry(self[position + 1], last):
            self.deleteEntriesTo(position)

    def sync_if_dirty(self) -> None:
        """No fsync in this mode; still refuses to go on after a failure."""
        self._check()

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _fail(self, message: str, cause: BaseException | None = None) -> None:
        self.failure = StorageFailure(message)
        raise self.failure from cause

    def _store_meta(self) -> None:
        self._check()
        try:
            self._meta_file.store(self._meta)
        except StorageFailure as exc:
            self._fail(exc.message, exc)
        self._meta_saved = True

    def _reserve(self, needed: int) -> None:
        """Allocate file space ahead, so that a full disk is an error here, not a SIGBUS or a
        half-written record later."""
        if needed <= self._allocated:
            return
        grow = min(max(self._allocated // 4, PREALLOCATE_MIN), PREALLOCATE_MAX)
        size = max(needed, self._allocated + grow)
        if self._can_preallocate:
            try:
                os.posix_fallocate(self._fd, self._allocated, size - self._allocated)
            except OSError as exc:
                if exc.errno not in (95, 22):   # EOPNOTSUPP, EINVAL: a file system without it
                    raise
                self._can_preallocate = False   # the write itself then reports ENOSPC
                return
        self._allocated = size

    def _truncate(self, end: int) -> None:
        try:
            os.ftruncate(self._fd, end)
        except OSError as exc:
            self._fail(f"cannot truncate {self.path} to {end} bytes: "
                       f"{describe_os_error(exc)}", exc)
        self._end = self._allocated = end

    def _rewrite(self, entries: list[Entry]) -> None:
        """The kept entries to a new file renamed over the old one: a crash leaves either."""
        try:
            fd, end = replace_journal_file(self.path, entries, sync=self.sync_files)
        except (OSError, StorageFailure) as exc:
            reason = exc.message if isinstance(exc, StorageFailure) else describe_os_error(exc)
            self._fail(f"cannot rewrite {self.path} after a snapshot: {reason}", exc)
        self._destroy()                      # the old file: its name now belongs to the new
        self._fd = fd
        self._end = self._allocated = end
