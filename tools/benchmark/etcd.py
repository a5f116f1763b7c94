"""etcd's side: a 3-member etcd cluster on 127.0.0.1 (WAL fsynced per write, as etcd does),
its v3 JSON gateway workloads (put, serializable range, linearizable range), its leader and
version."""
from __future__ import annotations

import base64
import contextlib
import os
import subprocess
from pathlib import Path

import aiohttp

from consensus_store.launcher import free_ports

from .common import VALUE, poll, spawn, stop_process
from .load import HttpTarget, Workload, bodies, post_json


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def start_etcd(binary: str, workdir: Path, stack: contextlib.AsyncExitStack,
                     session: aiohttp.ClientSession, keys: int
                     ) -> tuple[HttpTarget, dict[str, int]]:
    """The etcd target: put, serializable and linearizable range, prefilled and checked."""
    client_urls, leader, pids = await start_etcd_members(binary, workdir, stack, session)
    headers = {"Content-Type": "application/json"}
    workloads = {"put": Workload("etcd", "put", (f"{leader}/v3/kv/put",),
                                 bodies(lambda k: {"key": b64(k), "value": b64(VALUE)}, keys),
                                 headers, lambda answer: "header" in answer)}
    for level, extra in (("serializable", {"serializable": True}), ("linearizable", {})):
        workloads[f"range {level}"] = Workload(
            "etcd", f"range {level}", tuple(f"{u}/v3/kv/range" for u in client_urls),
            bodies(lambda k: {"key": b64(k), **extra}, keys), headers,
            lambda answer: answer.get("kvs", [{}])[0].get("value") == b64(VALUE))
    target = HttpTarget("etcd", session, workloads)
    await target.prefill()
    await target.check()
    return target, pids


async def start_etcd_members(binary: str, workdir: Path, stack: contextlib.AsyncExitStack,
                             session: aiohttp.ClientSession
                             ) -> tuple[list[str], str, dict[str, int]]:
    """Three members (stopped with ``stack``): (client URLs, the leader's, PIDs by label)."""
    ports = free_ports(6)
    names = [f"e{i + 1}" for i in range(3)]
    peer_urls = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(3)]
    client_urls = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(3)]
    initial = ",".join(f"{n}={u}" for n, u in zip(names, peer_urls))
    pids = {}
    for name, peer, client in zip(names, peer_urls, client_urls):
        flags = ["--name", name, "--data-dir", str(workdir / "etcd" / name),
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", f"bench-{os.getpid()}",
                 "--logger", "zap", "--log-level", "warn"]
        process = await spawn([binary, *flags], workdir / "etcd" / f"{name}.log")
        stack.push_async_callback(stop_process, process)
        pids[f"etcd {name}"] = process.pid
    leader = await poll(lambda: etcd_leader(session, client_urls), "no etcd leader")
    return client_urls, leader, pids


async def etcd_leader(session: aiohttp.ClientSession, client_urls: list[str]) -> str | None:
    members, leaders = {}, set()
    for url in client_urls:
        status = await post_json(session, f"{url}/v3/maintenance/status", {})
        if status is None or not status.get("leader"):
            return None
        members[status["header"]["member_id"]] = url
        leaders.add(status["leader"])
    return members.get(leaders.pop()) if len(leaders) == 1 else None


def etcd_version(binary: str) -> str:
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return result.stdout.splitlines()[0] if result.stdout else "unknown"
