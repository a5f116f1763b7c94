"""What every part of the benchmark shares: the data (16-byte keys, 100-byte values), the
result types (``Run``, ``Point``, ``Plan``), bounded polling, and the processes it starts
(``spawn``, ``stop_process``: by PID only) with their CPU and memory from /proc."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from rich.console import Console


VALUE = base64.b64encode(random.Random(7).randbytes(75)).decode()   # 100 printable bytes


READ_LEVELS = ("local", "session", "linearizable")


STARTUP_TIMEOUT_S = 30.0


REQUEST_TIMEOUT_S = 30.0


STOP_GRACE_S = 5.0


console = Console(width=None if sys.stdout.isatty() else 120)


class BenchError(RuntimeError):
    pass


def key(i: int) -> str:
    return f"k{i:015d}"   # 16 bytes, the same keys as the raw helper's


@dataclass
class Run:
    ops: int
    errors: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    first_error: str | None = None
    server_cpu_us: float = float("nan")   # CPU of the system's processes per answered op
    client_cpu_us: float = float("nan")   # CPU of this load generator per answered op

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def summarize(latencies_ms: list[float], errors: int, elapsed_s: float,
              first_error: str | None) -> Run:
    ordered = sorted(latencies_ms)
    return Run(len(ordered), errors, elapsed_s, percentile(ordered, 0.50),
               percentile(ordered, 0.99), first_error)


@dataclass
class Point:
    system: str
    op: str
    concurrency: int
    runs: list[Run] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(run, attribute) for run in self.runs)

    def spread(self) -> tuple[float, float]:
        rates = [run.ops_per_s for run in self.runs]
        return min(rates), max(rates)

    def to_json(self) -> dict[str, Any]:
        return {"system": self.system, "op": self.op, "concurrency": self.concurrency,
                "median": {a: self.median(a) for a in ("ops_per_s", "p50_ms", "p99_ms")},
                "runs": [{**asdict(run), "ops_per_s": run.ops_per_s} for run in self.runs]}


@dataclass(frozen=True)
class Plan:
    seconds: float
    max_ops: int
    warmup: float


async def poll(find: Callable[[], Awaitable[Any]], what: str,
               timeout: float = STARTUP_TIMEOUT_S) -> Any:
    """Await ``find()`` until it returns something other than None, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await find()
        if found is not None:
            return found
        await asyncio.sleep(0.2)
    raise BenchError(f"{what} within {timeout:g}s")


async def spawn(command: list[str], log_path: Path, pipes: bool = False
                ) -> asyncio.subprocess.Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pipe = asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL
    with open(log_path, "wb") as log:
        return await asyncio.create_subprocess_exec(
            *command, stdin=pipe, stdout=pipe if pipes else log, stderr=log,
            start_new_session=True, limit=64 * 1024 * 1024)


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """Close stdin (the raw helper exits on EOF), then SIGTERM, then SIGKILL: by PID only."""
    if process.stdin is not None:
        process.stdin.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if process.returncode is not None:
            return
        process.send_signal(signum)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), STOP_GRACE_S * 2)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
