"""The cyclic garbage collector and a large state.

A full collection traverses every tracked object: at 1M keys that held the GIL, and so the
node's loop (no heartbeats: elections), for 1.3-3 s.  ``LargeHeap`` keeps full collections short
once the state is large: ``gc.freeze()`` (O(1)) moves what is alive out of their reach, and
reference counting still frees it.  Cyclic garbage alive at a freeze is never collected, so
young garbage is collected first and freezes are rare: when a large state grew by a quarter,
every ``FREEZE_AFTER_ENTRIES`` entries, or after a snapshot replaced it.  This is process-wide:
an embedded node with a large state freezes its host's objects too.  ``watch_collections``
logs the collections that still hold the loop long enough to matter.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

from consensus_store.state import StateMachine

log = logging.getLogger("consensus_store.raft")

# Half the shortest default election timeout: a pause this long may cost leadership.  (Shorter
# ones happen on a loaded machine and are not worth a line.)
LONG_COLLECTION_S = 0.25
FREEZE_MIN_KEYS = 100_000          # below this a full collection takes well under 0.1 s
FREEZE_AFTER_ENTRIES = 10_000


class GcPause:
    """The cyclic GC off while a copy of a large state is alive (a snapshot's, a backup's):
    its millions of new objects would set off full collections, each holding the loop ~0.4 s at
    1M keys.  Reference counting still frees what is dropped.  Pauses nest (a snapshot and a
    backup at once): the GC comes back on when the last one is released, and only if it was
    on before the first.  ``release`` is idempotent."""

    _lock = threading.Lock()
    _held = 0
    _resume = False

    def __init__(self) -> None:
        with GcPause._lock:
            if GcPause._held == 0:
                GcPause._resume = gc.isenabled()
                gc.disable()
            GcPause._held += 1
        self._released = False

    def release(self) -> None:
        with GcPause._lock:
            if self._released:
                return
            self._released = True
            GcPause._held -= 1
            if GcPause._held == 0 and GcPause._resume:
                gc.enable()


class LargeHeap:
    def __init__(self) -> None:
        self._frozen_keys = 0
        self._frozen_revision = 0

    def after_tick(self, machine: StateMachine, replaced: bool) -> None:
        keys = len(machine)
        if keys < FREEZE_MIN_KEYS:
            return
        revision = machine.revision
        if (keys * 4 < self._frozen_keys * 5
                and revision - self._frozen_revision < FREEZE_AFTER_ENTRIES and not replaced):
            return
        self._frozen_keys, self._frozen_revision = keys, revision
        gc.collect(1)
        gc.freeze()


_collection_started = [0.0]


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _collection_started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _collection_started[0]
    if took >= LONG_COLLECTION_S:
        log.warning("a garbage collection (generation %d) held the interpreter, and so the "
                    "loop, for %.2f s", info.get("generation", -1), took)


def watch_collections() -> None:
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)
