"""The recorded client workload: ``Workload`` (worker threads doing put / cas / reads at every
level), the ``OpRecord`` of each operation, and the lincheck history they feed.

The outcome rules the checks rely on are in ``Workload``'s docstring.
"""
from __future__ import annotations

import collections
import json
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from consensus_store.testing.polling import poll_until
from consensus_store.testing.lincheck import HistoryRecorder


READ_LEVELS = ("local", "session", "linearizable")
DEFAULT_MIX = {"put": 3, "cas": 2, "linearizable": 2, "session": 2, "local": 1}


@dataclass
class OpRecord:
    """One client operation with everything the checks need (a read's value as returned)."""

    process: int
    f: str                          # put | cas | read
    key: str
    value: Any                      # put: the value; cas: [expected, new]; read: None
    level: str | None               # read consistency
    invoke: float
    complete: float | None = None
    outcome: str = "open"           # ok | fail | info
    result: Any = None              # read: the value returned (None: absent)
    revision: int | None = None     # mod_revision of the record returned (0: absent)
    observed: tuple[Any, int] | None = None   # (value, mod_revision) seen by a failed cas
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    def describe(self) -> str:
        what = f"{self.f}"
        if self.f == "read":
            what += f"[{self.level}] -> {self.result!r}@{self.revision}"
        else:
            what += f" {self.value!r}"
            if self.revision is not None:
                what += f" @{self.revision}"
        end = "open" if self.complete is None else f"{self.complete:.3f}"
        return (f"p{self.process} {what} on {self.key!r}: {self.outcome}"
                f"{' (' + self.error + ')' if self.error else ''} [{self.invoke:.3f}, {end}]")


class Workload:
    """Client workers (threads, each its own Client and process id) doing put / get (every
    read level) / cas on a few keys, recording every operation.

    Outcome rules (what the checkers rely on):
    - ok: acknowledged; reads record the value (and mod_revision) they returned;
    - fail: definitely no effect: a cas answered CompareFailed, any failed read;
    - info: unknown: a write whose request may have been sent and that did not succeed
      (Timeout, Unavailable, or anything unexpected, which is also reported as an anomaly).
    Written values are unique (``"<process>-<seq>"``), so a value names its write.
    With ``native_endpoints``, odd-numbered workers use the native protocol (its writes take
    the group-commit path without a task), the others HTTP.
    """

    def __init__(self, endpoints: list[str], token: str, *, workers: int = 4,
                 keys: Iterable[str] = ("k0", "k1", "k2"), seed: int = 0,
                 op_timeout: float = 5.0, mix: dict[str, int] | None = None,
                 think_s: float = 0.0, max_ops_per_worker: int = 1_000_000,
                 native_endpoints: list[str] | None = None) -> None:
        self.history = HistoryRecorder()   # writes, cas, linearizable reads
        self.endpoints = list(endpoints)
        self.native_endpoints = list(native_endpoints or [])   # odd workers use these
        self.token = token
        self.workers = workers
        self.keys = list(keys)
        self.seed = seed
        self.op_timeout = op_timeout
        self.mix = dict(mix or DEFAULT_MIX)
        self.think_s = think_s
        self.max_ops_per_worker = max_ops_per_worker
        self.ops: list[OpRecord] = []
        self.unexpected: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- control ---------------------------------------------------------------------------------
    def start(self) -> None:
        for process in range(self.workers):
            thread = threading.Thread(target=self._worker, args=(process,),
                                      name=f"worker-{process}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the workers; True if all finished (each ends its current op first)."""
        self._stop.set()
        deadline = time.monotonic() + (timeout if timeout is not None else self.op_timeout + 15)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def count(self, outcome: str | None = None, f: str | None = None) -> int:
        with self._lock:
            return sum(1 for op in self.ops if (outcome is None or op.outcome == outcome)
                       and (f is None or op.f == f))

    def ok_writes(self) -> int:
        with self._lock:
            return sum(1 for op in self.ops if op.outcome == "ok" and op.f != "read")

    def wait_for_progress(self, writes: int, timeout: float) -> bool:
        """Wait until ``writes`` more writes are acknowledged (bounded poll)."""
        target = self.ok_writes() + writes
        return bool(poll_until(lambda: self.ok_writes() >= target, timeout, 0.05))

    def summary(self) -> dict[str, int]:
        with self._lock:
            ops = list(self.ops)
        counts: dict[str, int] = collections.Counter()
        for op in ops:
            name = op.f if op.f != "read" else f"read-{op.level}"
            counts[f"{name}:{op.outcome}"] += 1
        counts["total"] = len(ops)
        return dict(sorted(counts.items()))

    # ---- one worker --------------------------------------------------------------------------------
    def _worker(self, process: int) -> None:
        from consensus_store.client import Client, RetryPolicy
        rng = random.Random(f"{self.seed}-{process}")
        use_native = self.native_endpoints and process % 2 == 1
        endpoints = list(self.native_endpoints if use_native else self.endpoints)
        rng.shuffle(endpoints)
        kinds = list(self.mix)
        weights = [self.mix[k] for k in kinds]
        last_seen: dict[str, Any] = {}
        retry = RetryPolicy(max_tries=50, backoff_s=0.05, max_backoff_s=0.5)
        client = Client(endpoints, token=self.token, timeout=self.op_timeout, retry=retry,
                        client_id=f"p{process}-{os.urandom(4).hex()}")
        try:
            for seq in range(self.max_ops_per_worker):
                if self._stop.is_set():
                    return
                kind = rng.choices(kinds, weights)[0]
                key = rng.choice(self.keys)
                if kind == "put":
                    self._put(client, process, key, f"{process}-{seq}", last_seen)
                elif kind == "cas":
                    self._cas(client, process, key, last_seen.get(key), f"{process}-{seq}",
                              last_seen)
                else:
                    self._read(client, process, key, kind, last_seen)
                if self.think_s:
                    self._stop.wait(rng.uniform(0, 2 * self.think_s))
        finally:
            client.close()

    def _begin(self, op: OpRecord) -> OpRecord:
        with self._lock:
            self.ops.append(op)
        return op

    def _finish(self, op: OpRecord, outcome: str, error: BaseException | None = None) -> None:
        op.complete = time.monotonic()
        op.outcome = outcome
        if error is not None:
            op.error = f"{type(error).__name__}: {getattr(error, 'message', error)}"[:200]

    def _unexpected(self, op: OpRecord, exc: BaseException) -> None:
        with self._lock:
            self.unexpected.append(f"{op.describe()}: {type(exc).__name__}: {exc}")

    def _put(self, client: Any, process: int, key: str, value: str,
             last_seen: dict[str, Any]) -> None:
        handle = self.history.invoke(process, "write", key, value)
        op = self._begin(OpRecord(process, "put", key, value, None, time.monotonic()))
        try:
            kv = client.put(key, value)
        except Exception as exc:  # noqa: BLE001 - unknown outcome (see _outcome_unknown)
            self._outcome_unknown(handle, op, exc)
        else:
            self.history.ok(handle)
            op.revision = kv.mod_revision
            self._finish(op, "ok")
            if kv.value != value or kv.key != key:
                self._unexpected(op, AssertionError(f"put answered {kv}"))
            last_seen[key] = value

    def _outcome_unknown(self, handle: Any, op: OpRecord, exc: Exception) -> None:
        """The op may or may not have taken effect; anything but a Timeout or Unavailable is
        also a finding (the client should raise nothing else for a valid request)."""
        from consensus_store.errors import Timeout, Unavailable
        if handle is not None:
            self.history.info(handle)
        self._finish(op, "info", exc)
        if not isinstance(exc, (Timeout, Unavailable)):
            self._unexpected(op, exc)

    def _cas(self, client: Any, process: int, key: str, expected: Any, value: str,
             last_seen: dict[str, Any]) -> None:
        from consensus_store.errors import CompareFailed
        handle = self.history.invoke(process, "cas", key, [expected, value])
        op = self._begin(OpRecord(process, "cas", key, [expected, value], None, time.monotonic()))
        try:
            if expected is None:
                kv = client.cas(key, value, expect_mod_revision=0)   # 0: the key is absent
            else:
                kv = client.cas(key, value, expect_value=expected)
        except CompareFailed as exc:
            self.history.fail(handle)
            current = getattr(exc, "current", None)
            if current is not None:
                op.observed = (current.value, current.mod_revision)
                last_seen[key] = current.value
            else:
                op.observed = (None, 0)
            self._finish(op, "fail", exc)
        except Exception as exc:  # noqa: BLE001 - unknown outcome (see _outcome_unknown)
            self._outcome_unknown(handle, op, exc)
        else:
            self.history.ok(handle)
            op.revision = kv.mod_revision
            self._finish(op, "ok")
            if kv.value != value:
                self._unexpected(op, AssertionError(f"cas answered {kv}"))
            last_seen[key] = value

    def _read(self, client: Any, process: int, key: str, level: str,
              last_seen: dict[str, Any]) -> None:
        linearizable = level == "linearizable"
        handle = self.history.invoke(process, "read", key) if linearizable else None
        op = self._begin(OpRecord(process, "read", key, None, level, time.monotonic()))
        try:
            kv = client.get(key, consistency=level)
        except Exception as exc:  # noqa: BLE001 - unknown outcome (see _outcome_unknown)
            self._outcome_unknown(handle, op, exc)
        else:
            value = kv.value if kv is not None else None
            if handle is not None:
                self.history.ok(handle, value)
            op.result = value
            op.revision = kv.mod_revision if kv is not None else 0
            self._finish(op, "ok")
            if value is not None:
                last_seen[key] = value

    # ---- artifacts ---------------------------------------------------------------------------------
    def dump(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        history = directory / "history.jsonl"
        self.history.dump(history)
        ops = directory / "operations.jsonl"
        with self._lock:
            text = "".join(json.dumps(op.to_json()) + "\n" for op in self.ops)
        ops.write_text(text)
        return {"history": history, "operations": ops}
