"""``--scale``: a large state (default 1M keys, 16-byte keys, 100-byte values) on a 3-node
cluster of ours and, when etcd is installed, on 3 etcd members.

Measured: RSS per node once loaded (etcd's beside it); every snapshot the nodes take while a
put load runs (its time: ``NodeWatch.snapshot_seconds``, within a status period of 50 ms), the
leader changes and each node's longest gap between answered status requests meanwhile (a
stalled node shows here); then a follower's restart-to-serving time (SIGTERM, start, until it
is ready, has applied what the leader had committed and answers a local read of the last key
loaded).  Every loop is bounded; only processes started here are signalled, by PID.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp

from consensus_store.launcher import LocalCluster, write_cluster_configs

from .common import STARTUP_TIMEOUT_S, VALUE, BenchError, console, key, poll
from .etcd import b64, etcd_leader, start_etcd_members
from .load import http_load
from .ours import ours_leader, ours_put, ours_statuses

TXN_PUTS = 128                 # etcd's default --max-txn-ops, and ours
SNAPSHOT_FILE = "raft.snapshot"
STATUS_PERIOD_S = 0.05
LOAD_CHUNK_S = 5.0
LOAD_IN_FLIGHT = 16
LOAD_TIMEOUT_S = 1800.0
BATCH_TRIES = 20


@dataclass(frozen=True)
class BatchedPuts:
    """``total`` keys written ``TXN_PUTS`` at a time to ``path`` on the current leader, each
    body built when it is sent; a failed batch is sent again (a put of the same value is
    idempotent) after looking the leader up again."""
    path: str
    headers: dict[str, str]
    total: int
    body: Callable[[list[str]], dict[str, Any]]
    find_leader: Callable[[], Awaitable[str | None]]

    @property
    def batches(self) -> int:
        return math.ceil(self.total / TXN_PUTS)

    def payload(self, i: int) -> bytes:
        names = [key(n) for n in range(i * TXN_PUTS, min(self.total, (i + 1) * TXN_PUTS))]
        return json.dumps(self.body(names)).encode()


def memory_of(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process, in MiB (/proc/PID/status)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return {"rss_mib": fields.get("VmRSS", math.nan), "peak_mib": fields.get("VmHWM", math.nan)}


async def load_keys(session: aiohttp.ClientSession, puts: BatchedPuts, what: str
                    ) -> dict[str, Any]:
    """Write every key, ``LOAD_IN_FLIGHT`` batches at a time: seconds taken, batches retried."""
    started = time.monotonic()
    leader = [await poll(puts.find_leader, f"no {what} leader")]
    pending = iter(range(puts.batches))          # shared: each batch is taken once
    retried: list[str] = []

    async def worker() -> None:
        for i in pending:
            for _ in range(BATCH_TRIES):
                try:
                    async with session.post(leader[0] + puts.path, data=puts.payload(i),
                                            headers=puts.headers) as response:
                        await response.read()
                        if response.status == 200:
                            break
                        retried.append(f"HTTP {response.status}")
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    retried.append(type(exc).__name__)
                leader[0] = await poll(puts.find_leader, f"no {what} leader")
            else:
                raise BenchError(f"{what}: batch {i} failed {BATCH_TRIES} times: {retried[-1]}")

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(LOAD_IN_FLIGHT))),
                           LOAD_TIMEOUT_S)
    return {"seconds": time.monotonic() - started, "batches": puts.batches,
            "retried": len(retried), "retry_reasons": sorted(set(retried))}


@dataclass
class NodeWatch:
    """Status samples of one node (wall-clock times) and the mtimes of its new snapshots."""
    node_id: str
    endpoint: str
    snapshot: Path
    answered: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    snapshots: list[float] = field(default_factory=list)

    async def run(self, session: aiohttp.ClientSession, headers: dict[str, str],
                  stop: asyncio.Event) -> None:
        seen = self._mtime()
        while not stop.is_set():
            asked = time.time()
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                async with session.get(f"{self.endpoint}/v1/status", headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=10)) as response:
                    if response.status == 200:
                        self.answered.append((asked, await response.json()))
            mtime = self._mtime()
            if mtime != seen and mtime is not None:
                self.snapshots.append(mtime)
                seen = mtime
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_PERIOD_S)

    def _mtime(self) -> float | None:
        try:
            return self.snapshot.stat().st_mtime
        except OSError:
            return None

    def snapshot_seconds(self, threshold: int) -> list[float]:
        """Per snapshot: its file's mtime minus when it began, taken as the first status after
        the previous snapshot showing the log at ``threshold`` entries or, when the node stopped
        answering before that (a snapshot that blocks it), the last status before the write."""
        durations, previous = [], 0.0
        for done in self.snapshots:
            between = [(t, s) for t, s in self.answered if previous < t < done]
            due = [t for t, s in between if s.get("log_length", 0) >= threshold]
            began = min(due[:1] + [t for t, _ in between[-1:]], default=None)
            if began is not None:
                durations.append(done - began)
            previous = done
        return durations

    def longest_gap(self) -> float:
        times = [t for t, _ in self.answered]
        return max((b - a for a, b in zip(times, times[1:])), default=math.nan)


async def snapshots_under_load(session: aiohttp.ClientSession, cluster: LocalCluster,
                               headers: dict[str, str], args: argparse.Namespace
                               ) -> dict[str, Any]:
    """Puts (16 in flight) until every node took a snapshot, within ``--scale-seconds``."""
    watches, stop = watch_nodes(session, cluster, headers)
    started, answered, errors = time.monotonic(), 0, 0
    try:
        while time.monotonic() - started < args.scale_seconds:
            leader = await poll(lambda: ours_leader(session, cluster.endpoints, headers),
                                "no consensus_store leader")
            puts = ours_put(leader, headers, args.keys)      # this chunk goes to the leader
            run = await http_load(session, puts, 16, LOAD_CHUNK_S, 1_000_000)
            answered, errors = answered + run.ops, errors + run.errors
            if all(w.snapshots for w in watches):
                break
    finally:
        await stop()
    elapsed = time.monotonic() - started
    threshold = args.scale_snapshot_entries
    return {
        "load_seconds": elapsed, "puts_per_s": answered / elapsed, "put_errors": errors,
        **terms_and_snapshots(watches, threshold),
        "nodes": {w.node_id: {"snapshots": len(w.snapshots),
                              "snapshot_s": w.snapshot_seconds(threshold),
                              "longest_status_gap_s": w.longest_gap(),
                              "log_length_max": max((st.get("log_length", 0)
                                                     for _, st in w.answered), default=0),
                              "snapshot_mib": _size_mib(w.snapshot)}
                  for w in watches}}


def watch_nodes(session: aiohttp.ClientSession, cluster: LocalCluster, headers: dict[str, str]
                ) -> tuple[list[NodeWatch], Callable[[], Awaitable[None]]]:
    """A ``NodeWatch`` running on every node, and the coroutine function that stops them."""
    watches = [NodeWatch(n.id, n.endpoint, n.data_dir / SNAPSHOT_FILE)
               for n in cluster.nodes.values()]
    done = asyncio.Event()
    tasks = [asyncio.create_task(w.run(session, headers, done)) for w in watches]

    async def stop() -> None:
        done.set()
        await asyncio.gather(*tasks)
    return watches, stop


def terms_and_snapshots(watches: list[NodeWatch], threshold: int) -> dict[str, Any]:
    terms = {s["term"] for w in watches for _, s in w.answered if s["term"] > 0}  # 0: no vote yet
    return {"terms_seen": sorted(terms), "leader_changes": max(0, len(terms) - 1),
            "snapshots": sum(len(w.snapshots) for w in watches),
            "snapshot_s": sorted(t for w in watches for t in w.snapshot_seconds(threshold)),
            "longest_status_gap_s": max((w.longest_gap() for w in watches), default=math.nan),
            "timeline": timeline(watches)}


def timeline(watches: list[NodeWatch]) -> list[str]:
    """When each snapshot was written and each new term first seen, from the first sample."""
    start = min((t for w in watches for t, _ in w.answered[:1]), default=0.0)
    events = [(t, f"{w.node_id} wrote a snapshot") for w in watches for t in w.snapshots]
    seen: set[int] = set()
    for t, status in sorted((a for w in watches for a in w.answered), key=lambda a: a[0]):
        if status["term"] not in seen:
            seen.add(status["term"])
            events.append((t, f"term {status['term']} (leader {status.get('leader')})"))
    return [f"{t - start:7.2f} s {what}" for t, what in sorted(events)]


def _size_mib(path: Path) -> float:
    try:
        return path.stat().st_size / 2**20
    except OSError:
        return math.nan


async def restart_to_serving(session: aiohttp.ClientSession, cluster: LocalCluster,
                             headers: dict[str, str], last_key: str) -> dict[str, Any]:
    """Stop a follower, start it again, and time it until it serves the loaded state."""
    leader = await poll(lambda: ours_leader(session, cluster.endpoints, headers),
                        "no consensus_store leader")
    statuses = await ours_statuses(session, cluster.endpoints, headers) or []
    commit = max((s.get("commit_index", 0) for s in statuses), default=0)
    follower = next(n for n in cluster.nodes.values() if n.endpoint != leader)
    await asyncio.to_thread(follower.stop)
    started = time.monotonic()
    follower.start()

    async def serving() -> bool | None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            async with session.get(f"{follower.endpoint}/v1/status", headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=2)) as response:
                status = await response.json() if response.status == 200 else {}
            if not status.get("ready") or status.get("applied_index", 0) < commit:
                return None
            body = {"key": last_key, "consistency": "local"}
            async with session.post(f"{follower.endpoint}/v1/kv/get", json=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=2)) as response:
                answer = await response.json() if response.status == 200 else {}
            return True if (answer.get("kv") or {}).get("value") == VALUE else None
        return None

    await poll(serving, f"{follower.id} serving again after a restart", timeout=600.0)
    assert follower.process is not None
    return {"node": follower.id, "seconds": time.monotonic() - started,
            **memory_of(follower.process.pid)}


async def scale_ours(args: argparse.Namespace, workdir: Path, stack: contextlib.AsyncExitStack,
                     session: aiohttp.ClientSession) -> dict[str, Any]:
    table = {"log_compaction_min_entries": args.scale_snapshot_entries,
             "log_compaction_max_bytes": 2**40}     # compaction by entry count only
    configs = write_cluster_configs(workdir / "scale", raft_table=table,
                                    durability=args.durability)
    cluster = LocalCluster(configs, data_root=workdir / "scale")
    stack.push_async_callback(asyncio.to_thread, cluster.stop)
    cluster.start()
    headers = {"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"}
    puts = BatchedPuts("/v1/kv/txn", headers, args.scale_keys, lambda names: {
        "compare": [], "success": [{"op": "put", "key": k, "value": VALUE} for k in names]},
        lambda: ours_leader(session, cluster.endpoints, headers))
    console.log(f"ours: loading {args.scale_keys:,} keys")
    watches, stop = watch_nodes(session, cluster, headers)
    try:
        result: dict[str, Any] = {"load": await load_keys(session, puts, "ours")}
    finally:
        await stop()
    result["load"].update(terms_and_snapshots(watches, args.scale_snapshot_entries))
    result["loaded"] = {f"ours {n.id}": memory_of(n.process.pid)
                        for n in cluster.nodes.values() if n.process is not None}
    console.log("ours: puts until every node took a snapshot")
    result["under_load"] = await snapshots_under_load(session, cluster, headers, args)
    result["after_snapshots"] = {f"ours {n.id}": memory_of(n.process.pid)
                                 for n in cluster.nodes.values() if n.process is not None}
    console.log("ours: restarting a follower")
    result["restart"] = await restart_to_serving(session, cluster, headers,
                                                 key(args.scale_keys - 1))
    return result


async def scale_etcd(binary: str, args: argparse.Namespace, workdir: Path,
                     stack: contextlib.AsyncExitStack, session: aiohttp.ClientSession
                     ) -> dict[str, Any]:
    client_urls, _, pids = await start_etcd_members(binary, workdir / "scale", stack, session)
    puts = BatchedPuts("/v3/kv/txn", {"Content-Type": "application/json"}, args.scale_keys,
                       lambda names: {"success": [
                           {"requestPut": {"key": b64(k), "value": b64(VALUE)}} for k in names]},
                       lambda: etcd_leader(session, client_urls))
    console.log(f"etcd: loading {args.scale_keys:,} keys")
    load = await load_keys(session, puts, "etcd")
    return {"load": load, "loaded": {label: memory_of(pid) for label, pid in pids.items()}}


async def run_scale(args: argparse.Namespace, workdir: Path, etcd_binary: str | None
                    ) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    report: dict[str, Any] = {"keys": args.scale_keys, "snapshot_entries":
                              args.scale_snapshot_entries, "durability": args.durability,
                              "cpus": os.cpu_count()}
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=STARTUP_TIMEOUT_S * 4)))
        report["ours"] = await scale_ours(args, workdir, stack, session)
        await stack.aclose()          # ours stops before etcd starts: one system at a time
        if etcd_binary:
            async with contextlib.AsyncExitStack() as etcd_stack:
                session = await etcd_stack.enter_async_context(aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=STARTUP_TIMEOUT_S * 4)))
                report["etcd"] = await scale_etcd(etcd_binary, args, workdir, etcd_stack,
                                                  session)
    return report
