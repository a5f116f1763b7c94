"""Benchmark consensus_store against the raw pysyncobj engine and (optionally) etcd, in one run.

Method
    * Clusters: a local 3-node consensus_store cluster (separate processes, temp dir) unless
      ``--endpoints`` names a running one; a raw pysyncobj cluster (three processes running
      ``tools/bench_raw_pysyncobj.py``); with ``--vs-etcd`` a 3-member etcd cluster.  Everything
      listens on 127.0.0.1 on free ports.  All clusters stay up for the whole run.
    * One load generator for every HTTP server: this process, one event loop (uvloop where
      installed, as in our nodes), one aiohttp ClientSession with keep-alive connections,
      pre-serialized bodies, ``concurrency`` workers each with one request in flight.  Ratios
      therefore compare servers, not clients.
    * Writes go to the leader's endpoint.  Reads go round-robin, request by request, to every
      node (a follower serves local/session reads itself and forwards a linearizable read's
      barrier to the leader; etcd members do the same with ReadIndex).
    * 16-byte keys (a pool of ``--keys``, written once before reads), 100-byte random printable
      values.  Session reads carry ``min_index`` = the index of the last prefill write.
    * Each point (system, op, concurrency) runs for at most ``--seconds`` and at most
      ``--max-ops`` requests after an unmeasured ``--warmup``; ops/s counts successful answers
      over the time until the last one returned; p50/p99 are per request.  ``--repeat`` rounds
      run every system in turn (interleaved, so drift hits all alike); the table shows medians
      and the min-max of ops/s.  Ratios are medians too, with the min-max of per-round ratios.
    * CPU per operation: utime+stime of the system's processes (/proc/PID/stat) and of this
      load generator over each measured run, divided by the answers counted.
    * Raw pysyncobj: ``ReplDict.set`` driven from inside the leader process (bounded in-flight
      commands, completion callbacks on pysyncobj's tick thread), pysyncobj's default
      configuration (``appendEntriesUseBatch=True``, 100 ms append period, memory journal, no
      encryption).  No HTTP is involved, so ours/raw is "product over engine defaults".
    * ``--embedded``: ``Node.get`` / ``Node.get_value`` calls in a tight, bounded loop on a node
      embedded in this process (its own small cluster).  ``--idle``: CPU of every cluster
      process over ``--idle-seconds`` (utime+stime from /proc/PID/stat, % of one core).

Caveats
    * One machine (2 cores here) runs servers and client: at high concurrency the Python client
      itself costs ~60 us of CPU per HTTP request, which weighs on every HTTP figure alike.
    * etcd fsyncs its WAL before acknowledging; so does consensus_store with its default
      ``durability = "fsync"`` (``--durability process`` measures the other mode).  Our peer
      traffic is also encrypted (peer secret, AES-GCM); etcd's here is not.
    * Single runs are noisy (+-10-15 %); compare ratios taken in one run.  Other work on the
      machine skews everything: the report says how much CPU other processes used meanwhile.
    * Only processes this script started are signalled, always by their PID.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from consensus_store.client import AsyncClient  # noqa: E402
from consensus_store.event_loop import new_event_loop  # noqa: E402
from consensus_store.errors import ConsensusStoreError  # noqa: E402
from consensus_store.launcher import LocalCluster, free_ports, write_cluster_configs  # noqa: E402

RAW_SCRIPT = Path(__file__).resolve().parent / "bench_raw_pysyncobj.py"
VALUE = base64.b64encode(random.Random(7).randbytes(75)).decode()   # 100 printable bytes
READ_LEVELS = ("local", "session", "linearizable")
STARTUP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
RATIOS = [  # (label, our op, other system, its op)
    ("put vs raw pysyncobj put", "put", "raw", "put"),
    ("put vs etcd put", "put", "etcd", "put"),
    ("put vs put of the --also-durability cluster", "put", "ours-fsync", "put"),
    ("put vs put of the --also-durability cluster", "put", "ours-process", "put"),
    ("get local vs etcd serializable", "get local", "etcd", "range serializable"),
    ("get session vs etcd serializable", "get session", "etcd", "range serializable"),
    ("get linearizable vs etcd linearizable", "get linearizable", "etcd", "range linearizable"),
    ("python client (native) put vs etcd put", "client put", "etcd", "put"),
    ("python client (native) get session vs etcd serializable", "client get session", "etcd",
     "range serializable"),
]

console = Console(width=None if sys.stdout.isatty() else 120)


class BenchError(RuntimeError):
    pass


def key(i: int) -> str:
    return f"k{i:015d}"   # 16 bytes, the same keys as the raw helper's


# ---- results --------------------------------------------------------------------------------
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


# ---- the HTTP load generator ------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """One operation against one HTTP system: where to send what, and how to check an answer."""
    system: str
    op: str
    urls: tuple[str, ...]
    bodies: tuple[bytes, ...]
    headers: dict[str, str]
    check: Callable[[dict[str, Any]], bool]

    def request(self, i: int) -> tuple[str, bytes]:
        return self.urls[i % len(self.urls)], self.bodies[i % len(self.bodies)]


async def http_load(session: aiohttp.ClientSession, workload: Workload, concurrency: int,
                    seconds: float, max_ops: int) -> Run:
    latencies: list[float] = []
    errors: list[str] = []
    counter = itertools.count()
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline and (i := next(counter)) < max_ops:
            url, body = workload.request(i)
            sent = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=workload.headers) as response:
                    payload = await response.read()
                    status = response.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if status == 200:
                latencies.append((time.perf_counter() - sent) * 1000)
            else:
                errors.append(f"HTTP {status}: {payload[:200].decode(errors='replace')}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarize(latencies, len(errors), time.perf_counter() - start,
                     errors[0] if errors else None)


async def probe(session: aiohttp.ClientSession, workload: Workload) -> dict[str, Any]:
    """One request, answer parsed and checked: a benchmark of failing requests is worthless."""
    url, body = workload.request(0)
    async with session.post(url, data=body, headers=workload.headers) as response:
        text = await response.text()
        status = response.status
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if status != 200 or not isinstance(answer, dict) or not workload.check(answer):
        raise BenchError(f"{workload.system} {workload.op}: unexpected answer {status} "
                         f"{text[:300]}")
    return answer


async def post_json(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                    headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    """POST for control-plane requests; None when the server is not (yet) answering."""
    try:
        async with session.post(url, json=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=2)) as response:
            return await response.json() if response.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None


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


# ---- targets: what the measuring loop drives ----------------------------------------------------
class Target(Protocol):
    name: str
    ops: list[str]

    async def measure(self, op: str, concurrency: int, plan: Plan) -> Run: ...


@dataclass
class HttpTarget:
    name: str
    session: aiohttp.ClientSession
    workloads: dict[str, Workload]

    @property
    def ops(self) -> list[str]:
        return list(self.workloads)

    async def measure(self, op: str, concurrency: int, plan: Plan) -> Run:
        return await http_load(self.session, self.workloads[op], concurrency, plan.seconds,
                               plan.max_ops)

    async def prefill(self) -> dict[str, Any]:
        """Write every key once; returns one checked put answer."""
        writes = self.workloads["put"]
        run = await http_load(self.session, writes, 16, STARTUP_TIMEOUT_S, len(writes.bodies))
        if run.errors or run.ops != len(writes.bodies):
            raise BenchError(f"{self.name}: prefill failed: {run.first_error}")
        return await probe(self.session, writes)

    async def check(self) -> None:
        for workload in self.workloads.values():
            await probe(self.session, workload)


@dataclass
class ClientTarget:
    """Our own Python ``AsyncClient`` over the native protocol: the same load shape as the HTTP
    generator (N concurrent requests in one process), but the client is ours, so this compares
    what a Python program gets from us with what the shared HTTP generator gets from etcd."""
    name: str
    client: AsyncClient
    keys: int
    ops: list[str] = field(default_factory=lambda: ["client put", "client get session"])

    async def measure(self, op: str, concurrency: int, plan: Plan) -> Run:
        return await self._load(op, concurrency, plan.seconds, plan.max_ops)

    async def _load(self, op: str, concurrency: int, seconds: float, max_ops: int) -> Run:
        latencies: list[float] = []
        errors: list[str] = []
        counter = itertools.count()
        start = time.perf_counter()
        deadline = start + seconds
        call = (lambda i: self.client.put(key(i % self.keys), VALUE)) if op == "client put" else \
            (lambda i: self.client.get(key(i % self.keys), consistency="session"))

        async def worker() -> None:
            while time.perf_counter() < deadline and (i := next(counter)) < max_ops:
                sent = time.perf_counter()
                try:
                    answer = await call(i)
                except ConsensusStoreError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if answer is None or answer.value != VALUE:
                    errors.append(f"unexpected answer {answer!r:.200}")
                    continue
                latencies.append((time.perf_counter() - sent) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return summarize(latencies, len(errors), time.perf_counter() - start,
                         errors[0] if errors else None)


async def start_client_target(native_endpoints: list[str], leader_index: int, token: str,
                              keys: int, stack: contextlib.AsyncExitStack) -> ClientTarget:
    ordered = native_endpoints[leader_index:] + native_endpoints[:leader_index]  # leader first
    client = AsyncClient(ordered, token=token, timeout=REQUEST_TIMEOUT_S)
    stack.push_async_callback(client.aclose)
    return ClientTarget("ours", client, keys)


# ---- consensus_store ----------------------------------------------------------------------------
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


def bodies(make: Callable[[str], dict[str, Any]], keys: int) -> tuple[bytes, ...]:
    """One pre-serialized JSON body per key of the pool."""
    return tuple(json.dumps(make(key(i))).encode() for i in range(keys))


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


# ---- etcd ---------------------------------------------------------------------------------------
def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def start_etcd(binary: str, workdir: Path, stack: contextlib.AsyncExitStack,
                     session: aiohttp.ClientSession, keys: int
                     ) -> tuple[HttpTarget, dict[str, int]]:
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


# ---- raw pysyncobj ------------------------------------------------------------------------------
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


# ---- processes ----------------------------------------------------------------------------------
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


# ---- measuring ----------------------------------------------------------------------------------
async def measure_all(targets: list[Target], concurrencies: list[int], plan: Plan,
                      repeat: int, pids: dict[str, int],
                      only_ops: frozenset[str] = frozenset()) -> list[Point]:
    points: dict[tuple[str, str, int], Point] = {}
    warmup = Plan(plan.warmup, plan.max_ops, 0.0)
    measured = Plan(plan.seconds, plan.max_ops, 0.0)
    for round_number in range(1, repeat + 1):
        for target in targets:
            servers = [pid for name, pid in pids.items() if name.startswith(f"{target.name} ")]
            for op in target.ops:
                if only_ops and op not in only_ops:
                    continue
                for concurrency in concurrencies:
                    point = points.setdefault((target.name, op, concurrency),
                                              Point(target.name, op, concurrency))
                    if plan.warmup > 0:
                        await target.measure(op, concurrency, warmup)
                    server_before, client_before = cpu_of(servers), own_cpu_seconds()
                    run = await target.measure(op, concurrency, measured)
                    if run.ops:
                        run.server_cpu_us = (cpu_of(servers) - server_before) / run.ops * 1e6
                        run.client_cpu_us = (own_cpu_seconds() - client_before) / run.ops * 1e6
                    point.runs.append(run)
                    error = f" [red]{run.errors} errors: {run.first_error}[/]" if run.errors else ""
                    console.log(f"{round_number}/{repeat} {target.name:>4} {op:<18} "
                                f"c={concurrency:<3}{run.ops_per_s:8.1f}/s "
                                f"p50 {run.p50_ms:6.2f} p99 {run.p99_ms:6.2f} ms "
                                f"cpu/op {run.server_cpu_us:5.0f}+{run.client_cpu_us:3.0f} us"
                                f"{error}", highlight=False)
    return list(points.values())


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ratios(points: list[Point], concurrencies: list[int]) -> list[dict[str, Any]]:
    by_key = {(p.system, p.op, p.concurrency): p for p in points}
    rows = []
    for label, ours_op, system, other_op in RATIOS:
        for concurrency in concurrencies:
            ours, other = by_key.get(("ours", ours_op, concurrency)), by_key.get(
                (system, other_op, concurrency))
            if ours is None or other is None or not other.median("ops_per_s"):
                continue
            paired = [a.ops_per_s / b.ops_per_s for a, b in zip(ours.runs, other.runs)
                      if b.ops_per_s]
            rows.append({"label": label, "concurrency": concurrency,
                         "throughput": ours.median("ops_per_s") / other.median("ops_per_s"),
                         "throughput_rounds": [min(paired), max(paired)],
                         "p50": ours.median("p50_ms") / other.median("p50_ms"),
                         "server_cpu": ours.median("server_cpu_us") / other.median("server_cpu_us"),
                         "p99": ours.median("p99_ms") / other.median("p99_ms")})
    return rows


def machine_busy_seconds() -> float:
    """user+nice+system time of all cores since boot (/proc/stat; irq, softirq and steal are left
    out: they are not charged to processes, so they would count our own loopback traffic)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4]]
    return sum(ticks) / os.sysconf("SC_CLK_TCK")


def background_cpu(pids: list[int], busy_before: float, ours_before: float,
                   elapsed: float) -> float:
    """% of one core used by processes other than ``pids`` (noise from elsewhere)."""
    ours = sum(cpu_seconds(pid) for pid in pids) - ours_before
    return 100 * (machine_busy_seconds() - busy_before - ours) / elapsed


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    await asyncio.sleep(1.0)   # let the last load's after-effects settle
    before, start = {label: cpu_seconds(pid) for label, pid in pids.items()}, time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - start
    return {label: 100 * (cpu_seconds(pid) - before[label]) / elapsed
            for label, pid in pids.items()}


def calls_per_second(function: Callable[[str], Any], argument: str, max_calls: int,
                     max_seconds: float, chunk: int = 20_000) -> float:
    calls, start = 0, time.perf_counter()
    while calls < max_calls and time.perf_counter() - start < max_seconds:
        for _ in itertools.repeat(None, chunk):
            function(argument)
        calls += chunk
    return calls / (time.perf_counter() - start)


def measure_embedded(workdir: Path, repeat: int, max_seconds: float) -> dict[str, list[float]]:
    """Local reads on a node embedded in this process (2 peer processes + this one)."""
    from consensus_store.node import Node
    paths = write_cluster_configs(workdir / "embedded")
    peers = LocalCluster(paths[:2], data_root=workdir / "embedded")
    node = None
    try:
        peers.start()
        node = Node.from_config(paths[2], data_dir=workdir / "embedded" / "n3")
        blocking_put(f"http://{node.config.api_address}", node.config.admin_token, key(0), VALUE)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while node.get_value(key(0)) != VALUE:
            if time.monotonic() > deadline:
                raise BenchError("embedded node: an acknowledged put never became readable")
            time.sleep(0.05)
        plain = {key(0): VALUE}
        functions = {"node.get(key)": node.get, "node.get_value(key)": node.get_value,
                     "dict.get(key) (reference)": plain.get}
        return {name: [calls_per_second(function, key(0), 50_000_000, max_seconds)
                       for _ in range(repeat)] for name, function in functions.items()}
    finally:
        if node is not None:
            node.stop()
        peers.stop()


def blocking_put(endpoint: str, token: str, name: str, value: str) -> None:
    """One put over the HTTP API (stdlib only), retried until the cluster has a leader."""
    request = urllib.request.Request(
        f"{endpoint}/v1/kv/put", data=json.dumps({"key": name, "value": value}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(request, timeout=STARTUP_TIMEOUT_S) as response:
                response.read()
                return
        except OSError as exc:   # URLError and HTTPError are OSErrors
            if time.monotonic() > deadline:
                raise BenchError(f"put to {endpoint} kept failing: {exc}") from None
            time.sleep(0.2)


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


# ---- output -------------------------------------------------------------------------------------
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


# ---- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
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
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="save every number here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = parser.parse_args(argv)
    if args.endpoints and not args.token:
        parser.error("--endpoints needs --token")
    if args.repeat < 1 or args.seconds <= 0 or args.max_ops < 1 or args.keys < 1:
        parser.error("--repeat, --seconds, --max-ops and --keys must be positive")
    return args


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    plan = Plan(args.seconds, args.max_ops, args.warmup)
    etcd_binary = shutil.which("etcd") if args.vs_etcd else None
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


if __name__ == "__main__":
    raise SystemExit(main())
