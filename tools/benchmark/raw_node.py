"""One raw pysyncobj node for ``tools/bench.py``'s engine baseline (not part of the product).

Runs a plain ``SyncObj`` with a ``pysyncobj.batteries.ReplDict`` consumer on 127.0.0.1 with
pysyncobj's default configuration (``autoTick=True``, ``appendEntriesUseBatch=True``,
``appendEntriesPeriod=0.1``, no journal file, no password).  The only setting changed is
``bindAddress``, so the node listens on 127.0.0.1 instead of 0.0.0.0.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout (pysyncobj's own
output goes to stderr).  Commands:

* ``{"cmd": "status"}`` -> ``{"ok": true, "is_leader", "leader", "ready"}``
* ``{"cmd": "load", "concurrency", "seconds", "max_ops", "warmup", "value"}`` -> runs
  ``ReplDict.set`` with at most ``concurrency`` commands in flight (a semaphore released by the
  completion callback, which pysyncobj runs on its tick thread), for at most ``seconds`` and at
  most ``max_ops`` commands, after an unmeasured warm-up; answers ``{"ok", "ops", "errors",
  "elapsed_s", "latencies_ms", "first_error"}``.  Only meaningful on the leader.
* ``{"cmd": "quit"}`` (or end of stdin) -> destroy the node and exit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
from pysyncobj.batteries import ReplDict

KEY_POOL = 1024
DRAIN_TIMEOUT_S = 5.0   # a lost callback must not hang the driver


@dataclass
class LoadStats:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    last_completion: float = 0.0


def run_load(store: ReplDict, concurrency: int, seconds: float, max_ops: int,
             value: str) -> tuple[LoadStats, float]:
    """Bounded in-flight ``set`` calls; returns the stats and the elapsed wall time."""
    slots = threading.Semaphore(concurrency)
    stats = LoadStats()
    lock = threading.Lock()

    def callback_for(started: float) -> Any:
        def done(result: Any, error: int) -> None:
            now = time.perf_counter()
            with lock:
                if error == FAIL_REASON.SUCCESS:
                    stats.latencies_ms.append((now - started) * 1000)
                else:
                    stats.errors += 1
                    stats.first_error = stats.first_error or f"FAIL_REASON {error}"
                stats.last_completion = now
            slots.release()
        return done

    start = time.perf_counter()
    deadline = start + seconds
    for issued in range(max_ops):
        if not slots.acquire(timeout=max(0.0, deadline - time.perf_counter())):
            break
        if time.perf_counter() >= deadline:
            slots.release()
            break
        store.set(f"k{issued % KEY_POOL:015d}", value, callback=callback_for(time.perf_counter()))
    drain_deadline = time.perf_counter() + DRAIN_TIMEOUT_S
    for _ in range(concurrency):   # wait for the commands still in flight
        slots.acquire(timeout=max(0.0, drain_deadline - time.perf_counter()))
    with lock:
        end = max(stats.last_completion, start)
        return stats, end - start


def handle(command: dict[str, Any], node: SyncObj, store: ReplDict) -> dict[str, Any]:
    if command["cmd"] == "status":
        leader = node._getLeader()
        return {"ok": True, "is_leader": node._isLeader(), "ready": node.isReady(),
                "leader": leader.address if leader is not None else None}
    if command["cmd"] == "load":
        if not node._isLeader():
            return {"ok": False, "error": "not the leader"}
        value = str(command["value"])
        concurrency, max_ops = int(command["concurrency"]), int(command["max_ops"])
        if command.get("warmup", 0) > 0:
            run_load(store, concurrency, float(command["warmup"]), max_ops, value)
        stats, elapsed = run_load(store, concurrency, float(command["seconds"]), max_ops, value)
        return {"ok": True, "ops": len(stats.latencies_ms), "errors": stats.errors,
                "elapsed_s": elapsed, "first_error": stats.first_error,
                "latencies_ms": [round(x, 4) for x in stats.latencies_ms]}
    return {"ok": False, "error": f"unknown command {command['cmd']!r}"}


def serve(node: SyncObj, store: ReplDict, out: TextIO) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if command.get("cmd") == "quit":
            return
        try:
            answer = handle(command, node, store)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, never a hang
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self", dest="self_address", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--peers", required=True, help="comma-separated 127.0.0.1:PORT list")
    args = parser.parse_args()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")   # answers only; everything else -> stderr
    sys.stdout = sys.stderr
    store = ReplDict()
    conf = SyncObjConf(bindAddress=args.self_address)   # defaults otherwise, see module doc
    node = SyncObj(args.self_address, args.peers.split(","), conf, consumers=[store])
    try:
        serve(node, store, out)
    finally:
        node.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
