"""Read throughput with read replicas (docs/replicas.md): 3 voters and 0, 1, 2 replicas.

    python tools/benchmark/replicas.py [--replicas 0,1,2] [--levels local,session]
                                       [--concurrency 16,64] [--seconds 3] [--repeat 3]
                                       [--keys 1000] [--json FILE]

One throwaway loopback cluster per replica count (3 voters + N replicas, ``durability =
"process"``: reads never touch the disk) is started, ``--keys`` keys are written once, and,
once every node has applied them, gets of those keys are measured with the shared HTTP load
generator (benchmark/load.py: one aiohttp session, ``concurrency`` workers, each point bounded
by ``--seconds`` and ``--max-ops``, after ``--warmup`` unmeasured seconds), for each read
level and concurrency, spread over:
- ``all``: every node in turn (voters and replicas), as a client told about the replicas
  spreads reads that it may also send to voters;
- ``replicas``: the replicas only (N > 0), leaving the voters to writes.
All clusters run at once and each of ``--repeat`` rounds measures every point of every cluster
in turn; the median (and the range) over rounds is reported.  Session reads carry the
prefill's index as ``min_index`` (they never wait once it is applied).  Also reported: CPU of
the cluster's node processes and of this generator per answered read.  Every node is a
process of this machine, as is the generator: on a small machine they share its cores, so more
processes can mean less throughput; the numbers say what this machine does.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
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
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if any(not 0 <= n <= 5 for n in args.replicas):
        parser.error("--replicas: each count between 0 and 5")
    return args


@dataclass
class Setup:
    """One running cluster and the endpoint sets its reads are spread over."""
    replicas: int
    cluster: LocalCluster
    headers: dict[str, str]
    index: int                          # the prefill's index: session reads' min_index
    spreads: dict[str, list[str]]
    pids: list[int]


async def start_cluster(args: argparse.Namespace, replicas: int, workdir: Path,
                        session: aiohttp.ClientSession, stack: contextlib.AsyncExitStack) -> Setup:
    configs = write_cluster_configs(workdir / f"r{replicas}", VOTERS, replicas=replicas,
                                    durability="process")
    cluster = LocalCluster(configs, data_root=workdir / f"r{replicas}" / "data")
    stack.push_async_callback(asyncio.to_thread, cluster.stop)
    cluster.start()
    everyone = cluster.endpoints
    replica_endpoints = [n.endpoint for n in cluster.nodes.values() if n.config.is_replica]
    voters = [e for e in everyone if e not in replica_endpoints]
    headers = {"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"}
    leader = await poll(lambda: ours_leader(session, voters, headers), "no leader")
    prefill = await http_load(session, ours_put(leader, headers, args.keys), 16,
                              STARTUP_TIMEOUT_S, args.keys)
    if prefill.errors or prefill.ops != args.keys:
        raise RuntimeError(f"prefill failed: {prefill.first_error}")
    async with session.post(f"{leader}/v1/kv/get", headers=headers, json={
            "key": "k000000000000000", "consistency": "linearizable"}) as answer:
        index = (await answer.json())["header"]["applied_index"]
    await poll(lambda: ours_applied_everywhere(session, everyone, headers, index),
               "not every node applied the prefill")
    spreads = {"all": everyone, **({"replicas": replica_endpoints} if replicas else {})}
    pids = [n.process.pid for n in cluster.nodes.values() if n.process is not None]
    return Setup(replicas, cluster, headers, index, spreads, pids)


async def measure_point(args: argparse.Namespace, setup: Setup, level: str, spread: str,
                        concurrency: int, session: aiohttp.ClientSession) -> dict[str, Any]:
    endpoints = setup.spreads[spread]
    workload = ours_get(endpoints, setup.headers, level, setup.index, args.keys)
    await http_load(session, workload, concurrency, args.warmup, args.max_ops)
    servers_before = sum(cpu_seconds(pid) for pid in setup.pids)
    own_before = time.process_time()
    run: Run = await http_load(session, workload, concurrency, args.seconds, args.max_ops)
    servers = sum(cpu_seconds(pid) for pid in setup.pids) - servers_before
    own = time.process_time() - own_before
    if run.errors:
        console.log(f"[red]{run.errors} errors, first: {run.first_error}[/]")
    return {"ops_per_s": run.ops_per_s, "p50_ms": run.p50_ms, "p99_ms": run.p99_ms,
            "errors": run.errors, "server_cpu_us": servers / max(run.ops, 1) * 1e6,
            "client_cpu_us": own / max(run.ops, 1) * 1e6}


def point_row(key: tuple[int, str, str, int], nodes_read: int,
              runs: list[dict[str, Any]]) -> dict[str, Any]:
    replicas, level, spread, concurrency = key
    rates = [r["ops_per_s"] for r in runs]

    def median(name: str) -> float:
        return round(statistics.median(r[name] for r in runs), 1)
    return {"replicas": replicas, "level": level, "spread": spread, "nodes_read": nodes_read,
            "concurrency": concurrency, "ops_per_s": median("ops_per_s"),
            "min_max": f"{min(rates):.0f}-{max(rates):.0f}", "p50_ms": median("p50_ms"),
            "p99_ms": median("p99_ms"), "errors": sum(r["errors"] for r in runs),
            "server_cpu_us": median("server_cpu_us"), "client_cpu_us": median("client_cpu_us"),
            "runs": runs}


COLUMNS = ("replicas", "level", "spread", "nodes_read", "concurrency", "ops_per_s", "min_max",
           "p50_ms", "p99_ms", "errors", "server_cpu_us", "client_cpu_us")


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table
    table = Table(title=f"gets with {VOTERS} voters and read replicas (HTTP)")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(row[column]) for column in COLUMNS))
    console.print(table)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every cluster runs for the whole measurement, and each round measures every point of
    every cluster in turn: load from elsewhere on the machine then spreads over all of them
    instead of favouring whichever ran when the machine was quiet."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cs-replicas-")))
        setups = [await start_cluster(args, n, workdir, session, stack) for n in args.replicas]
        runs: dict[tuple[int, str, str, int], list[dict[str, Any]]] = {}
        nodes_read: dict[tuple[int, str, str, int], int] = {}
        for round_number in range(1, args.repeat + 1):
            for level in args.levels.split(","):
                for concurrency in args.concurrency:
                    for setup in setups:
                        for spread in setup.spreads:
                            key = (setup.replicas, level, spread, concurrency)
                            result = await measure_point(args, setup, level, spread,
                                                         concurrency, session)
                            runs.setdefault(key, []).append(result)
                            nodes_read[key] = len(setup.spreads[spread])
                            console.log(f"{round_number}/{args.repeat} replicas={key[0]} "
                                        f"{level} {spread} c={concurrency} "
                                        f"{result['ops_per_s']:.0f}/s")
        return [point_row(key, nodes_read[key], runs[key]) for key in sorted(runs)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = asyncio.run(run(args))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
