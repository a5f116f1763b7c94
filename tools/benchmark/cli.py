"""``tools/bench.py``'s command line: flags, the run (start the clusters, measure, report) and
the temp dir it works in."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from consensus_store.event_loop import new_event_loop

from . import __doc__ as METHOD
from .common import REQUEST_TIMEOUT_S, BenchError, Plan, console, cpu_seconds
from .etcd import etcd_version, start_etcd
from .measure import (background_cpu, idle_cpu, machine_busy_seconds, measure_all,
                      measure_embedded, ratios)
from .ours import start_ours
from .raw import start_raw
from .report import notes, print_report, print_scale, scan_logs
from .scale import run_scale


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/bench.py", description=METHOD.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=METHOD.split("\n", 1)[1])
    parser.add_argument("--endpoints", help="use a running cluster: URL,URL,... (needs --token)")
    parser.add_argument("--token", help="client token for --endpoints")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated list")
    parser.add_argument("--ops", default="", help='only these ops, comma-separated '
                        '(e.g. "put,client put"; default: all)')
    parser.add_argument("--seconds", type=float, default=4.0, help="time bound per point")
    parser.add_argument("--max-ops", type=int, default=200_000, help="count bound per point")
    parser.add_argument("--warmup", type=float, default=0.5, help="per point, unmeasured")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--keys", type=int, default=1024, help="key pool size")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw pysyncobj baseline")
    parser.add_argument("--durability", choices=("process", "fsync"), default="fsync",
                        help="our nodes' durability setting (default: fsync, the product's)")
    parser.add_argument("--also-durability", choices=("process", "fsync"),
                        help="also measure puts on a second cluster with this durability")
    parser.add_argument("--no-client", action="store_true",
                        help="skip our Python client (native protocol) points")
    parser.add_argument("--vs-etcd", action="store_true", help="also measure etcd if installed")
    parser.add_argument("--embedded", action="store_true", help="embedded Node.get ops/s")
    parser.add_argument("--idle", action="store_true", help="idle CPU of every cluster process")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--scale", action="store_true",
                        help="only the large-state measurements (tools/benchmark/scale.py); "
                        "etcd beside ours whenever it is installed")
    parser.add_argument("--scale-keys", type=int, default=1_000_000)
    parser.add_argument("--scale-seconds", type=float, default=180.0,
                        help="bound of the put load while the nodes snapshot")
    parser.add_argument("--scale-snapshot-entries", type=int, default=2000,
                        help="the scale cluster's log_compaction_min_entries (compaction by "
                        "bytes off), so snapshots come during the measured load")
    parser.add_argument("--json", type=Path, help="save every number here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = parser.parse_args(argv)
    if args.endpoints and not args.token:
        parser.error("--endpoints needs --token")
    if args.repeat < 1 or args.seconds <= 0 or args.max_ops < 1 or args.keys < 1:
        parser.error("--repeat, --seconds, --max-ops and --keys must be positive")
    if args.scale and (args.endpoints or args.scale_keys < args.keys):
        parser.error("--scale starts its own cluster and needs --scale-keys >= --keys")
    return args


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    plan = Plan(args.seconds, args.max_ops, args.warmup)
    etcd_binary = shutil.which("etcd") if args.vs_etcd or args.scale else None
    if args.scale:
        report = {"command": sys.argv, "scale": await run_scale(args, workdir, etcd_binary)}
        print_scale(report["scale"])
        return report
    if args.vs_etcd and etcd_binary is None:
        console.print("[yellow]--vs-etcd: no `etcd` binary on PATH; continuing without etcd[/]")
    etcd = etcd_version(etcd_binary) if etcd_binary else None
    report: dict[str, Any] = {
        "command": sys.argv, "config": {k: str(v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "etcd": etcd,
                    "loadavg_at_start": os.getloadavg()},
        "notes": notes(args, etcd)}
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)))
        targets, pids, logs = await start_ours(args, workdir, stack, session)
        if not args.no_raw:
            raw, raw_pids, raw_logs = await start_raw(workdir, stack)
            targets.append(raw)
            pids.update(raw_pids)
            logs += raw_logs
        if etcd_binary:
            etcd_target, etcd_pids = await start_etcd(etcd_binary, workdir, stack, session,
                                                      args.keys)
            targets.append(etcd_target)
            pids.update(etcd_pids)
        console.log(f"clusters up: {', '.join(t.name for t in targets)}; measuring")
        own = [os.getpid(), *pids.values()]
        busy, own_cpu, start = machine_busy_seconds(), sum(map(cpu_seconds, own)), time.monotonic()
        points = await measure_all(targets, concurrencies, plan, args.repeat, pids,
                                   frozenset(filter(None, args.ops.split(","))))
        report["background_cpu_percent"] = background_cpu(own, busy, own_cpu,
                                                          time.monotonic() - start)
        report["points"] = [p.to_json() for p in points]
        report["ratios"] = ratios(points, concurrencies)
        if args.idle:
            report["idle_cpu_percent"] = await idle_cpu(pids, args.idle_seconds)
        if args.embedded:
            report["embedded_calls_per_s"] = await asyncio.to_thread(
                measure_embedded, workdir, args.repeat, 1.0)
        report["log_issues"] = scan_logs(logs)
    print_report(report, points, args.repeat)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cs-bench-"))
    started = time.monotonic()
    try:
        # The shared load generator runs on the same loop as our nodes (uvloop where present).
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            report = runner.run(run(args, workdir))
    except BenchError as exc:
        console.print(f"[red]benchmark failed: {exc}[/]")
        args.keep = any(workdir.iterdir())   # its logs explain the failure
        return 1
    finally:
        if args.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["wall_seconds"] = time.monotonic() - started
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
        console.print(f"saved {args.json}")
    console.print(f"total {report['wall_seconds']:.0f} s")
    return 0
