"""The raw pysyncobj baseline: three ``raw_node.py`` processes (pysyncobj's defaults, no HTTP),
driven from inside the leader over a JSON-lines pipe."""
from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consensus_store.launcher import free_ports

from .common import VALUE, BenchError, Plan, Run, poll, spawn, stop_process, summarize

RAW_SCRIPT = Path(__file__).resolve().parent / "raw_node.py"


@dataclass
class RawTarget:
    leader: asyncio.subprocess.Process
    name: str = "raw"
    ops: list[str] = field(default_factory=lambda: ["put"])

    async def measure(self, op: str, concurrency: int, plan: Plan) -> Run:
        command = {"cmd": "load", "concurrency": concurrency, "seconds": plan.seconds,
                   "max_ops": plan.max_ops, "warmup": plan.warmup, "value": VALUE}
        answer = await ask(self.leader, command, plan.seconds + plan.warmup + 30)
        if not answer.get("ok"):
            raise BenchError(f"raw pysyncobj load failed: {answer.get('error')}")
        return summarize(answer["latencies_ms"], answer["errors"], answer["elapsed_s"],
                         answer["first_error"])


async def start_raw(workdir: Path, stack: contextlib.AsyncExitStack
                    ) -> tuple[RawTarget, dict[str, int], list[Path]]:
    addresses = [f"127.0.0.1:{port}" for port in free_ports(3)]
    processes, logs = [], []
    for i, address in enumerate(addresses):
        others = ",".join(a for a in addresses if a != address)
        logs.append(workdir / "raw" / f"r{i + 1}.log")
        command = [sys.executable, str(RAW_SCRIPT), "--self", address, "--peers", others]
        processes.append(await spawn(command, logs[-1], pipes=True))
        stack.push_async_callback(stop_process, processes[-1])

    async def find_leader() -> asyncio.subprocess.Process | None:
        """The process that leads, once every node is ready and names it."""
        states = [await ask(p, {"cmd": "status"}, 5) for p in processes]
        leaders = [i for i, state in enumerate(states) if state.get("is_leader")]
        if len(leaders) != 1 or not all(state.get("ready") for state in states):
            return None
        agreed = all(state.get("leader") == addresses[leaders[0]] for state in states)
        return processes[leaders[0]] if agreed else None

    leader = await poll(find_leader, "no raw pysyncobj leader")
    pids = {f"raw r{i + 1}": p.pid for i, p in enumerate(processes)}
    return RawTarget(leader), pids, logs


async def ask(process: asyncio.subprocess.Process, command: dict[str, Any],
              timeout: float) -> dict[str, Any]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(command).encode() + b"\n")
    await process.stdin.drain()
    line = await asyncio.wait_for(process.stdout.readline(), timeout)
    if not line:
        raise BenchError(f"raw pysyncobj process {process.pid} exited")
    return json.loads(line)
