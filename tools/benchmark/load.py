"""The one load generator: ``Workload`` (one operation of one HTTP system, bodies serialized
in advance), ``http_load`` (``concurrency`` workers on one aiohttp session, bounded in time and
count), the ``Target`` protocol the measuring loop drives, ``HttpTarget``, and ``ClientTarget``
(our own ``AsyncClient`` over the native protocol, the same load shape)."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import aiohttp

from consensus_store.client import AsyncClient
from consensus_store.errors import ConsensusStoreError

from .common import (REQUEST_TIMEOUT_S, STARTUP_TIMEOUT_S, VALUE, BenchError, Plan, Run, key,
                     summarize)


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


class Requests(Protocol):
    """What ``http_load`` sends: request ``i``'s URL and body, with fixed headers."""
    headers: dict[str, str]

    def request(self, i: int) -> tuple[str, bytes]: ...


async def http_load(session: aiohttp.ClientSession, workload: Requests, concurrency: int,
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


def bodies(make: Callable[[str], dict[str, Any]], keys: int) -> tuple[bytes, ...]:
    """One pre-serialized JSON body per key of the pool."""
    return tuple(json.dumps(make(key(i))).encode() for i in range(keys))


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
