"""``--scale``: a large state (default 1M keys, 16-byte keys, 100-byte values) on a 3-node
cluster of ours and, when etcd is installed, on 3 etcd members.

Measured: RSS per node once loaded (etcd's beside it); every snapshot the nodes take while a
put load runs (its time, from the first status showing the log past the compaction threshold
to the new snapshot file's mtime, so +-the 50 ms status period), the leader changes and each
node's longest gap between answered status requests meanwhile (a stalled node shows here);
then a follower's restart-to-serving time (SIGTERM, start, until it is ready, has applied what
the leader had committed and answers a local read of the last key loaded).  Every loop is
bounded; only processes started here are signalled, by PID.
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
from typing import Any, Callable

import aiohttp

from consensus_store.launcher import LocalCluster, write_cluster_configs

from .common import STARTUP_TIMEOUT_S, VALUE, BenchError, console, key, poll
from .etcd import b64, start_etcd_members
from .load import http_load
from .ours import ours_leader, ours_put, ours_statuses

TXN_PUTS = 128                 # etcd's default --max-txn-ops, and ours
SNAPSHOT_FILE = "raft.snapshot"
STATUS_PERIOD_S = 0.05
LOAD_CHUNK_S = 5.0


@dataclass(frozen=True)
class BatchedPuts:
    """``total`` keys written ``TXN_PUTS`` at a time, each body built when it is sent."""
    url: str
    headers: dict[str, str]
    total: int
    body: Callable[[list[str]], dict[str, Any]]

    @property
    def requests(self) -> int:
        return math.ceil(self.total / TXN_PUTS)

    def request(self, i: int) -> tuple[str, bytes]:
        names = [key(n) for n in range(i * TXN_PUTS, min(self.total, (i + 1) * TXN_PUTS))]
        return self.url, json.dumps(self.body(names)).encode()


def memory_of(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process, in MiB (/proc/PID/status)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return {"rss_mib": fields.get("VmRSS", math.nan), "peak_mib": fields.get("VmHWM", math.nan)}


async def load_keys(session: aiohttp.ClientSession, puts: BatchedPuts, what: str) -> float:
    """Write every key (16 requests in flight); returns the seconds it took."""
    started = time.monotonic()
    run = await http_load(session, puts, 16, 3600.0, puts.requests)
    if run.errors or run.ops != puts.requests:
        raise BenchError(f"{what}: loading {puts.total:,} keys failed after {run.ops} "
                         f"batches: {run.first_error}")
    return time.monotonic() - started


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
        """Per snapshot: its file's mtime minus the first status after the previous one that
        showed the log past ``threshold`` entries (when compaction became due)."""
        durations, previous = [], 0.0
        for done in self.snapshots:
            due = [t for t, s in self.answered
                   if previous < t < done and s.get("log_length", 0) > threshold]
            if due:
                durations.append(done - due[0])
            previous = done
        return durations

    def longest_gap(self) -> float:
        times = [t for t, _ in self.answered]
        return max((b - a for a, b in zip(times, times[1:])), default=math.nan)


async def snapshots_under_load(session: aiohttp.ClientSession, cluster: LocalCluster,
                               headers: dict[str, str], leader: str, args: argparse.Namespace
                               ) -> dict[str, Any]:
    """Puts (16 in flight) until every node took a snapshot, within ``--scale-seconds``."""
    watches = [NodeWatch(n.id, n.endpoint, n.data_dir / SNAPSHOT_FILE)
               for n in cluster.nodes.values()]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(session, headers, stop)) for w in watches]
    puts = ours_put(leader, headers, args.keys)
    started, answered, errors = time.monotonic(), 0, 0
    try:
        while time.monotonic() - started < args.scale_seconds:
            run = await http_load(session, puts, 16, LOAD_CHUNK_S, 1_000_000)
            answered, errors = answered + run.ops, errors + run.errors
            if all(w.snapshots for w in watches):
                break
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    terms = {s["term"] for w in watches for _, s in w.answered}
    leaders = {s["leader"] for w in watches for _, s in w.answered if s.get("leader")}
    threshold = args.scale_snapshot_entries
    return {
        "load_seconds": elapsed, "puts_per_s": answered / elapsed, "put_errors": errors,
        "terms_seen": sorted(terms), "leader_changes": max(0, len(terms) - 1),
        "leaders_seen": sorted(leaders), "timeline": timeline(watches),
        "nodes": {w.node_id: {"snapshots": len(w.snapshots),
                              "snapshot_s": w.snapshot_seconds(threshold),
                              "longest_status_gap_s": w.longest_gap(),
                              "snapshot_mib": _size_mib(w.snapshot)}
                  for w in watches}}


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
                             headers: dict[str, str], leader: str, last_key: str
                             ) -> dict[str, Any]:
    """Stop a follower, start it again, and time it until it serves the loaded state."""
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
    leader = await poll(lambda: ours_leader(session, cluster.endpoints, headers),
                        "no consensus_store leader")
    puts = BatchedPuts(f"{leader}/v1/kv/txn", headers, args.scale_keys, lambda names: {
        "compare": [], "success": [{"op": "put", "key": k, "value": VALUE} for k in names]})
    console.log(f"ours: loading {args.scale_keys:,} keys")
    result: dict[str, Any] = {"load_seconds": await load_keys(session, puts, "ours")}
    result["loaded"] = {f"ours {n.id}": memory_of(n.process.pid)
                        for n in cluster.nodes.values() if n.process is not None}
    console.log("ours: puts until every node took a snapshot")
    result["under_load"] = await snapshots_under_load(session, cluster, headers, leader, args)
    result["after_snapshots"] = {f"ours {n.id}": memory_of(n.process.pid)
                                 for n in cluster.nodes.values() if n.process is not None}
    console.log("ours: restarting a follower")
    result["restart"] = await restart_to_serving(session, cluster, headers, leader,
                                                 key(args.scale_keys - 1))
    return result


async def scale_etcd(binary: str, args: argparse.Namespace, workdir: Path,
                     stack: contextlib.AsyncExitStack, session: aiohttp.ClientSession
                     ) -> dict[str, Any]:
    _, leader, pids = await start_etcd_members(binary, workdir / "scale", stack, session)
    puts = BatchedPuts(f"{leader}/v3/kv/txn", {"Content-Type": "application/json"},
                       args.scale_keys, lambda names: {"success": [
                           {"requestPut": {"key": b64(k), "value": b64(VALUE)}} for k in names]})
    console.log(f"etcd: loading {args.scale_keys:,} keys")
    seconds = await load_keys(session, puts, "etcd")
    return {"load_seconds": seconds, "loaded": {label: memory_of(pid)
                                                for label, pid in pids.items()}}


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
