"""CPU per HTTP request of candidate front ends for the node's client API (issue #11, item 5).

Each front end runs in its own process on 127.0.0.1, serving the same tiny op (route lookup by
method and path, a bearer-token check, the JSON body decoded, a JSON answer encoded), on the
node's event loop (uvloop where installed).  A load process sends a bounded number of requests
over keep-alive connections; the server's CPU time (user + system, from /proc) over the run,
divided by the requests answered, is the figure.  Usage:

    .venv/bin/python tools/http_front_cost.py [--requests 20000] [--connections 8] [--rounds 3]
    PYTHONPATH=<worktree> .venv/bin/python tools/http_front_cost.py --cluster   # a real node

Front ends: ``uvicorn`` (a bare uvicorn + httptools server, a raw ASGI app routed by a dict),
``node-uvicorn`` (the node's own front end, ``http_front.HttpFront``: the same server behind
``http_guard``, answering through ``api.respond`` with a fake service that answers at once).
``--cluster`` measures a real node instead.

Why uvicorn: this tool also measured aiohttp, which the node served with before (those variants
left the tool after commit 7fd9b4a; run that commit's tool to measure them again).  µs of server
CPU per request, medians of the rounds, on the 2-core VM shared with other work (load average
3.5 and 7), at 7fd9b4a:

    front end                                        --rounds 3   --rounds 5
    aiohttp web.Application, a toy handler              55.5         67.5
    aiohttp low-level web.Server, a toy handler         50.0         51.0
    the node's code on aiohttp's web.Application        71.5         77.0
    the node's code on aiohttp's low-level server       49.0         64.5
    uvicorn + httptools, a toy raw ASGI app             43.0         47.0
    the node's code on uvicorn (HttpFront)              37.0         46.0

Issue #11 had measured 58 µs (web.Application), 47 µs (low-level web.Server) and 38-40 µs
(uvicorn + httptools) with toy handlers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time
from typing import Any

from consensus_store import fast_json

TOKEN = "bench-token-0123456789"
BODY = json.dumps({"key": "k", "consistency": "local"}).encode()
ROUTES = {("POST", f"/v1/kv/{op}") for op in ("get", "put", "range", "delete")}
MAX_SECONDS = 60.0


def _answer() -> bytes:
    return fast_json.encode({"kv": None, "header": {"node": "n1", "applied_index": 1}})


# ---- servers (each runs in a child process) ------------------------------------------------
class _FakeService:
    """What ``node.api`` needs of ``KVService``, answering ``get`` at once."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        from consensus_store.config import ClientToken, Limits, Role
        caller = ClientToken("bench", TOKEN, Role.ADMIN)
        self.config = SimpleNamespace(limits=Limits())
        self.tokens = SimpleNamespace(lookup=lambda raw: caller if raw == TOKEN.encode() else None)

    def header(self) -> dict[str, Any]:
        return {"node": "n1", "applied_index": 1}

    async def _get(self) -> dict[str, Any]:
        return {"kv": None}

    def call(self, op: str, body: dict[str, Any], caller: Any = None,
             timeout: float | None = None) -> Any:
        return self._get()


def _serve_uvicorn(port: int) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if (scope["method"], scope["path"]) not in ROUTES:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        auth = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value
        if auth.removeprefix(b"Bearer ") != TOKEN.encode():
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        fast_json.decode(body)
        answer = _answer()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    config = uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools", lifespan="off",
                            log_level="warning", access_log=False, loop="uvloop")
    uvicorn.Server(config).run()


def _serve_node_uvicorn(port: int) -> None:
    """The node's own front end (``node/http_front.py``: uvicorn's httptools protocol behind the
    node's header guard, a raw ASGI app answering through ``api.respond``)."""
    from consensus_store.node.http_front import HttpFront

    async def main() -> None:
        front = HttpFront(_FakeService())   # type: ignore[arg-type]
        await asyncio.get_running_loop().create_server(front.connection, "127.0.0.1", port)
        await asyncio.Event().wait()
    _run(main())


SERVERS = {"uvicorn": _serve_uvicorn, "node-uvicorn": _serve_node_uvicorn}


def _run(coroutine: Any) -> None:
    from consensus_store.event_loop import new_event_loop
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(coroutine)


# ---- load ------------------------------------------------------------------------------------
REQUEST = (b"POST /v1/kv/get HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
           + TOKEN.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
           + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


async def _client(port: int, count: int, deadline: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while done < count and time.monotonic() < deadline:
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:80]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            done += 1
    finally:
        writer.close()
    return done


async def _load(port: int, requests: int, connections: int) -> int:
    deadline = time.monotonic() + MAX_SECONDS
    share = requests // connections
    done = await asyncio.gather(*(_client(port, share, deadline) for _ in range(connections)))
    return sum(done)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def measure(name: str, requests: int, connections: int) -> tuple[float, float]:
    """(µs of server CPU per request, requests per second) for one round."""
    port = _free_port()
    process = multiprocessing.get_context("spawn").Process(target=SERVERS[name], args=(port,),
                                                           daemon=True)
    process.start()
    try:
        _wait_listening(port, time.monotonic() + 20)
        asyncio.run(_load(port, min(2000, requests), connections))          # warm up
        before, started = _cpu_seconds(process.pid), time.perf_counter()   # type: ignore[arg-type]
        done = asyncio.run(_load(port, requests, connections))
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(process.pid) - before                           # type: ignore[arg-type]
        return cpu / done * 1e6, done / elapsed
    finally:
        process.terminate()
        process.join(5)


def measure_cluster(requests: int, connections: int, rounds: int) -> list[float]:
    """µs of one node's CPU per HTTP ``get`` (local consistency) on a 3-node loopback cluster
    of the code this interpreter imports (run it from a worktree with ``PYTHONPATH`` to compare
    commits)."""
    import tempfile
    from pathlib import Path

    from consensus_store.launcher import LocalCluster, write_cluster_configs
    global REQUEST
    root = Path(tempfile.mkdtemp(prefix="http-front-cost-"))
    paths = write_cluster_configs(root / "config", size=3)
    with LocalCluster(paths, data_root=root / "data", log_dir=root / "logs") as cluster:
        cluster.wait_for_leader()
        node = next(iter(cluster.nodes.values()))
        REQUEST = REQUEST.replace(TOKEN.encode(), cluster.token.encode())
        port, pid = node.config.api_address.port, node.process.pid   # type: ignore[union-attr]
        asyncio.run(_load(port, min(2000, requests), connections))          # warm up
        figures = []
        for _ in range(rounds):
            before = _cpu_seconds(pid)
            done = asyncio.run(_load(port, requests, connections))
            figures.append(round((_cpu_seconds(pid) - before) / done * 1e6, 1))
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cluster", action="store_true",
                        help="instead: a node's CPU per request on a 3-node loopback cluster")
    parser.add_argument("servers", nargs="*", default=list(SERVERS),
                        help=f"front ends to measure: {', '.join(SERVERS)} (default: both)")
    args = parser.parse_args(argv)
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown front end {', '.join(sorted(unknown))} (choose from "
                     f"{', '.join(SERVERS)})")
    if args.cluster:
        figures = measure_cluster(args.requests, args.connections, args.rounds)
        print(f"µs of node CPU per local get: {figures} (median {statistics.median(figures)})")
        return 0
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in args.servers}
    for _ in range(args.rounds):            # interleaved: noise hits every front end alike
        for name in args.servers:
            results[name].append(measure(name, args.requests, args.connections))
    print(f"{'front end':12} {'µs CPU/request (median, all rounds)':42} requests/s (median)")
    for name, rounds in results.items():
        cpu = [round(c, 1) for c, _ in rounds]
        print(f"{name:12} {statistics.median(cpu):6.1f}  {str(cpu):34} "
              f"{statistics.median(r for _, r in rounds):8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
