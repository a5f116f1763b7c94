"""The GC pause of state copies (node/engine/heap.py): a snapshot's and a backup's overlap."""
from __future__ import annotations

import gc

from consensus_store.node.engine.heap import GcPause


def test_overlapping_pauses_keep_the_gc_off_until_the_last_ends() -> None:
    was_on = gc.isenabled()
    gc.enable()
    try:
        snapshot = GcPause()
        backup = GcPause()
        assert not gc.isenabled()
        snapshot.release()
        assert not gc.isenabled()          # the backup's copy is still alive
        snapshot.release()                 # idempotent: does not end the backup's pause
        assert not gc.isenabled()
        backup.release()
        assert gc.isenabled()
    finally:
        if not was_on:
            gc.disable()


def test_a_gc_that_was_off_stays_off() -> None:
    was_on = gc.isenabled()
    gc.disable()
    try:
        pause = GcPause()
        pause.release()
        assert not gc.isenabled()
    finally:
        if was_on:
            gc.enable()
