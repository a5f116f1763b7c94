"""The journal (node/engine/journal.py, node/engine/durability.py): checksummed records, damage found and
named, a torn tail told apart from damage in the middle, the crash-atomic rewrite after a
snapshot, a full disk and a failed fsync as fatal errors, and pysyncobj's old format read."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal
from pysyncobj.serializer import SERIALIZER_STATE, Serializer

from consensus_store.node.engine import journal as journal_module
from consensus_store.node.engine import storage
from consensus_store.node.engine.durability import DurableJournal
from consensus_store.node.engine.journal import (MAGIC, RECORD, RecordJournal, encode_record,
                                          scan_journal)
from consensus_store.node.engine.repair import repair_data_dir
from consensus_store.node.engine.storage import StorageCorrupt, StorageFailure

MODES = [pytest.param(RecordJournal, id="process"), pytest.param(DurableJournal, id="fsync")]


class _Crash(Exception):
    pass


def _open(kind: type[RecordJournal], directory: Path) -> RecordJournal:
    return kind(str(directory / "raft.journal"), str(directory / "raft.journal.meta"))


def _filled(kind: type[RecordJournal], directory: Path, entries: int) -> RecordJournal:
    journal = _open(kind, directory)
    for index in range(1, entries + 1):
        journal.add(f"command {index}".encode(), index, 1)
    journal.sync_if_dirty()
    return journal


def _indexes(journal: RecordJournal) -> list[int]:
    return [journal[i][1] for i in range(len(journal))]


def _reopened(directory: Path) -> list[tuple[bytes, int, int]]:
    journal = _open(RecordJournal, directory)
    try:
        return [journal[i] for i in range(len(journal))]
    finally:
        journal._destroy()


def _record_offset(position: int, entries: list[tuple[bytes, int, int]]) -> int:
    return len(MAGIC) + sum(len(encode_record(*entry)) for entry in entries[:position])


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# ---- round trip, rewrite, modes -----------------------------------------------------------------
@pytest.mark.parametrize("kind", MODES)
def test_entries_meta_and_truncation_survive_a_reopen(tmp_path: Path, kind) -> None:
    journal = _filled(kind, tmp_path, 300)
    journal.setCurrentTerm(7, "127.0.0.1:1234")
    journal.deleteEntriesFrom(250)              # a conflicting suffix goes
    journal.add(b"new 251", 251, 2)
    journal.sync_if_dirty()
    journal._destroy()
    entries = _reopened(tmp_path)
    assert [e[1] for e in entries] == list(range(1, 252))
    assert entries[-1] == (b"new 251", 251, 2) and entries[0] == (b"command 1", 1, 1)
    reopened = _open(RecordJournal, tmp_path)
    assert (reopened.getCurrentTerm(), reopened.getVotedForNodeId()) == (7, "127.0.0.1:1234")
    reopened._destroy()


@pytest.mark.parametrize("kind", MODES)
def test_files_are_private(tmp_path: Path, kind) -> None:
    journal = _filled(kind, tmp_path, 3)
    journal.setCurrentTerm(1, None)
    journal.deleteEntriesTo(1)                  # the rewritten file too
    for name in ("raft.journal", "raft.journal.meta"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    journal._destroy()


def test_the_data_dir_is_created_0700_and_tightened(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh" / "node"
    storage.prepare_data_dir(fresh)
    assert fresh.stat().st_mode & 0o777 == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    (old / "raft.snapshot").write_bytes(b"x")
    os.chmod(old / "raft.snapshot", 0o644)
    storage.prepare_data_dir(old)
    assert old.stat().st_mode & 0o777 == 0o700
    assert (old / "raft.snapshot").stat().st_mode & 0o777 == 0o600


def _crash_during_rewrite(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """Make encoding a record fail after ``after`` more calls: the rewrite stops halfway, and
    the files on disk are what a process crash at that moment would leave."""
    calls = {"left": after}
    original = journal_module.encode_record

    def encode(command, index, term):
        if calls["left"] == 0:
            raise _Crash()
        calls["left"] -= 1
        return original(command, index, term)
    monkeypatch.setattr(journal_module, "encode_record", encode)


def test_pysyncobjs_own_rewrite_loses_entries_when_it_crashes(tmp_path, monkeypatch) -> None:
    """The hazard the rewrite guards against, in pysyncobj's FileJournal."""
    path = tmp_path / "raft.journal"
    journal = FileJournal(str(path))
    for index in range(1, 101):
        journal.add(f"command {index}".encode(), index, 1)
    calls = {"left": 10}
    original = FileJournal.add

    def add(self, command, idx, term):
        if calls["left"] == 0:
            raise _Crash()
        calls["left"] -= 1
        original(self, command, idx, term)
    monkeypatch.setattr(FileJournal, "add", add)
    with pytest.raises(_Crash):
        journal.deleteEntriesTo(50)             # pysyncobj's in-place rewrite
    monkeypatch.undo()
    reopened = FileJournal(str(path))
    assert len(reopened) == 10                  # 40 kept entries lost
    reopened._destroy()


@pytest.mark.parametrize("kind", MODES)
def test_a_crash_during_the_rewrite_leaves_the_old_journal_whole(tmp_path, monkeypatch,
                                                                 kind) -> None:
    journal = _filled(kind, tmp_path, 100)
    _crash_during_rewrite(monkeypatch, after=10)
    with pytest.raises(_Crash):
        journal.deleteEntriesTo(50)
    monkeypatch.undo()
    assert [entry[1] for entry in _reopened(tmp_path)] == list(range(1, 101))


@pytest.mark.parametrize("kind", MODES)
def test_a_rewritten_journal_keeps_its_tail_grows_and_reopens(tmp_path: Path, kind) -> None:
    journal = _filled(kind, tmp_path, 100)
    journal.deleteEntriesTo(50)
    assert _indexes(journal) == list(range(51, 101))
    for index in range(101, 20001):             # past several preallocations
        journal.add(b"x" * 100, index, 2)
    journal.sync_if_dirty()
    journal._destroy()
    entries = _reopened(tmp_path)
    assert [entry[1] for entry in entries] == list(range(51, 20001))
    assert entries[0] == (b"command 51", 51, 1) and entries[-1] == (b"x" * 100, 20000, 2)
    assert not (tmp_path / "raft.journal.rewrite").exists()


def test_a_journal_holding_the_snapshot_entries_is_cut_to_them(tmp_path: Path) -> None:
    """A crash between a snapshot and the journal rewrite: the journal is cut to the snapshot's
    entries instead of being reset to them (which would drop every later entry)."""
    journal = _filled(RecordJournal, tmp_path, 100)
    journal.align_with_snapshot(previous=journal[59], last=journal[60])
    assert _indexes(journal) == list(range(60, 101))
    journal.align_with_snapshot(previous=(b"other", 70, 9), last=journal[11])
    assert _indexes(journal) == list(range(60, 101))    # not the same entries: left alone
    journal._destroy()


def test_pysyncobjs_old_format_is_read_and_converted(tmp_path: Path) -> None:
    old = FileJournal(str(tmp_path / "raft.journal"))
    for index in range(1, 51):
        old.add(f"command {index}".encode(), index, 3)
    old._destroy()
    journal = _open(RecordJournal, tmp_path)
    assert _indexes(journal) == list(range(1, 51)) and journal[49] == (b"command 50", 50, 3)
    journal._destroy()
    assert (tmp_path / "raft.journal").read_bytes().startswith(MAGIC)
    assert len(_reopened(tmp_path)) == 50


# ---- damage ------------------------------------------------------------------------------------
def test_a_changed_byte_in_a_record_is_refused_naming_file_and_offset(tmp_path: Path) -> None:
    journal = _filled(RecordJournal, tmp_path, 50)
    entries = [journal[i] for i in range(len(journal))]
    journal._destroy()
    offset = _record_offset(20, entries)
    _flip(tmp_path / "raft.journal", offset + RECORD.size + 3)     # inside record 21's command
    with pytest.raises(StorageCorrupt) as caught:
        _open(RecordJournal, tmp_path)
    message = caught.value.message
    assert str(tmp_path / "raft.journal") in message and f"offset {offset}" in message
    assert "not a torn tail" in message
    with pytest.raises(StorageCorrupt):                            # and repair will not cut it
        repair_data_dir(tmp_path)
    assert len((tmp_path / "raft.journal").read_bytes()) > offset


@pytest.mark.parametrize("cut", [1, 5, RECORD.size + 2])
def test_a_torn_tail_is_refused_then_repaired(tmp_path: Path, cut: int) -> None:
    journal = _filled(RecordJournal, tmp_path, 50)
    entries = [journal[i] for i in range(len(journal))]
    journal._destroy()
    path = tmp_path / "raft.journal"
    end = _record_offset(50, entries)
    with open(path, "r+b") as file:             # cut into the last record
        file.truncate(end - cut)
    with pytest.raises(StorageCorrupt) as caught:
        _open(RecordJournal, tmp_path)
    assert f"offset {_record_offset(49, entries)}" in caught.value.message
    assert "consensus-store repair --data-dir" in caught.value.message
    removed = repair_data_dir(tmp_path)
    assert len(removed) == 1 and "torn tail" in removed[0] and "index 49" in removed[0]
    assert [entry[1] for entry in _reopened(tmp_path)] == list(range(1, 50))
    assert repair_data_dir(tmp_path) == []


def test_a_last_record_failing_its_checksum_is_a_torn_tail(tmp_path: Path) -> None:
    journal = _filled(RecordJournal, tmp_path, 10)
    entries = [journal[i] for i in range(len(journal))]
    journal._destroy()
    _flip(tmp_path / "raft.journal", _record_offset(9, entries) + RECORD.size)
    scan = scan_journal(str(tmp_path / "raft.journal"))
    assert scan.damage is not None and scan.damage.torn
    assert len(repair_data_dir(tmp_path)) == 1
    assert len(_reopened(tmp_path)) == 9


def test_a_damaged_length_field_in_the_middle_is_not_a_torn_tail(tmp_path: Path) -> None:
    journal = _filled(RecordJournal, tmp_path, 30)
    entries = [journal[i] for i in range(len(journal))]
    journal._destroy()
    path = tmp_path / "raft.journal"
    data = bytearray(path.read_bytes())
    offset = _record_offset(10, entries)
    data[offset + 2] = 0x7F                     # record 11 now claims ~8 MiB
    path.write_bytes(bytes(data))
    scan = scan_journal(str(path))
    assert scan.damage is not None and scan.damage.offset == offset and not scan.damage.torn


def test_a_damaged_snapshot_makes_repair_refuse(tmp_path: Path) -> None:
    storage.replace_file(str(tmp_path / "raft.snapshot"), storage.encode_snapshot(("state",)),
                         sync=False)
    assert storage.load_snapshot(str(tmp_path / "raft.snapshot")) == ("state",)
    with open(tmp_path / "raft.snapshot", "r+b") as file:
        file.truncate(30)
    with pytest.raises(StorageCorrupt) as caught:
        storage.load_snapshot(str(tmp_path / "raft.snapshot"))
    assert str(tmp_path / "raft.snapshot") in caught.value.message
    with pytest.raises(StorageCorrupt):
        repair_data_dir(tmp_path)


def test_a_damaged_term_file_is_refused(tmp_path: Path) -> None:
    journal = _filled(RecordJournal, tmp_path, 3)
    journal.setCurrentTerm(4, "peer")
    journal._destroy()
    _flip(tmp_path / "raft.journal.meta", 20)
    with pytest.raises(StorageCorrupt) as caught:
        _open(RecordJournal, tmp_path)
    assert "raft.journal.meta" in caught.value.message


# ---- write failures ------------------------------------------------------------------------------
def test_a_failed_fsync_is_fatal_and_never_retried(tmp_path: Path, monkeypatch) -> None:
    journal = _filled(DurableJournal, tmp_path, 5)
    calls = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(storage.os, "fsync", failing_fsync)
    journal.add(b"six", 6, 1)
    with pytest.raises(StorageFailure) as caught:
        journal.sync_if_dirty()
    assert "fsync" in caught.value.message and "Input/output error" in caught.value.message
    monkeypatch.undo()                          # fsync would work again now: still refused
    with pytest.raises(StorageFailure):
        journal.sync_if_dirty()
    with pytest.raises(StorageFailure):
        journal.add(b"seven", 7, 1)
    assert len(calls) == 1 and journal.synced_index == 5
    journal._destroy()


def test_a_full_disk_fails_before_the_entry_exists(tmp_path: Path, monkeypatch) -> None:
    journal = _filled(RecordJournal, tmp_path, 5)
    journal._allocated = journal.size_bytes     # the next record needs new space

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(journal_module.os, "posix_fallocate", no_space)
    with pytest.raises(StorageFailure) as caught:
        journal.add(b"six", 6, 1)
    assert "No space left on device" in caught.value.message
    assert len(journal) == 5
    journal._destroy()
    monkeypatch.undo()
    assert [entry[1] for entry in _reopened(tmp_path)] == [1, 2, 3, 4, 5]


# ---- snapshots -----------------------------------------------------------------------------------
def _serializer(path: Path) -> storage.CheckedSerializer:
    return storage.make_checked(Serializer(str(path), 1000, False, None, None, None))


def _record_syncs_and_renames(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    events: list[str] = []
    fsync, replace = storage.os.fsync, storage.os.replace

    def recording_fsync(fd: int) -> None:
        events.append("fsync")
        fsync(fd)

    def recording_replace(source, target) -> None:
        events.append(f"rename {Path(source).name}")
        replace(source, target)
    monkeypatch.setattr(storage.os, "fsync", recording_fsync)
    monkeypatch.setattr(storage.os, "replace", recording_replace)
    return events


def test_a_snapshot_is_checksummed_private_and_synced_before_the_rename(tmp_path: Path,
                                                                        monkeypatch) -> None:
    path = tmp_path / "raft.snapshot"
    serializer = _serializer(path)
    events = _record_syncs_and_renames(monkeypatch)
    serializer.serialize(({"state": 1}, (b"b", 6, 1), (b"a", 5, 1), set()), 5)
    assert serializer.checkSerializing() == (SERIALIZER_STATE.SUCCESS, 5)
    assert events[:2] == ["fsync", "rename raft.snapshot.tmp"] and events[2:] == ["fsync"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(storage.SNAPSHOT_MAGIC)
    assert storage.load_snapshot(str(path))[0] == {"state": 1}


def _receive(serializer: storage.CheckedSerializer, data: bytes) -> bool:
    chunks = [data[i:i + 100] for i in range(0, len(data), 100)] + [b""]
    results = [serializer.setTransmissionData((chunk, i == 0, i == len(chunks) - 1))
               for i, chunk in enumerate(chunks)]
    assert not any(results[:-1])
    return results[-1]


def test_a_received_snapshot_is_checked_and_synced_before_it_is_used(tmp_path: Path,
                                                                      monkeypatch) -> None:
    path = tmp_path / "raft.snapshot"
    path.write_bytes(b"the old snapshot")
    serializer = _serializer(path)
    good = storage.encode_snapshot(({"k": "v" * 500}, (b"b", 9, 2), (b"a", 8, 2), set()))
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0x10
    assert _receive(serializer, bytes(damaged)) is False       # not acknowledged, not used
    assert path.read_bytes() == b"the old snapshot"
    events = _record_syncs_and_renames(monkeypatch)
    assert _receive(serializer, good) is True
    assert events == ["fsync", "rename raft.snapshot.1.tmp", "fsync"]
    assert path.read_bytes() == good and path.stat().st_mode & 0o777 == 0o600


class _RunsCode:
    """Unpickling this would create ``marker``: what a hostile snapshot would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def test_a_snapshot_builds_only_the_state_classes(tmp_path: Path) -> None:
    """A snapshot reaches a follower from the leader: even with a valid checksum, one naming
    anything beyond the state's own classes is refused, and builds nothing."""
    from pysyncobj.node import TCPNode
    from consensus_store.state import StateMachine
    path = str(tmp_path / "raft.snapshot")
    machine = StateMachine()
    state = ({"machine": machine}, (b"b", 9, 2), (b"a", 8, 2), {TCPNode("127.0.0.1:1")})
    storage.replace_file(path, storage.encode_snapshot(state), sync=False)
    loaded = storage.load_snapshot(path)
    assert isinstance(loaded[0]["machine"], StateMachine) and loaded[1] == (b"b", 9, 2)
    marker = tmp_path / "ran"
    storage.replace_file(path, storage.encode_snapshot(({"x": _RunsCode(marker)},)), sync=False)
    with pytest.raises(storage.StorageCorrupt, match="may not hold"):
        storage.load_snapshot(path)
    assert not marker.exists()
