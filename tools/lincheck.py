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

CLI: python tools/lincheck.py [--timeout S] FILE...   exit 0 all linearizable,
1 some not, 2 unreadable or malformed input, 3 the time bound was hit.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READ, WRITE, CAS = "read", "write", "cas"
_FUNCTIONS = (READ, WRITE, CAS)
_EVENT_TYPES = ("invoke", "ok", "fail", "info")
JEPSEN_KEY = "register"  # Jepsen etcd logs hold a single, unnamed register
_PREFIX_SHOWN = 6  # last steps of the longest linearizable prefix to explain


class HistoryError(ValueError):
    """The history is unreadable or malformed."""


@dataclass(frozen=True)
class Operation:
    """One client operation. value: written value, (from, to) for cas, None for
    reads. result: the value a read returned; False for a write / cas that
    definitely failed (it is then ignored). return_time None: outcome unknown."""

    process: Any
    f: str
    key: Any
    value: Any
    invoke_time: float
    return_time: float | None
    result: Any = None


@dataclass(frozen=True)
class CheckResult:
    linearizable: bool | None  # None: the time bound was hit first
    key: Any = None  # the first key that is not linearizable (or timed out)
    explanation: str = ""


# ----------------------------------------------------------------------------- search


def _freeze(value: Any) -> Any:
    """Lists become tuples so values can live in the memo set."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _effective_ops(ops: list[Operation]) -> list[Operation]:
    """Drop operations that cannot matter: failures, unknown reads, and unknown
    writes / cas producing a value nothing observes (repeated to a fixed point)."""
    kept = [op for op in ops if not _is_failure(op) and not (op.f == READ and op.return_time is None)]
    while True:
        observed = {None} | {_freeze(op.result) for op in kept if op.f == READ}
        observed |= {_freeze(op.value)[0] for op in kept if op.f == CAS}
        pruned = [op for op in kept if op.return_time is not None or _produced(op) in observed]
        if len(pruned) == len(kept):
            return kept
        kept = pruned


def _is_failure(op: Operation) -> bool:
    return op.f != READ and op.result is False


def _produced(op: Operation) -> Any:
    value = _freeze(op.value)
    return value[1] if op.f == CAS else value


def _step_spec(op: Operation) -> tuple[str, Any, Any]:
    """(function, argument, cas target) with hashable values."""
    if op.f == READ:
        return READ, _freeze(op.result), None
    if op.f == WRITE:
        return WRITE, _freeze(op.value), None
    old, new = _freeze(op.value)
    return CAS, old, new


class _Timeout(Exception):
    pass


def _check_key(ops: list[Operation], deadline: float | None) -> tuple[bool, str]:
    """WGL search over one key's operations. Returns (ok, explanation)."""
    n = len(ops)
    finite = [op.return_time is not None for op in ops]
    n_finite = sum(finite)
    if n_finite == 0:
        return True, ""
    specs = [_step_spec(op) for op in ops]
    impossible = _unwritten_observation(ops, specs)
    if impossible is not None:  # fast path: the search would be exponential here
        return False, impossible
    # Entry i < n is the call of op i, entry n + i its return; 2n and 2n + 1 are the
    # head and tail sentinels. At equal times calls come first: touching intervals
    # count as concurrent.
    timeline = [(op.invoke_time, 0, i) for i, op in enumerate(ops)]
    timeline += [(op.return_time, 1, n + i) for i, op in enumerate(ops) if finite[i]]
    timeline.sort()
    head, tail = 2 * n, 2 * n + 1
    nxt, prv = [tail] * (2 * n + 2), [head] * (2 * n + 2)
    last = head
    for _, _, entry in timeline:
        nxt[last], prv[entry], last = entry, last, entry
    prv[tail] = last
    bits = [1 << i for i in range(n)]

    state: Any = None
    linearized, done, steps = 0, 0, 0
    # The stack is a chain of (lifted call entry, state before it, rest) tuples, so
    # remembering the best path so far costs O(1) instead of a copy.
    stack: tuple | None = None
    depth = 0
    seen: set[tuple[int, Any]] = set()
    best_score, best_stack, best_state = -1, None, None
    entry = nxt[head]
    while True:  # list surgery is inlined: this loop is the whole cost of a check
        steps += 1
        if deadline is not None and steps & 0x3FF == 0 and time.monotonic() > deadline:
            raise _Timeout
        if entry < n:  # a call: try to linearize it here
            kind, arg, target = specs[entry]
            if kind is WRITE:
                allowed, new_state = True, arg
            else:
                allowed, new_state = state == arg, (target if kind is CAS else state)
            if allowed:
                memo = (linearized | bits[entry], new_state)
                if memo not in seen:
                    seen.add(memo)
                    stack, depth = (entry, state, stack), depth + 1
                    linearized, state = memo
                    nxt[prv[entry]], prv[nxt[entry]] = nxt[entry], prv[entry]
                    if finite[entry]:
                        ret = n + entry
                        nxt[prv[ret]], prv[nxt[ret]] = nxt[ret], prv[ret]
                        done += 1
                        if done == n_finite:
                            return True, ""
                    score = done * (n + 1) + depth  # furthest in ok operations, then in all
                    if score > best_score:
                        best_score, best_stack, best_state = score, stack, state
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:  # a return: its operation can no longer be placed, backtrack
            if stack is None:
                return False, _explain(ops, _path(best_stack), best_state)
            entry, state, stack = stack
            depth -= 1
            linearized ^= bits[entry]
            if finite[entry]:
                ret = n + entry
                nxt[prv[ret]] = prv[nxt[ret]] = ret
                done -= 1
            nxt[prv[entry]] = prv[nxt[entry]] = entry
            entry = nxt[entry]


def _unwritten_observation(ops: list[Operation], specs: list[tuple[str, Any, Any]]) -> str | None:
    """An ok read or cas expecting a value that no operation ever writes."""
    written = {None} | {arg if kind is WRITE else target for kind, arg, target in specs if kind is not READ}
    for op, (kind, arg, _) in zip(ops, specs):
        if kind is not WRITE and op.return_time is not None and arg not in written:
            return f"no operation ever writes {_show(arg)}, yet:\n  {_describe(op)}"
    return None


def _path(stack: tuple | None) -> list[int]:
    """Call entries of a stack chain, oldest first."""
    path = []
    while stack is not None:
        path.append(stack[0])
        stack = stack[2]
    return path[::-1]


def _show(value: Any) -> str:
    """Values as Jepsen prints them: nil, 3, [1 2]."""
    if isinstance(value, list | tuple):
        return "[" + " ".join(map(_show, value)) + "]"
    return "nil" if value is None else str(value)


def _describe(op: Operation) -> str:
    ret = "unknown" if op.return_time is None else f"{op.return_time:g}"
    value = op.result if op.f == READ else op.value
    return f"{op.process} {op.f} {_show(value)} [{op.invoke_time:g}, {ret}]"


def _explain(ops: list[Operation], prefix: list[int], state: Any) -> str:
    """Longest linearizable prefix found, then the operations that could not follow it."""
    placed = set(prefix)
    pending = [i for i in range(len(ops)) if i not in placed]
    first_return = min(ops[i].return_time for i in pending if ops[i].return_time is not None)
    stuck = sorted((i for i in pending if ops[i].invoke_time <= first_return), key=lambda i: ops[i].invoke_time)
    lines = [f"longest linearizable prefix: {len(prefix)} of {len(ops)} operations"]
    if len(prefix) > _PREFIX_SHOWN:
        lines.append(f"  ... {len(prefix) - _PREFIX_SHOWN} earlier operations")
    lines += [f"  {_describe(ops[i])}" for i in prefix[-_PREFIX_SHOWN:]]
    lines.append(f"register is then {_show(state)}; none of these can be linearized next:")
    lines += [f"  {_describe(ops[i])}" for i in stuck]
    return "\n".join(lines)


def check_operations(ops: list[Operation], timeout_s: float | None = None) -> CheckResult:
    """Check each key's operations independently; report the first failing key."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    by_key: dict[Any, list[Operation]] = {}
    for op in ops:
        if op.f not in _FUNCTIONS:
            raise HistoryError(f"unknown function {op.f!r}")
        by_key.setdefault(op.key, []).append(op)
    for key, key_ops in by_key.items():
        try:
            ok, why = _check_key(_effective_ops(key_ops), deadline)
        except _Timeout:
            return CheckResult(None, key, f"key {key!r}: timed out after {timeout_s:g} s")
        if not ok:
            return CheckResult(False, key, f"key {key!r}: {why}")
    return CheckResult(True)


# ----------------------------------------------------------------------------- parsing

_JEPSEN_LINE = re.compile(
    r"^INFO\s+jepsen\.util\s+-\s+(\S+)\s+:(invoke|ok|fail|info)\s+:(read|write|cas)"
    r"\s+(nil|-?\d+|\[\s*(?:nil|-?\d+)\s+(?:nil|-?\d+)\s*\]|:[\w-]+)\s*$"
)


def _jepsen_value(text: str) -> Any:
    if text == "nil":
        return None
    if text.startswith("["):
        return [_jepsen_value(part) for part in text[1:-1].split()]
    if text.startswith(":"):
        return text  # a keyword such as :timed-out, only on fail / info lines
    return int(text)


def _parse_jepsen(lines: list[str]) -> list[tuple[float, dict]]:
    events = []
    for number, line in enumerate(lines, start=1):
        match = _JEPSEN_LINE.match(line.strip())
        if match:
            process, kind, f, value = match.groups()
            process = int(process) if process.isdigit() else process
            events.append((float(number), {"process": process, "type": kind, "f": f,
                                           "key": JEPSEN_KEY, "value": _jepsen_value(value)}))
    return events


def _parse_json_lines(lines: list[str]) -> list[tuple[float, dict]]:
    events = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                event = json.loads(line)
            except json.JSONDecodeError as err:
                raise HistoryError(f"line {number}: invalid JSON ({err.msg})") from None
            events.append((float(number), event))
    return events


def _event_field(event: Any, name: str, allowed: tuple[str, ...] | None = None) -> Any:
    if not isinstance(event, Mapping) or name not in event:
        raise HistoryError(f"event without {name!r}: {event!r}")
    if allowed is not None and event[name] not in allowed:
        raise HistoryError(f"bad {name!r} {event[name]!r}; expected one of {', '.join(allowed)}")
    return event[name]


def _operations_from(positioned: list[tuple[float, Any]]) -> list[Operation]:
    """Pair each completion with its process's most recent open invoke."""
    times = [event.get("time") if isinstance(event, Mapping) else None for _, event in positioned]
    if all(isinstance(t, int | float) for t in times) and all(a < b for a, b in zip(times, times[1:])):
        positioned = [(float(t), event) for t, (_, event) in zip(times, positioned)]
    open_ops: dict[Any, list[tuple[float, dict]]] = {}
    ops: list[Operation] = []
    for at, event in positioned:
        kind = _event_field(event, "type", _EVENT_TYPES)
        f = _event_field(event, "f", _FUNCTIONS)
        process = _freeze(_event_field(event, "process"))
        if kind == "invoke":
            if f == CAS and not (isinstance(event.get("value"), list | tuple) and len(event["value"]) == 2):
                raise HistoryError(f"cas value must be [from, to]: {event!r}")
            open_ops.setdefault(process, []).append((at, event))
            continue
        if not open_ops.get(process):
            raise HistoryError(f"{kind} of process {process!r} at {at:g} has no open invoke")
        invoked_at, invoke = open_ops[process].pop()
        if invoke["f"] != f:
            raise HistoryError(f"{kind} {f} of process {process!r} at {at:g} follows an invoke of {invoke['f']}")
        if kind != "fail":  # a failed operation had no effect: drop it
            ops.append(_operation(invoke, invoked_at, None if kind == "info" else at, event.get("value")))
    for pending in open_ops.values():  # still open at the end: outcome unknown
        ops += [_operation(invoke, at, None, None) for at, invoke in pending]
    return ops


def _operation(invoke: Mapping, invoked_at: float, returned_at: float | None, value: Any) -> Operation:
    f = invoke["f"]
    result = _freeze(value) if f == READ else True
    return Operation(_freeze(invoke["process"]), f, _freeze(invoke.get("key")), _freeze(invoke.get("value")),
                     invoked_at, returned_at, result)


def check_events(events: Iterable[Mapping], timeout_s: float | None = None) -> CheckResult:
    """Check a history given as JSON-lines style event dicts in real-time order."""
    return check_operations(_operations_from([(float(i), e) for i, e in enumerate(events)]), timeout_s)


def check_file(path: str | Path, timeout_s: float | None = None) -> CheckResult:
    """Check a Jepsen log or a JSON-lines history file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise HistoryError(f"cannot read: {err}") from None
    first = next((line.strip() for line in lines if line.strip()), "")
    positioned = _parse_json_lines(lines) if first.startswith("{") else _parse_jepsen(lines)
    if not positioned:
        raise HistoryError("no operations found")
    return check_operations(_operations_from(positioned), timeout_s)


# ----------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class OpHandle:
    id: int
    process: Any


class HistoryRecorder:
    """Thread-safe recorder of a history in the JSON-lines event form.

    Call invoke() just before sending a request and ok() / fail() / info() just
    after its outcome is known. Each event is appended with its time.monotonic()
    stamp under one lock, so the event order is consistent with real time."""

    _SAME = object()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[dict] = []
        self._open: dict[int, dict] = {}  # handle id -> its invoke event
        self._busy: set[Any] = set()  # processes with an open operation

    def invoke(self, process: Any, f: str, key: Any, value: Any = None) -> OpHandle:
        if f not in _FUNCTIONS:
            raise ValueError(f"unknown function {f!r}")
        with self._lock:
            if process in self._busy:  # completions are matched by process
                raise ValueError(f"process {process!r} already has an open operation")
            self._busy.add(process)
            event = self._append(process, "invoke", f, key, list(value) if f == CAS else value)
            handle = OpHandle(len(self._events), process)
            self._open[handle.id] = event
            return handle

    def ok(self, handle: OpHandle, value: Any = _SAME) -> None:
        """Complete successfully; a read must pass the value it returned."""
        self._complete(handle, "ok", value)

    def fail(self, handle: OpHandle) -> None:
        self._complete(handle, "fail", HistoryRecorder._SAME)

    def info(self, handle: OpHandle) -> None:
        """The outcome is unknown (timeout, lost connection...)."""
        self._complete(handle, "info", HistoryRecorder._SAME)

    def events(self) -> list[dict]:
        with self._lock:
            return [dict(event) for event in self._events]

    def dump(self, path: str | Path) -> None:
        text = "".join(json.dumps(event) + "\n" for event in self.events())
        Path(path).write_text(text, encoding="utf-8")

    def _complete(self, handle: OpHandle, kind: str, value: Any) -> None:
        with self._lock:
            invoke = self._open.get(handle.id)
            if invoke is None:
                raise ValueError(f"{handle} is not an open operation")
            if value is HistoryRecorder._SAME:
                if invoke["f"] == READ and kind == "ok":
                    raise ValueError("ok() of a read needs the value it returned")
                value = invoke["value"]
            del self._open[handle.id]
            self._busy.discard(handle.process)
            self._append(handle.process, kind, invoke["f"], invoke["key"], value)

    def _append(self, process: Any, kind: str, f: str, key: Any, value: Any) -> dict:
        event = {"process": process, "type": kind, "f": f, "key": key, "value": value,
                 "time": time.monotonic()}
        self._events.append(event)
        return event


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check histories for linearizability.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="Jepsen log or JSON-lines history")
    parser.add_argument("--timeout", type=float, default=None, metavar="S", help="time bound per file")
    args = parser.parse_args(argv)
    codes = set()
    for path in args.files:
        try:
            result = check_file(path, args.timeout)
        except HistoryError as err:
            print(f"{path}: error: {err}", file=sys.stderr)
            codes.add(2)
            continue
        if result.linearizable is None:
            print(f"{path}: unknown (timed out)")
            codes.add(3)
        elif result.linearizable:
            print(f"{path}: linearizable")
        else:
            print(f"{path}: not linearizable")
            print("  " + result.explanation.replace("\n", "\n  "))
            codes.add(1)
    return next((code for code in (2, 1, 3) if code in codes), 0)


if __name__ == "__main__":
    sys.exit(main())
