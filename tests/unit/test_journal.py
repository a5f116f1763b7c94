"""The journal rewrite after a snapshot is crash-atomic (node/journal.py), and a rewritten
journal reads back, grows and reopens like any other."""
from __future__ import annotations

from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal

from consensus_store.node.durability import make_durable
from consensus_store.node.journal import AtomicJournal, make_atomic


class _Crash(Exception):
    pass


def _journal(path: Path, entries: int) -> FileJournal:
    journal = FileJournal(str(path))
    for index in range(1, entries + 1):
        journal.add(f"command {index}".encode(), index, 1)
    return journal


def _on_disk(path: Path) -> list[tuple[bytes, int, int]]:
    reopened = FileJournal(str(path))
    try:
        return [reopened[i] for i in range(len(reopened))]
    finally:
        reopened._destroy()


def _crash_during_rewrite(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """Make every FileJournal.add fail after ``after`` more calls: the rewrite stops halfway,
    and the files on disk are what a process crash at that moment would leave."""
    calls = {"left": after}
    original = FileJournal.add

    def add(self, command, idx, term):
        if calls["left"] == 0:
            raise _Crash()
        calls["left"] -= 1
        original(self, command, idx, term)
    monkeypatch.setattr(FileJournal, "add", add)


def test_pysyncobjs_own_rewrite_loses_entries_when_it_crashes(tmp_path, monkeypatch) -> None:
    """The hazard itself, so the next test is known to test something."""
    path = tmp_path / "raft.journal"
    journal = _journal(path, 100)
    _crash_during_rewrite(monkeypatch, after=10)
    with pytest.raises(_Crash):
        journal.deleteEntriesTo(50)             # pysyncobj's in-place rewrite
    assert len(_on_disk(path)) == 10            # 40 kept entries lost


@pytest.mark.parametrize("durable", [False, True], ids=["process", "fsync"])
def test_a_crash_during_the_rewrite_leaves_the_old_journal_whole(tmp_path, monkeypatch,
                                                                 durable: bool) -> None:
    path = tmp_path / "raft.journal"
    journal = make_atomic(_journal(path, 100))
    if durable:
        journal = make_durable(journal, str(tmp_path / "raft.snapshot"))
    _crash_during_rewrite(monkeypatch, after=10)
    with pytest.raises(_Crash):
        journal.deleteEntriesTo(50)
    assert [entry[1] for entry in _on_disk(path)] == list(range(1, 101))


@pytest.mark.parametrize("durable", [False, True], ids=["process", "fsync"])
def test_a_rewritten_journal_keeps_its_tail_grows_and_reopens(tmp_path, durable: bool) -> None:
    path = tmp_path / "raft.journal"
    journal = make_atomic(_journal(path, 100))
    if durable:
        journal = make_durable(journal, str(tmp_path / "raft.snapshot"))
    journal.deleteEntriesTo(50)
    assert isinstance(journal, AtomicJournal)
    assert [journal[i][1] for i in range(len(journal))] == list(range(51, 101))
    for index in range(101, 2001):              # past the new file's first resize
        journal.add(b"x" * 100, index, 2)
    if durable:
        journal.sync_if_dirty()
    journal._destroy()
    entries = _on_disk(path)
    assert [entry[1] for entry in entries] == list(range(51, 2001))
    assert entries[0] == (b"command 51", 51, 1) and entries[-1] == (b"x" * 100, 2000, 2)
    assert not (tmp_path / "raft.journal.rewrite").exists()
