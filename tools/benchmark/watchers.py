"""Watch fan-out bench: many stream watchers on one prefix of one node; how long one put takes
to reach all of them, and what they cost the put throughput.

    .venv/bin/python -m tools.benchmark.watchers --watchers 10000 --processes 4

Starts a fresh local 3-node cluster (fsync durability, [limits] raised for the connections),
then, in order and each bounded in time:
1. put throughput without watchers (``--seconds`` of puts from ``--concurrency`` asyncio
   tasks, one AsyncClient over the native protocol);
2. ``--watchers`` streams (``GET /v1/watch/stream?prefix=bench/``) on one node (``--on``
   a follower, the default, or the leader) from
   ``--processes`` child processes (raw asyncio sockets, a chunked-JSON-lines reader);
3. ``--probes`` puts of ``bench/probe`` ``--gap`` seconds apart (these and the load of step 4
   go to ``--writers``: the watchers' node, the default, or another one): each child notes when each
   of its watchers got each probe; latency = receive time - the put's start (same host clock);
4. put throughput again with the watchers attached: to a key outside their prefix (matched
   once per entry, not delivered) and to a key inside it (delivered to every watcher).
Children report how many of their streams the node cut off (a stalled reader is reset).
Everything runs on loopback; the cluster and the children are stopped by PID at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from consensus_store import fast_json
from consensus_store.errors import ConsensusStoreError
from consensus_store.client import AsyncClient
from consensus_store.launcher import LocalCluster, write_cluster_configs

PREFIX = "bench/"
CONNECT_BATCH = 200          # connections opened at once by a child
MAX_RUN_S = 600.0            # the whole bench, whatever the arguments


# ---- child: many watchers on one node --------------------------------------------------------
async def _watch_one(host: str, port: int, token: str, probes: dict[int, list[float]],
                     counts: dict[str, int], ready: asyncio.Event, attached: list[int]) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        counts["connect_failed"] += 1
        return
    writer.write(f"GET /v1/watch/stream?prefix={PREFIX}&heartbeat=30 HTTP/1.1\r\nHost: b\r\n"
                 f"Authorization: Bearer {token}\r\n\r\n".encode())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            counts["refused"] += 1
            return
        attached[0] += 1
        if attached[0] == attached[1]:
            ready.set()
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                counts["ended"] += 1
                return
            data = await reader.readexactly(size + 2)
            now = time.time()
            counts["lines"] += data.count(b"\n") - 1
            if b"probe" in data:
                for line in data.split(b"\n"):
                    if b"probe" in line:
                        event = fast_json.decode(line)
                        probes.setdefault(event["kv"]["value"]["seq"], []).append(now)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        counts["cut_off"] += 1
    finally:
        writer.close()


async def _child(host: str, port: int, token: str, watchers: int) -> None:
    probes: dict[int, list[float]] = {}
    counts = {"connect_failed": 0, "refused": 0, "ended": 0, "cut_off": 0, "lines": 0}
    ready = asyncio.Event()
    attached = [0, watchers]
    tasks = []
    for start in range(0, watchers, CONNECT_BATCH):
        for _ in range(min(CONNECT_BATCH, watchers - start)):
            tasks.append(asyncio.create_task(
                _watch_one(host, port, token, probes, counts, ready, attached)))
        await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(ready.wait(), 120.0)
    except asyncio.TimeoutError:
        pass
    print(json.dumps({"ready": attached[0]}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.wait_for(stop.wait(), MAX_RUN_S)
    for task in tasks:
        task.cancel()
    print(json.dumps({"probes": probes, "counts": counts, "attached": attached[0]}), flush=True)


# ---- parent -------------------------------------------------------------------------------------
async def _throughput(endpoints: list[str], token: str, key: str, seconds: float,
                      concurrency: int) -> dict[str, int]:
    async with AsyncClient(endpoints, token=token, timeout=30.0) as client:
        done = 0
        deadline = time.monotonic() + seconds

        async def worker(n: int) -> None:
            nonlocal done, failed
            while time.monotonic() < deadline:
                try:
                    await client.put(f"{key}{n % 16}", "v" * 100, timeout=10.0)
                except ConsensusStoreError:
                    failed += 1          # counted, not hidden: the put did not answer in time
                    continue
                done += 1

        done = failed = 0
        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        return {"puts_per_s": round(done / (time.monotonic() - started)), "failed": failed}


async def _probes(endpoints: list[str], token: str, count: int, gap: float) -> dict[int, float]:
    sent = {}
    async with AsyncClient(endpoints, token=token, timeout=30.0) as client:
        for seq in range(count):
            sent[seq] = time.time()
            await client.put(f"{PREFIX}probe", {"seq": seq})
            await asyncio.sleep(gap)
    return sent


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.benchmark.watchers")
    parser.add_argument("--watchers", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--on", choices=("follower", "leader"), default="follower",
                        help="the node the watchers attach to")
    parser.add_argument("--writers", choices=("watched", "other"), default="watched",
                        help="the node the probe and load puts are sent to (first endpoint): "
                             "the watchers' node, or another one")
    parser.add_argument("--child", nargs=4, metavar=("HOST", "PORT", "TOKEN", "N"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        host, port, token, n = args.child
        asyncio.run(_child(host, int(port), token, int(n)))
        return
    if not 1 <= args.watchers <= 15_000 or not 1 <= args.processes <= 16:
        parser.error("--watchers in [1, 15000], --processes in [1, 16]")
    args.seconds = min(args.seconds, 30.0)
    args.probes = min(args.probes, 200)
    root = Path(tempfile.mkdtemp(prefix="watch-bench-"))
    paths = write_cluster_configs(root / "configs", 3)
    for path in paths:
        path.write_text(path.read_text() + f"\n[limits]\nmax_http_connections = "
                        f"{args.watchers + 500}\nmax_watchers = {args.watchers + 500}\n")
    cluster = LocalCluster(paths, data_root=root / "data")
    children: list[subprocess.Popen] = []
    results: dict[str, Any] = {"watchers": args.watchers, "processes": args.processes}
    try:
        cluster.start()
        cluster.wait_for_leader(30)
        native = [f"tcp://{n.config.native_address}" for n in cluster.nodes.values()]
        token = cluster.token
        results["puts_without_watchers"] = asyncio.run(_throughput(
            native, token, "load/k", args.seconds, args.concurrency))
        with cluster.client() as client:
            leader = client.wait_for_leader(15).id
        target = leader if args.on == "leader" else next(i for i in cluster.nodes if i != leader)
        results["watchers_on"] = f"{target} ({'leader' if target == leader else 'follower'})"
        writer = target if args.writers == "watched" else next(
            i for i in cluster.nodes if i != target)
        results["writers_on"] = f"{writer} ({'leader' if writer == leader else 'follower'})"
        # The client sends to its first endpoint while that one answers.
        first = f"tcp://{cluster.nodes[writer].config.native_address}"
        native = [first] + [e for e in native if e != first]
        n1 = cluster.nodes[target].config.api_address
        share = [args.watchers // args.processes + (i < args.watchers % args.processes)
                 for i in range(args.processes)]
        started = time.monotonic()
        for count in share:
            children.append(subprocess.Popen(
                [sys.executable, "-m", "tools.benchmark.watchers", "--child", n1.host,
                 str(n1.port), token, str(count)], stdout=subprocess.PIPE, text=True))
        attached = sum(json.loads(child.stdout.readline())["ready"] for child in children)
        results["attached"] = attached
        results["attach_s"] = round(time.monotonic() - started, 1)
        sent = asyncio.run(_probes(native, token, args.probes, args.gap))
        results["puts_with_watchers_other_prefix"] = asyncio.run(_throughput(
            native, token, "load/k", args.seconds, args.concurrency))
        results["puts_with_watchers_watched_prefix"] = asyncio.run(_throughput(
            native, token, f"{PREFIX}load/k", args.seconds, args.concurrency))
        received: dict[int, list[float]] = {}
        counts: dict[str, int] = {}
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            report = json.loads(child.stdout.readlines()[-1])
            for seq, times in report["probes"].items():
                received.setdefault(int(seq), []).extend(times)
            for name, value in report["counts"].items():
                counts[name] = counts.get(name, 0) + value
        deliveries = [t - sent[seq] for seq, times in received.items() for t in times]
        all_reached = [max(times) - sent[seq] for seq, times in received.items()
                       if len(times) == attached]
        results.update({
            "probe_deliveries": len(deliveries), "expected": attached * args.probes,
            "delivery_ms_p50": round(1000 * _pct(deliveries, 0.50), 1),
            "delivery_ms_p99": round(1000 * _pct(deliveries, 0.99), 1),
            "all_reached_ms_p50": round(1000 * _pct(all_reached, 0.50), 1),
            "all_reached_ms_p99": round(1000 * _pct(all_reached, 0.99), 1),
            "probes_reaching_all": len(all_reached),
            "streams": counts})
    finally:
        for child in children:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
        cluster.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
