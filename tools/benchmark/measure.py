"""Measuring: every (system, op, concurrency) point over ``--repeat`` interleaved rounds with the
CPU each side spent, the ours/other ratios, the machine's background CPU, idle CPU per process,
and embedded reads (``Node.get`` / ``Node.get_value`` in this process)."""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from consensus_store.launcher import LocalCluster, write_cluster_configs

from .common import STARTUP_TIMEOUT_S, VALUE, BenchError, Plan, Point, console, cpu_seconds, key
from .load import Target


RATIOS = [  # (label, our op, other system, its op)
    ("put vs raw pysyncobj put", "put", "raw", "put"),
    ("put vs etcd put", "put", "etcd", "put"),
    ("put vs put of the --also-durability cluster", "put", "ours-fsync", "put"),
    ("put vs put of the --also-durability cluster", "put", "ours-process", "put"),
    ("get local vs etcd serializable", "get local", "etcd", "range serializable"),
    ("get session vs etcd serializable", "get session", "etcd", "range serializable"),
    ("get linearizable vs etcd linearizable", "get linearizable", "etcd", "range linearizable"),
    ("python client (native) put vs etcd put", "client put", "etcd", "put"),
    ("python client (native) get session vs etcd serializable", "client get session", "etcd",
     "range serializable"),
]


async def measure_all(targets: list[Target], concurrencies: list[int], plan: Plan,
                      repeat: int, pids: dict[str, int],
                      only_ops: frozenset[str] = frozenset()) -> list[Point]:
    points: dict[tuple[str, str, int], Point] = {}
    warmup = Plan(plan.warmup, plan.max_ops, 0.0)
    measured = Plan(plan.seconds, plan.max_ops, 0.0)
    for round_number in range(1, repeat + 1):
        for target in targets:
            servers = [pid for name, pid in pids.items() if name.startswith(f"{target.name} ")]
            for op in target.ops:
                if only_ops and op not in only_ops:
                    continue
                for concurrency in concurrencies:
                    point = points.setdefault((target.name, op, concurrency),
                                              Point(target.name, op, concurrency))
                    if plan.warmup > 0:
                        await target.measure(op, concurrency, warmup)
                    server_before, client_before = cpu_of(servers), own_cpu_seconds()
                    run = await target.measure(op, concurrency, measured)
                    if run.ops:
                        run.server_cpu_us = (cpu_of(servers) - server_before) / run.ops * 1e6
                        run.client_cpu_us = (own_cpu_seconds() - client_before) / run.ops * 1e6
                    point.runs.append(run)
                    error = f" [red]{run.errors} errors: {run.first_error}[/]" if run.errors else ""
                    console.log(f"{round_number}/{repeat} {target.name:>4} {op:<18} "
                                f"c={concurrency:<3}{run.ops_per_s:8.1f}/s "
                                f"p50 {run.p50_ms:6.2f} p99 {run.p99_ms:6.2f} ms "
                                f"cpu/op {run.server_cpu_us:5.0f}+{run.client_cpu_us:3.0f} us"
                                f"{error}", highlight=False)
    return list(points.values())


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ratios(points: list[Point], concurrencies: list[int]) -> list[dict[str, Any]]:
    by_key = {(p.system, p.op, p.concurrency): p for p in points}
    rows = []
    for label, ours_op, system, other_op in RATIOS:
        for concurrency in concurrencies:
            ours, other = by_key.get(("ours", ours_op, concurrency)), by_key.get(
                (system, other_op, concurrency))
            if ours is None or other is None or not other.median("ops_per_s"):
                continue
            paired = [a.ops_per_s / b.ops_per_s for a, b in zip(ours.runs, other.runs)
                      if b.ops_per_s]
            rows.append({"label": label, "concurrency": concurrency,
                         "throughput": ours.median("ops_per_s") / other.median("ops_per_s"),
                         "throughput_rounds": [min(paired), max(paired)],
                         "p50": ours.median("p50_ms") / other.median("p50_ms"),
                         "server_cpu": ours.median("server_cpu_us") / other.median("server_cpu_us"),
                         "p99": ours.median("p99_ms") / other.median("p99_ms")})
    return rows


def machine_busy_seconds() -> float:
    """user+nice+system time of all cores since boot (/proc/stat; irq, softirq and steal are left
    out: they are not charged to processes, so they would count our own loopback traffic)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4]]
    return sum(ticks) / os.sysconf("SC_CLK_TCK")


def background_cpu(pids: list[int], busy_before: float, ours_before: float,
                   elapsed: float) -> float:
    """% of one core used by processes other than ``pids`` (noise from elsewhere)."""
    ours = sum(cpu_seconds(pid) for pid in pids) - ours_before
    return 100 * (machine_busy_seconds() - busy_before - ours) / elapsed


async def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    await asyncio.sleep(1.0)   # let the last load's after-effects settle
    before, start = {label: cpu_seconds(pid) for label, pid in pids.items()}, time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - start
    return {label: 100 * (cpu_seconds(pid) - before[label]) / elapsed
            for label, pid in pids.items()}


def calls_per_second(function: Callable[[str], Any], argument: str, max_calls: int,
                     max_seconds: float, chunk: int = 20_000) -> float:
    calls, start = 0, time.perf_counter()
    while calls < max_calls and time.perf_counter() - start < max_seconds:
        for _ in itertools.repeat(None, chunk):
            function(argument)
        calls += chunk
    return calls / (time.perf_counter() - start)


def measure_embedded(workdir: Path, repeat: int, max_seconds: float) -> dict[str, list[float]]:
    """Local reads on a node embedded in this process (2 peer processes + this one)."""
    from consensus_store.node import Node
    paths = write_cluster_configs(workdir / "embedded")
    peers = LocalCluster(paths[:2], data_root=workdir / "embedded")
    node = None
    try:
        peers.start()
        node = Node.from_config(paths[2], data_dir=workdir / "embedded" / "n3")
        blocking_put(f"http://{node.config.api_address}", node.config.admin_token, key(0), VALUE)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while node.get_value(key(0)) != VALUE:
            if time.monotonic() > deadline:
                raise BenchError("embedded node: an acknowledged put never became readable")
            time.sleep(0.05)
        plain = {key(0): VALUE}
        functions = {"node.get(key)": node.get, "node.get_value(key)": node.get_value,
                     "dict.get(key) (reference)": plain.get}
        return {name: [calls_per_second(function, key(0), 50_000_000, max_seconds)
                       for _ in range(repeat)] for name, function in functions.items()}
    finally:
        if node is not None:
            node.stop()
        peers.stop()


def blocking_put(endpoint: str, token: str, name: str, value: str) -> None:
    """One put over the HTTP API (stdlib only), retried until the cluster has a leader."""
    request = urllib.request.Request(
        f"{endpoint}/v1/kv/put", data=json.dumps({"key": name, "value": value}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(request, timeout=STARTUP_TIMEOUT_S) as response:
                response.read()
                return
        except OSError as exc:   # URLError and HTTPError are OSErrors
            if time.monotonic() > deadline:
                raise BenchError(f"put to {endpoint} kept failing: {exc}") from None
            time.sleep(0.2)
