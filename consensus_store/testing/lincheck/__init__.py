"""Linearizability checker for register histories (read / write / compare-and-set).

Algorithm
    Wing & Gong's search with Lowe's memoisation (the "WGL" algorithm used by
    knossos and porcupine). The history is split by key and every key is checked
    on its own (a history is linearizable iff each key's sub-history is). For one
    key, every operation becomes a call entry and a return entry in a
    doubly-linked list ordered by time. A depth-first search walks the list from
    its head: at a call entry it tries to apply the operation to the register
    model; if that succeeds and the pair (set of linearized operations as an int
    bitset, model state) has not been seen before, the operation's two entries
    are lifted out of the list, pushed on an explicit stack, and the walk restarts
    at the head. Reaching a return entry means the operation returning there can
    no longer be placed, so the search backtracks (pops, re-links the entries,
    continues after the popped call). The search is iterative, so deep histories
    cannot exhaust Python's recursion limit.

Outcomes
    ok       the operation took effect between its invoke and its completion.
    fail     it definitely did not take effect: dropped.
    unknown  (Jepsen :info, or still open at the end): it may have taken effect at
             any time after its invoke, or never. Its return time is +infinity, so
             it has no return entry: the search may linearize it anywhere but
             succeeds as soon as every ok operation is linearized. A read with an
             unknown outcome has no effect and is dropped. Unknown writes / cas
             whose resulting value nothing ever observes are dropped up front:
             leaving them out can never make a linearization impossible.

Model
    A register per key, initially None (unset). read returns the current value;
    write v sets v; cas [from, to] requires current == from, then sets to.

Input formats (detected from the first non-empty line)
    Jepsen log:  "INFO  jepsen.util - PROCESS :TYPE :F VALUE" (tabs or spaces),
                 values nil, integers, [FROM TO] or keywords like :timed-out;
                 other lines are ignored. All operations act on one register.
    JSON Lines:  {"process": 1, "type": "invoke"|"ok"|"fail"|"info",
                 "f": "read"|"write"|"cas", "key": "k", "value": ..., "time": 1.5}
                 in real-time order; a read's value is on its ok event.
    In both, a completion belongs to the most recent open invoke of its process.
    Event positions (file line numbers) order the history; the "time" fields are
    used instead, for nicer explanations, when they are strictly increasing.

Modules: ``search`` (the model, the WGL search and ``check_operations``), ``history`` (the
two input formats, ``check_events`` / ``check_file``, and ``HistoryRecorder``).  The command
line is ``tools/lincheck.py``.
"""
from __future__ import annotations

from consensus_store.testing.lincheck.history import (HistoryRecorder, OpHandle, check_events,
                                                      check_file)
from consensus_store.testing.lincheck.search import (CAS, READ, WRITE, CheckResult, HistoryError,
                                                     Operation, check_operations)

__all__ = ["CAS", "READ", "WRITE", "CheckResult", "HistoryError", "HistoryRecorder", "OpHandle",
           "Operation", "check_events", "check_file", "check_operations"]
