"""Histories in and out of the checker: the Jepsen log and JSON-lines formats (parsed into
``Operation`` pairs for ``search``), ``check_events`` / ``check_file``, and ``HistoryRecorder``,
which records a live client's history in the JSON-lines form."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus_store.testing.lincheck.search import (CAS, EVENT_TYPES, FUNCTIONS, JEPSEN_KEY,
                                                     READ, CheckResult, HistoryError, Operation,
                                                     check_operations, freeze)

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
        kind = _event_field(event, "type", EVENT_TYPES)
        f = _event_field(event, "f", FUNCTIONS)
        process = freeze(_event_field(event, "process"))
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
    result = freeze(value) if f == READ else True
    return Operation(freeze(invoke["process"]), f, freeze(invoke.get("key")), freeze(invoke.get("value")),
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
        if f not in FUNCTIONS:
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

