"""Snapshots written on a helper thread, so a large state does not stop the loop (heartbeats).

pysyncobj (``useFork=False``) serializes the whole state inside a tick: for 1M keys that held
the loop for seconds, past the election timeout.  ``BackgroundSerializer`` starts a thread
instead and tells pysyncobj "still serializing" until it is done (with the cyclic GC off
meanwhile, and a pickler that lets the loop's thread run: storage.encode_snapshot).  The
thread takes a consistent copy of the state machine a chunk at a time under ``state_lock``
(``state.chunked_copy.copy_in_chunks``: apply waits a chunk at most), then pickles, compresses and
writes it.  The copy ends at some applied index Y later than the one pysyncobj asked for, so
the snapshot names entries Y-1 and Y as its last two, and pysyncobj cuts the journal before
Y-1 (``ReplicatedStore.snapshot_copy`` in raft.py picks them).  The file is pysyncobj's format
(a ``StateMachine`` pickles as its plain state either way: ``PlainMachine``), so old and new
snapshots load alike, and until the thread is done pysyncobj sends no snapshot to followers.

Private pysyncobj names used: Serializer's ``_Serializer__pid``, ``_Serializer__currentID``.
"""
from __future__ import annotations

import copyreg
import logging
import threading
import time
from typing import Any, Callable

from pysyncobj.config import SERIALIZER_STATE

from consensus_store.node.engine.heap import GcPause
from consensus_store.node.engine.storage import (CheckedSerializer, StorageFailure,
                                                 encode_snapshot, replace_file)
from consensus_store.state import StateMachine

log = logging.getLogger("consensus_store.storage")

_IN_THREAD = -3          # our value of pysyncobj's ``__pid``: a thread is serializing
# (pysyncobj's snapshot tuple, its first entry's index) -> (the tuple to write, its index)
Copier = Callable[[Any], tuple[Any, int]]


class PlainMachine:
    """Pickles exactly as a ``StateMachine`` holding ``state`` does (its ``__getstate__`` is
    that plain state), from a copy that apply no longer changes."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    # pickle's NEWOBJ checks that the class it names is the object's ``__class__``
    __class__ = property(lambda self: StateMachine)   # type: ignore[assignment]

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return copyreg.__newobj__, (StateMachine,), self.state


class BackgroundSerializer(CheckedSerializer):
    """Installed per instance (class swap, like CheckedSerializer) once ``copier`` is set."""

    copier: Copier | None = None
    _outcome: tuple[int, int] | StorageFailure | None = None
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """A snapshot is being written (or its outcome not yet taken by pysyncobj)."""
        return self._Serializer__pid != 0

    def serialize(self, data: Any, id: int) -> None:   # noqa: A002 - pysyncobj's name
        if self.copier is None:
            super().serialize(data, id)
            return
        if self._Serializer__pid != 0:
            return
        self._Serializer__pid = _IN_THREAD
        self._Serializer__currentID = id
        self._outcome = None
        self.thread = threading.Thread(target=self._serialize, args=(data,), name="snapshot",
                                       daemon=True)
        self.thread.start()

    def _serialize(self, data: Any) -> None:
        assert self.copier is not None
        started = time.monotonic()
        paused = GcPause()          # the copy's millions of objects: no full collections
        try:
            state, index = self.copier(data)
            copied = time.monotonic()
            encoded = encode_snapshot(state)
            replace_file(self._path(), encoded, sync=True)
            log.info("snapshot up to index %d written in %.2f s (copy %.2f s), %d bytes",
                     index + 1, time.monotonic() - started, copied - started, len(encoded))
            self._outcome = (-1, index)
        except StorageFailure as exc:        # stops the node, at the next tick
            self._outcome = exc
        except Exception:  # noqa: BLE001 - as pysyncobj: the snapshot fails, the node goes on
            log.exception("cannot serialize the state for a snapshot")
            self._outcome = (-2, self._Serializer__currentID)
        finally:
            paused.release()

    def checkSerializing(self) -> tuple[int, Any]:
        if self._Serializer__pid == _IN_THREAD:
            outcome = self._outcome
            if outcome is None:
                return SERIALIZER_STATE.SERIALIZING, self._Serializer__currentID
            if isinstance(outcome, StorageFailure):
                self._Serializer__pid = 0
                raise outcome
            self._Serializer__pid, self._Serializer__currentID = outcome
        return super().checkSerializing()


def make_background(serializer: CheckedSerializer, copier: Copier) -> BackgroundSerializer:
    serializer.__class__ = BackgroundSerializer
    assert isinstance(serializer, BackgroundSerializer)
    serializer.copier = copier
    return serializer
