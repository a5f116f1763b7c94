"""The register model and the WGL search (see the package docstring): ``Operation``,
``CheckResult``, ``check_operations``.  Operations reach it already paired (``history``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

READ, WRITE, CAS = "read", "write", "cas"
FUNCTIONS = (READ, WRITE, CAS)
EVENT_TYPES = ("invoke", "ok", "fail", "info")
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


def freeze(value: Any) -> Any:
    """Lists become tuples so values can live in the memo set."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value


def _effective_ops(ops: list[Operation]) -> list[Operation]:
    """Drop operations that cannot matter: failures, unknown reads, and unknown
    writes / cas producing a value nothing observes (repeated to a fixed point)."""
    kept = [op for op in ops if not _is_failure(op) and not (op.f == READ and op.return_time is None)]
    while True:
        observed = {None} | {freeze(op.result) for op in kept if op.f == READ}
        observed |= {freeze(op.value)[0] for op in kept if op.f == CAS}
        pruned = [op for op in kept if op.return_time is not None or _produced(op) in observed]
        if len(pruned) == len(kept):
            return kept
        kept = pruned


def _is_failure(op: Operation) -> bool:
    return op.f != READ and op.result is False


def _produced(op: Operation) -> Any:
    value = freeze(op.value)
    return value[1] if op.f == CAS else value


def _step_spec(op: Operation) -> tuple[str, Any, Any]:
    """(function, argument, cas target) with hashable values."""
    if op.f == READ:
        return READ, freeze(op.result), None
    if op.f == WRITE:
        return WRITE, freeze(op.value), None
    old, new = freeze(op.value)
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
        if op.f not in FUNCTIONS:
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
