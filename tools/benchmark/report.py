"""The report: tables of points and ratios, idle CPU and embedded reads, warnings found in the
clusters' logs, the background load, and the notes on method."""
from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from .common import Point, console


def scan_logs(paths: list[Path], limit: int = 3) -> dict[str, dict[str, Any]]:
    """Warnings, errors and tracebacks in the clusters' logs (first few distinct lines)."""
    found = {}
    for path in paths:
        if not path.exists():
            continue
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()
                 if any(mark in line for mark in ("WARNING", "ERROR", "CRITICAL", "Traceback"))]
        if lines:
            found[path.name] = {"count": len(lines), "first": list(dict.fromkeys(
                line[:240] for line in lines))[:limit]}
    return found


def rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def print_points(points: list[Point], repeat: int) -> None:
    table = Table(title=f"Median of {repeat} run(s) per point")
    for column in ("system", "op", "c", "ops/s", "ops/s min-max", "p50 ms", "p99 ms",
                   "server CPU us/op", "client CPU us/op", "errors"):
        table.add_column(column, justify="left" if column in ("system", "op") else "right")
    for point in points:
        low, high = point.spread()
        errors = sum(run.errors for run in point.runs)
        table.add_row(point.system, point.op, str(point.concurrency),
                      rate(point.median("ops_per_s")), f"{rate(low)}-{rate(high)}",
                      f"{point.median('p50_ms'):.2f}", f"{point.median('p99_ms'):.2f}",
                      f"{point.median('server_cpu_us'):.0f}",
                      f"{point.median('client_cpu_us'):.0f}",
                      f"[red]{errors}[/]" if errors else "0")
    console.print(table)


def print_ratios(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title="ours / other (throughput: higher is better; latency: lower is better)")
    for column in ("comparison", "c", "ops/s ratio", "per-round min-max", "p50 ratio", "p99 ratio",
                   "server CPU/op ratio"):
        table.add_column(column, justify="left" if column == "comparison" else "right")
    for row in rows:
        low, high = row["throughput_rounds"]
        table.add_row(row["label"], str(row["concurrency"]), f"{row['throughput']:.2f}x",
                      f"{low:.2f}-{high:.2f}x", f"{row['p50']:.2f}x", f"{row['p99']:.2f}x",
                      f"{row['server_cpu']:.2f}x")
    console.print(table)


def print_mapping(title: str, columns: tuple[str, str], rows: dict[str, str]) -> None:
    table = Table(title=title)
    table.add_column(columns[0])
    table.add_column(columns[1], justify="right")
    for label, value in rows.items():
        table.add_row(label, value)
    console.print(table)


def notes(args: argparse.Namespace, etcd: str | None) -> list[str]:
    lines = [
        f"load: one aiohttp client process on {type(asyncio.get_running_loop()).__module__}'s "
        f"loop, keep-alive; {args.seconds:g} s (<= {args.max_ops:,} "
        f"requests) per point after {args.warmup:g} s warm-up; {args.keys} 16-byte keys, "
        f"100-byte values",
        "writes go to the leader; reads go round-robin per request to all 3 nodes/members",
        ("ours: the cluster at --endpoints" if args.endpoints else
         f"ours: durability=\"{args.durability}\" ("
         + ("journal fsynced on a majority before each ack, one flush per batch"
            if args.durability == "fsync" else "journal mmapped, not fsynced")
         + "), peer traffic encrypted") + "; session reads carry min_index of the last prefill write",
    ]
    if not args.no_raw:
        lines.append("raw pysyncobj: SyncObjConf defaults (appendEntriesUseBatch=True, "
                     "appendEntriesPeriod 0.1 s, autoTick 0.05 s, memory journal, no password; "
                     "bindAddress=127.0.0.1), ReplDict.set driven inside the leader process "
                     "with bounded in-flight commands")
    if etcd:
        lines.append(f"etcd: {etcd}, v3 JSON gateway, WAL fsynced per write")
    return lines


def print_report(report: dict[str, Any], points: list[Point], repeat: int) -> None:
    print_points(points, repeat)
    print_ratios(report["ratios"])
    if "idle_cpu_percent" in report:
        print_mapping("Idle CPU (% of one core)", ("process", "CPU %"),
                      {k: f"{v:.2f}" for k, v in report["idle_cpu_percent"].items()})
    if "embedded_calls_per_s" in report:
        print_mapping(f"Embedded local reads (median of {repeat})", ("call", "calls/s"),
                      {k: f"{statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f})"
                       for k, v in report["embedded_calls_per_s"].items()})
    for name, issues in report["log_issues"].items():
        console.print(f"[yellow]log {name}: {issues['count']} warning/error lines[/], e.g.")
        for line in issues["first"]:
            console.print(f"    {line}", markup=False, highlight=False)
    background = report["background_cpu_percent"]
    style = "yellow" if background > 10 else "default"
    console.print(f"[{style}]other processes on this machine used {background:.1f}% of one core "
                  f"during the measurements[/] (load average at start: "
                  f"{report['machine']['loadavg_at_start'][0]:.2f})")
    for line in report["notes"]:
        console.print(f"note: {line}", highlight=False)


def print_scale(scale: dict[str, Any]) -> None:
    """The ``--scale`` figures: memory, snapshots under load, restart."""
    ours = scale["ours"]
    memory = {}
    for when in ("loaded", "after_snapshots"):
        for label, figures in ours[when].items():
            memory[f"{label} ({when.replace('_', ' ')})"] = (
                f"{figures['rss_mib']:,.0f} (peak {figures['peak_mib']:,.0f})")
    for label, figures in scale.get("etcd", {}).get("loaded", {}).items():
        memory[f"{label} (loaded)"] = f"{figures['rss_mib']:,.0f} (peak {figures['peak_mib']:,.0f})"
    print_mapping(f"RSS with {scale['keys']:,} keys (MiB)", ("process", "RSS"), memory)
    load = ours["under_load"]
    rows = {"puts/s during the snapshots (16 in flight)": f"{load['puts_per_s']:,.0f}",
            "put errors": str(load["put_errors"]),
            "leader changes (terms seen)": f"{load['leader_changes']} {load['terms_seen']}"}
    for node, figures in load["nodes"].items():
        times = ", ".join(f"{t:.2f}" for t in figures["snapshot_s"]) or "-"
        rows[f"{node}: snapshots / seconds each"] = f"{figures['snapshots']} / {times}"
        rows[f"{node}: snapshot file MiB"] = f"{figures['snapshot_mib']:.1f}"
        rows[f"{node}: longest status gap s"] = f"{figures['longest_status_gap_s']:.2f}"
    restart = ours["restart"]
    rows[f"restart to serving ({restart['node']}) s"] = f"{restart['seconds']:.2f}"
    rows[f"{restart['node']} RSS after restart MiB"] = f"{restart['rss_mib']:,.0f}"
    for system in ("ours", "etcd"):
        if system in scale:
            loading = scale[system]["load"]
            rows[f"{system}: load s (batches of 128 puts retried)"] = (
                f"{loading['seconds']:.1f} ({loading['retried']} {loading['retry_reasons']})")
    loading = ours["load"]
    rows["ours, during the load: leader changes"] = str(loading["leader_changes"])
    rows["ours, during the load: snapshot seconds (all nodes)"] = (
        ", ".join(f"{t:.1f}" for t in loading["snapshot_s"]) or "-")
    rows["ours, during the load: longest status gap s"] = f"{loading['longest_status_gap_s']:.2f}"
    print_mapping(f"Snapshots under load, restart (snapshot every "
                  f"{scale['snapshot_entries']:,} entries)", ("figure", "value"), rows)
