"""Read throughput with read replicas (docs/replicas.md): 3 voters and 0, 1, 2 replicas.

    python tools/benchmark/replicas.py [--replicas 0,1,2] [--levels local,session]
                                       [--concurrency 16,64] [--seconds 3] [--keys 1000]
                                       [--json FILE]

For each replica count a throwaway loopback cluster (3 voters + N replicas, ``durability =
"process"``: reads never touch the disk) is started, ``--keys`` keys are written once, and,
once every node has applied them, gets of those keys are measured with the shared HTTP load
generator (benchmark/load.py: one aiohttp session, ``concurrency`` workers, each point bounded
by ``--seconds`` and ``--max-ops``, after ``--warmup`` unmeasured seconds), for each read
level and concurrency, spread over:
- ``all``: every node in turn (voters and replicas), as a client told about the replicas
  spreads reads that it may also send to voters;
- ``replicas``: the replicas only (N > 0), leaving the voters to writes.
Session reads carry the prefill's index as ``min_index`` (they never wait once it is applied).
Also reported: CPU of all node processes and of this generator per answered read.  Every
node is a process of this machine, as is the generator: on a small machine they share cores,
so more processes can mean less throughput; the numbers say what this machine does.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # consensus_store
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmark

from benchmark.common import STARTUP_TIMEOUT_S, Run, console, cpu_seconds, poll  # noqa: E402
from benchmark.load import http_load  # noqa: E402
from benchmark.ours import ours_applied_everywhere, ours_get, ours_leader, ours_put  # noqa: E402

from consensus_store.launcher import LocalCluster, write_cluster_configs  # noqa: E402

VOTERS = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda text: [int(x) for x in text.split(",")]        # noqa: E731
    parser.add_argument("--replicas", type=ints, default=[0, 1, 2])
    parser.add_argument("--levels", default="local,session")
    parser.add_argument("--concurrency", type=ints, default=[16, 64])
    parser.add_argument("--seconds", type=float, default=3.0, help="per point, measured")
    parser.add_argument("--warmup", type=float, default=0.5, help="per point, unmeasured")
    parser.add_argument("--max-ops", type=int, default=200_000, help="per point")
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if any(not 0 <= n <= 5 for n in args.replicas):
        parser.error("--replicas: each count between 0 and 5")
    return args


async def measure_cluster(args: argparse.Namespace, replicas: int, workdir: Path,
                          session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    configs = write_cluster_configs(workdir / f"r{replicas}", VOTERS, replicas=replicas,
                                    durability="process")
    cluster = LocalCluster(configs, data_root=workdir / f"r{replicas}" / "data")
    try:
        cluster.start()
        everyone = cluster.endpoints
        replica_endpoints = [n.endpoint for n in cluster.nodes.values() if n.config.is_replica]
        voters = [e for e in everyone if e not in replica_endpoints]
        headers = {"Authorization": f"Bearer {cluster.token}",
                   "Content-Type": "application/json"}
        leader = await poll(lambda: ours_leader(session, voters, headers), "no leader")
        writes = ours_put(leader, headers, args.keys)
        prefill = await http_load(session, writes, 16, STARTUP_TIMEOUT_S, args.keys)
        if prefill.errors or prefill.ops != args.keys:
            raise RuntimeError(f"prefill failed: {prefill.first_error}")
        async with session.post(f"{leader}/v1/kv/get", headers=headers, json={
                "key": "k000000000000000", "consistency": "linearizable"}) as answer:
            index = (await answer.json())["header"]["applied_index"]
        await poll(lambda: ours_applied_everywhere(session, everyone, headers, index),
                   "not every node applied the prefill")
        pids = [n.process.pid for n in cluster.nodes.values() if n.process is not None]
        spreads = {"all": everyone, **({"replicas": replica_endpoints} if replicas else {})}
        results = []
        for level in args.levels.split(","):
            for spread, endpoints in spreads.items():
                workload = ours_get(endpoints, headers, level, index, args.keys)
                for concurrency in args.concurrency:
                    await http_load(session, workload, concurrency, args.warmup, args.max_ops)
                    servers_before = sum(cpu_seconds(pid) for pid in pids)
                    own_before = time.process_time()
                    run: Run = await http_load(session, workload, concurrency, args.seconds,
                                               args.max_ops)
                    servers = sum(cpu_seconds(pid) for pid in pids) - servers_before
                    own = time.process_time() - own_before
                    row = {"replicas": replicas, "level": level, "spread": spread,
                           "nodes_read": len(endpoints), "concurrency": concurrency,
                           "ops_per_s": round(run.ops_per_s, 1), "p50_ms": round(run.p50_ms, 2),
                           "p99_ms": round(run.p99_ms, 2), "errors": run.errors,
                           "server_cpu_us": round(servers / max(run.ops, 1) * 1e6, 1),
                           "client_cpu_us": round(own / max(run.ops, 1) * 1e6, 1)}
                    console.log(" ".join(f"{k}={v}" for k, v in row.items()))
                    if run.errors:
                        console.log(f"[red]first error: {run.first_error}[/]")
                    results.append(row)
        return results
    finally:
        await asyncio.to_thread(cluster.stop)


COLUMNS = ("replicas", "level", "spread", "nodes_read", "concurrency", "ops_per_s", "p50_ms",
           "p99_ms", "errors", "server_cpu_us", "client_cpu_us")


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table
    table = Table(title=f"gets with {VOTERS} voters and read replicas (HTTP)")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(row[column]) for column in COLUMNS))
    console.print(table)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cs-replicas-")))
        for replicas in args.replicas:
            rows += await measure_cluster(args, replicas, workdir, session)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = asyncio.run(run(args))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
