"""consensus_store's side: a 3-node cluster of ours started for the run (or the one at
``--endpoints``), prefilled, with its HTTP workloads (put, get at each read level), the native
client target, and a second cluster with the other durability mode (``--also-durability``)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp

from consensus_store.launcher import LocalCluster, write_cluster_configs

from .common import READ_LEVELS, VALUE, poll
from .load import HttpTarget, Target, Workload, bodies, start_client_target


async def start_ours(args: argparse.Namespace, workdir: Path, stack: contextlib.AsyncExitStack,
                     session: aiohttp.ClientSession
                     ) -> tuple[list[Target], dict[str, int], list[Path]]:
    """Our cluster (started here unless --endpoints): targets, node PIDs, node log files."""
    pids: dict[str, int] = {}
    logs: list[Path] = []
    native: list[str] = []
    if args.endpoints:
        endpoints, token = args.endpoints.split(","), args.token
    else:
        configs = write_cluster_configs(workdir / "ours", durability=args.durability)
        if args.also_durability:
            targets_fsync, fsync_pids, fsync_logs = await start_other_durability(
                args, workdir, stack, session)
        cluster = LocalCluster(configs, data_root=workdir / "ours")
        stack.push_async_callback(asyncio.to_thread, cluster.stop)
        cluster.start()
        endpoints, token = cluster.endpoints, cluster.token
        native = [f"tcp://{n.config.native_address}" for n in cluster.nodes.values()
                  if n.config.native_address is not None]
        for node in cluster.nodes.values():
            assert node.process is not None
            pids[f"ours {node.id}"] = node.process.pid
            logs.append(node.log_path)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    leader = await poll(lambda: ours_leader(session, endpoints, headers),
                        "no consensus_store leader")
    target = HttpTarget("ours", session, {"put": ours_put(leader, headers, args.keys)})
    min_index = (await target.prefill())["header"]["applied_index"]
    await poll(lambda: ours_applied_everywhere(session, endpoints, headers, min_index),
               "not every node applied the prefill")
    for level in READ_LEVELS:
        target.workloads[f"get {level}"] = ours_get(endpoints, headers, level, min_index, args.keys)
    await target.check()
    targets: list[Target] = [target]
    if args.also_durability and not args.endpoints:
        targets += targets_fsync
        pids.update(fsync_pids)
        logs += fsync_logs
    if native and len(native) == len(endpoints) and not args.no_client:
        targets.append(await start_client_target(native, endpoints.index(leader), token,
                                                 args.keys, stack))
    return targets, pids, logs


async def start_other_durability(args: argparse.Namespace, workdir: Path,
                                 stack: contextlib.AsyncExitStack, session: aiohttp.ClientSession
                                 ) -> tuple[list[Target], dict[str, int], list[Path]]:
    """A second cluster of ours with the other durability mode, measured for puts only (reads
    do not touch the disk), so both modes are compared in one run."""
    name = f"ours-{args.also_durability}"
    configs = write_cluster_configs(workdir / name, durability=args.also_durability)
    cluster = LocalCluster(configs, data_root=workdir / name)
    stack.push_async_callback(asyncio.to_thread, cluster.stop)
    cluster.start()
    headers = {"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"}
    leader = await poll(lambda: ours_leader(session, cluster.endpoints, headers),
                        f"no {name} leader")
    target = HttpTarget(name, session, {"put": ours_put(leader, headers, args.keys)})
    await target.prefill()
    pids = {f"{name} {n.id}": n.process.pid for n in cluster.nodes.values() if n.process}
    return [target], pids, [n.log_path for n in cluster.nodes.values()]


async def ours_statuses(session: aiohttp.ClientSession, endpoints: list[str],
                        headers: dict[str, str]) -> list[dict[str, Any]] | None:
    """/v1/status of every node, or None while one does not answer."""
    statuses = []
    for endpoint in endpoints:
        try:
            async with session.get(f"{endpoint}/v1/status", headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=2)) as response:
                statuses.append(await response.json() if response.status == 200 else {})
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None
    return statuses


async def ours_leader(session: aiohttp.ClientSession, endpoints: list[str],
                      headers: dict[str, str]) -> str | None:
    statuses = await ours_statuses(session, endpoints, headers) or []
    leaders = [endpoint for endpoint, status in zip(endpoints, statuses)
               if status.get("role") == "leader" and status.get("ready")]
    return leaders[0] if len(leaders) == 1 else None


async def ours_applied_everywhere(session: aiohttp.ClientSession, endpoints: list[str],
                                  headers: dict[str, str], index: int) -> bool | None:
    """True once every node applied ``index`` (local reads of the prefill must find it)."""
    statuses = await ours_statuses(session, endpoints, headers)
    if statuses and all(status.get("applied_index", 0) >= index for status in statuses):
        return True
    return None


def ours_put(leader: str, headers: dict[str, str], keys: int) -> Workload:
    return Workload("ours", "put", (f"{leader}/v1/kv/put",),
                    bodies(lambda k: {"key": k, "value": VALUE}, keys), headers,
                    lambda answer: (answer.get("kv") or {}).get("value") == VALUE)


def ours_get(endpoints: list[str], headers: dict[str, str], level: str, min_index: int,
             keys: int) -> Workload:
    extra = {"min_index": min_index} if level == "session" else {}
    return Workload("ours", f"get {level}", tuple(f"{e}/v1/kv/get" for e in endpoints),
                    bodies(lambda k: {"key": k, "consistency": level, **extra}, keys), headers,
                    lambda answer: (answer.get("kv") or {}).get("value") == VALUE)
