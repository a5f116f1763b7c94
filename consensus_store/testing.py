"""Fault injection for tests and tools: a TCP proxy for Raft links, proxied clusters, a recorded
workload, a nemesis and the safety checks shared by ``tests/fault`` and ``tools/torture.py``.

Nothing in the product imports this module.

How every Raft connection goes through the proxy (shared/notes/pysyncobj.md, section 8)
    Of two nodes only the one whose address string compares greater dials out; its first frame
    is its own address, which the acceptor looks up among its configured peers.  So for each
    pair A > B the proxy listens on P_AB and forwards to B; P_AB is written into **A's** config
    only (as B's ``raft_address``), B keeps A's real address, and every ``selfNode`` stays real.
    A must still dial, so ``A > P_AB`` must hold as strings: node raft ports are picked from
    30000-32767 and proxy ports from 20000-29999 (all five digits, so every node address compares
    greater than every proxy address).  Both ranges are below Linux's ephemeral range.

Partitions close the proxied connections of the links they cut and refuse new ones (accept,
then close at once); ``heal`` lets the dialers reconnect (pysyncobj redials every
``connection_retry_s``).  Optional latency delays every chunk by a fixed time (+ jitter),
keeping the byte order.

Only processes started here are ever signalled, always by their own PID (via ``launcher``).
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from consensus_store.launcher import LocalCluster, free_ports

log = logging.getLogger("consensus_store.testing")

HOST = "127.0.0.1"
NODE_PORT_RANGE = (30000, 32767)    # node raft ports: "3xxxx"
PROXY_PORT_RANGE = (20000, 29999)   # proxy ports: "2xxxx", so every node address > every proxy


# =============================================================================== the proxy
def _bind_in_range(port_range: tuple[int, int], rng: random.Random, *, listen: bool,
                   attempts: int = 200) -> socket.socket:
    """A socket bound on HOST to a random free port of ``port_range``."""
    low, high = port_range
    last: OSError | None = None
    for _ in range(attempts):
        port = rng.randint(low, high)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if listen:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return sock
    raise OSError(f"no free port in {low}-{high} after {attempts} tries: {last}")


def pick_ports(count: int, port_range: tuple[int, int], rng: random.Random | None = None) -> list[int]:
    """Distinct ports of ``port_range`` free right now (tiny race until the node binds them)."""
    rng = rng or random.Random()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(_bind_in_range(port_range, rng, listen=False))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class LinkStats:
    accepted: int = 0        # connections forwarded
    refused: int = 0         # connections closed at once because the link was cut
    dial_failures: int = 0   # the target did not accept
    cut: int = 0             # live connections closed by a partition
    bytes_forward: int = 0   # dialer -> acceptor
    bytes_back: int = 0      # acceptor -> dialer


@dataclass
class _Link:
    dialer: str
    acceptor: str
    listen: tuple[str, int]
    target: tuple[str, int]
    sock: socket.socket
    stats: LinkStats = field(default_factory=LinkStats)
    conns: set["_Conn"] = field(default_factory=set)
    server: asyncio.AbstractServer | None = None

    @property
    def pair(self) -> frozenset[str]:
        return frozenset((self.dialer, self.acceptor))

    @property
    def address(self) -> str:
        return f"{self.listen[0]}:{self.listen[1]}"


class _Conn:
    """One proxied connection: the dialer's side and the upstream (acceptor's) side."""

    def __init__(self, link: _Link, down: asyncio.StreamWriter) -> None:
        self.link = link
        self.down = down
        self.up: asyncio.StreamWriter | None = None
        self.closed = False

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.down, self.up):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    """TCP proxies for the Raft links of one cluster, controlled from any thread.

    One listening port per node pair (the dialer's direction; the bytes flow both ways).
    Topology: ``partition(groups)`` (a pair may talk iff some group holds both; groups may
    overlap, which makes bridges), ``isolate(node)``, ``bridge(left, node, right)``,
    ``cut(a, b)`` / ``connect(a, b)``, ``heal()``.  Every call returns once live connections
    of newly cut links are closed.  All I/O runs on one asyncio thread.
    """

    def __init__(self, host: str = HOST, seed: int | None = None) -> None:
        self.host = host
        self._rng = random.Random(seed)          # latency jitter
        self._port_rng = random.Random()         # ports: never the same for two runs
        self._links: dict[frozenset[str], _Link] = {}
        self._groups: tuple[frozenset[str], ...] | None = None
        self._cut_pairs: set[frozenset[str]] = set()
        self._latency = 0.0
        self._jitter = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self._thread.start()
        self._closed = False

    # ---- setup -------------------------------------------------------------------------------
    def add_link(self, dialer: str, acceptor: str, target: str | tuple[str, int]) -> str:
        """Listen for ``dialer``'s connections to ``acceptor`` (at ``target``); returns the
        proxy address ``host:port`` to give the dialer."""
        if isinstance(target, str):
            host, _, port = target.rpartition(":")
            target = (host, int(port))
        pair = frozenset((dialer, acceptor))
        if len(pair) != 2 or pair in self._links:
            raise ValueError(f"link {dialer}->{acceptor}: need two nodes and one link per pair")
        sock = _bind_in_range(PROXY_PORT_RANGE, self._port_rng, listen=True)
        sock.listen(64)
        sock.setblocking(False)
        link = _Link(dialer, acceptor, sock.getsockname()[:2], target, sock)
        self._run(self._serve(link))
        self._links[pair] = link
        return link.address

    async def _serve(self, link: _Link) -> None:
        link.server = await asyncio.start_server(
            lambda r, w: self._accept(link, r, w), sock=link.sock)

    # ---- topology ------------------------------------------------------------------------------
    @property
    def nodes(self) -> set[str]:
        return {node for pair in self._links for node in pair}

    def allowed(self, a: str, b: str) -> bool:
        pair = frozenset((a, b))
        if pair in self._cut_pairs:
            return False
        if self._groups is None:
            return True
        return any(pair <= group for group in self._groups)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Only nodes sharing a group can talk; a node in no group talks to nobody."""
        frozen = tuple(frozenset(g) for g in groups)
        unknown = set().union(*frozen) - self.nodes if frozen else set()
        if unknown:
            raise ValueError(f"unknown nodes {sorted(unknown)}")
        self._apply(lambda: setattr(self, "_groups", frozen))

    def isolate(self, node: str) -> None:
        self.partition([{node}, self.nodes - {node}])

    def bridge(self, left: Iterable[str], middle: str, right: Iterable[str]) -> None:
        """``left`` and ``right`` cannot talk to each other; ``middle`` talks to both."""
        self.partition([set(left) | {middle}, set(right) | {middle}])

    def cut(self, a: str, b: str) -> None:
        self._apply(lambda: self._cut_pairs.add(frozenset((a, b))))

    def connect(self, a: str, b: str) -> None:
        self._apply(lambda: self._cut_pairs.discard(frozenset((a, b))))

    def heal(self) -> None:
        def change() -> None:
            self._groups = None
            self._cut_pairs.clear()
        self._apply(change)

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Delay every forwarded chunk by ``seconds`` (+ uniform [0, jitter]); order is kept."""
        self._latency, self._jitter = max(0.0, seconds), max(0.0, jitter)

    def describe(self) -> str:
        if self._groups is None and not self._cut_pairs:
            return "healed"
        parts = []
        if self._groups is not None:
            parts.append(" | ".join("{" + ",".join(sorted(g)) + "}" for g in self._groups))
        if self._cut_pairs:
            parts.append("cut " + ", ".join("-".join(sorted(p)) for p in self._cut_pairs))
        return "; ".join(parts)

    def stats(self) -> dict[tuple[str, str], LinkStats]:
        return {(l.dialer, l.acceptor): LinkStats(**vars(l.stats)) for l in self._links.values()}

    def live_connections(self, a: str, b: str) -> int:
        link = self._links[frozenset((a, b))]
        return self._run(self._count(link))

    @staticmethod
    async def _count(link: _Link) -> int:
        return sum(1 for c in link.conns if not c.closed)

    def _apply(self, change: Callable[[], None]) -> None:
        async def apply() -> None:
            change()
            for link in self._links.values():
                if not self.allowed(link.dialer, link.acceptor):
                    for conn in list(link.conns):
                        if not conn.closed:
                            link.stats.cut += 1
                            conn.abort()
        self._run(apply())

    # ---- forwarding (loop thread) ---------------------------------------------------------------
    async def _accept(self, link: _Link, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if not self.allowed(link.dialer, link.acceptor):
            link.stats.refused += 1
            writer.transport.abort()
            return
        conn = _Conn(link, writer)
        link.conns.add(conn)
        try:
            try:
                up_reader, conn.up = await asyncio.wait_for(
                    asyncio.open_connection(*link.target), 2.0)
            except (OSError, asyncio.TimeoutError):
                link.stats.dial_failures += 1
                return
            if conn.closed or not self.allowed(link.dialer, link.acceptor):
                link.stats.refused += 1
                return
            link.stats.accepted += 1
            await asyncio.gather(self._pump(conn, reader, conn.up, "bytes_forward"),
                                 self._pump(conn, up_reader, writer, "bytes_back"))
        finally:
            conn.abort()
            link.conns.discard(conn)

    async def _pump(self, conn: _Conn, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, counter: str) -> None:
        """Copy one direction; chunks wait in a queue until due (latency), in order."""
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        ready = asyncio.Event()
        finished = False

        async def deliver() -> None:
            while True:
                while not queue:
                    if finished:
                        return
                    ready.clear()
                    await ready.wait()
                due, data = queue.popleft()
                delay = due - self._loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if conn.closed:
                    return
                writer.write(data)
                await writer.drain()

        sender = self._loop.create_task(deliver())
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    break
                setattr(conn.link.stats, counter, getattr(conn.link.stats, counter) + len(data))
                delay = self._latency + (self._rng.uniform(0, self._jitter) if self._jitter else 0)
                queue.append((self._loop.time() + delay, data))
                ready.set()
            finished = True
            ready.set()
            await sender
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            finished = True
            ready.set()
            if not sender.done():
                sender.cancel()
            conn.abort()   # one direction ended: the whole connection ends (no half-close)

    # ---- lifecycle ---------------------------------------------------------------------------
    def _run(self, coroutine: Any, timeout: float = 10.0) -> Any:
        if self._closed:
            coroutine.close()
            raise RuntimeError("proxy is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def close(self) -> None:
        if self._closed:
            return

        async def shutdown() -> None:
            for link in self._links.values():
                if link.server is not None:
                    link.server.close()
                for conn in list(link.conns):
                    conn.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self._run(shutdown())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            for link in self._links.values():
                link.sock.close()
            if not self._loop.is_running():
                self._loop.close()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# =============================================================================== proxied clusters
def _toml_node(node_id: str, raft: str, api: str, secret: str) -> list[str]:
    return [f'id = "{node_id}"', f'raft_address = "{raft}"', f'api_address = "{api}"',
            f'data_dir = "data/{node_id}"', f'secret = "{secret}"', ""]


def write_proxied_cluster_configs(directory: Path, size: int, proxy: FaultProxy, *,
                                  secret: str | None = None,
                                  raft_table: dict[str, float] | None = None,
                                  extra_toml: str = "", seed: int | None = None) -> list[Path]:
    """One config per node of a loopback cluster whose every Raft link goes through ``proxy``.

    For each pair the dialer (greater address string) gets the proxy address of the pair as the
    other node's ``raft_address``; the acceptor keeps the dialer's real address (it must
    recognise the address the dialer announces).  Node ids are n1..nN.
    """
    directory.mkdir(parents=True, exist_ok=True)
    raft_ports = pick_ports(size, NODE_PORT_RANGE)     # unseeded: concurrent runs differ
    api_ports = free_ports(size)
    secret = secret or os.urandom(16).hex()
    ids = [f"n{i + 1}" for i in range(size)]
    raft = {node_id: f"{HOST}:{port}" for node_id, port in zip(ids, raft_ports)}
    api = {node_id: f"{HOST}:{port}" for node_id, port in zip(ids, api_ports)}
    # seen_by[a][b]: the raft address of b written in a's config
    seen_by: dict[str, dict[str, str]] = {a: {b: raft[b] for b in ids if b != a} for a in ids}
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            dialer, acceptor = (a, b) if raft[a] > raft[b] else (b, a)
            address = proxy.add_link(dialer, acceptor, raft[acceptor])
            if not raft[dialer] > address:
                raise AssertionError(f"{dialer} ({raft[dialer]}) would not dial proxy {address}")
            if raft[acceptor] > raft[dialer]:
                raise AssertionError(f"{acceptor} would dial {dialer} directly")
            seen_by[dialer][acceptor] = address
    paths = []
    for node_id in ids:
        lines = _toml_node(node_id, raft[node_id], api[node_id], secret)
        for peer in ids:
            if peer != node_id:
                lines += ["[[peers]]", f'id = "{peer}"', f'raft_address = "{seen_by[node_id][peer]}"',
                          f'api_address = "{api[peer]}"', ""]
        if raft_table:
            lines += ["[raft]"] + [f"{k} = {v}" for k, v in raft_table.items()] + [""]
        if extra_toml:
            lines.append(extra_toml.strip())
        path = directory / f"{node_id}.toml"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


class ProxiedCluster:
    """Node processes on 127.0.0.1 whose Raft traffic all goes through one ``FaultProxy``.

    Use as a context manager: ``close`` stops every node it started (SIGCONT + SIGTERM, then
    SIGKILL, by PID) and the proxy.
    """

    def __init__(self, root: Path, size: int, *, raft_table: dict[str, float] | None = None,
                 extra_toml: str = "", seed: int | None = None) -> None:
        self.root = Path(root)
        self.proxy = FaultProxy(seed=seed)
        try:
            self.config_paths = write_proxied_cluster_configs(
                self.root / "configs", size, self.proxy, raft_table=raft_table,
                extra_toml=extra_toml, seed=seed)
            self.cluster = LocalCluster(self.config_paths, data_root=self.root / "data",
                                        log_dir=self.root / "logs")
        except BaseException:
            self.proxy.close()
            raise
        self.paused: set[str] = set()

    # ---- shortcuts -------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return list(self.cluster.nodes)

    @property
    def nodes(self) -> dict[str, Any]:
        return self.cluster.nodes

    @property
    def token(self) -> str:
        return self.cluster.token

    @property
    def endpoints(self) -> list[str]:
        return self.cluster.endpoints

    def endpoint(self, node_id: str) -> str:
        return self.cluster.nodes[node_id].endpoint

    def client(self, node_ids: Iterable[str] | None = None, **options: Any) -> Any:
        from consensus_store.client import Client
        endpoints = ([self.endpoint(n) for n in node_ids] if node_ids is not None
                     else self.endpoints)
        return Client(endpoints, token=self.token, **options)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self, leader_timeout: float = 30.0) -> str:
        self.cluster.start()
        return self.wait_for_leader(leader_timeout)

    def close(self) -> None:
        try:
            for node in self.cluster.nodes.values():
                try:
                    node.stop()
                except Exception:  # noqa: BLE001 - stop the others anyway
                    log.exception("stopping %s", node.id)
        finally:
            self.proxy.close()

    def __enter__(self) -> "ProxiedCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- process faults ------------------------------------------------------------------------
    def kill(self, node_id: str) -> None:
        self.paused.discard(node_id)
        self.cluster.nodes[node_id].kill()

    def restart(self, node_id: str) -> None:
        node = self.cluster.nodes[node_id]
        if not node.alive:
            node.start()

    def pause(self, node_id: str) -> None:
        self.cluster.nodes[node_id].pause()
        self.paused.add(node_id)

    def resume(self, node_id: str) -> None:
        self.cluster.nodes[node_id].resume()
        self.paused.discard(node_id)

    def resume_all(self) -> None:
        for node_id in list(self.paused):
            self.resume(node_id)

    def restart_all(self) -> None:
        for node_id in self.ids:
            self.restart(node_id)

    # ---- observation -----------------------------------------------------------------------------
    def statuses(self, timeout: float = 1.0, node_ids: Iterable[str] | None = None) -> dict[str, Any]:
        """``/v1/status`` of each reachable live node (unreachable ones are left out)."""
        from consensus_store.errors import ConsensusStoreError
        result = {}
        with self.client(timeout=timeout) as client:
            for node_id in (node_ids if node_ids is not None else self.ids):
                node = self.cluster.nodes[node_id]
                if not node.alive or node_id in self.paused:
                    continue
                try:
                    result[node_id] = client.status(node.endpoint, timeout=timeout)
                except (ConsensusStoreError, OSError):
                    continue
        return result

    def leader(self, timeout: float = 1.0) -> str | None:
        """The node that says it leads and that a majority of nodes (itself included) follow."""
        current = self.statuses(timeout)
        leaders = {s.id for s in current.values() if s.role.value == "leader"}
        for leader in leaders:
            if sum(s.leader == leader for s in current.values()) > len(self.ids) // 2:
                return leader
        return None

    def wait_for_leader(self, timeout: float = 30.0) -> str:
        found = poll_until(lambda: self.leader(), timeout, interval=0.1)
        if found is None:
            raise TimeoutError(f"no leader within {timeout:g}s ({self.describe()})")
        return found

    def describe(self) -> str:
        states = []
        for node_id, node in self.cluster.nodes.items():
            state = "paused" if node_id in self.paused else ("up" if node.alive else "down")
            states.append(f"{node_id}:{state}")
        return " ".join(states) + f"; network {self.proxy.describe()}"


def poll_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll until ``predicate`` returns something truthy (returned) or ``timeout`` (None)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - "not yet"
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# =============================================================================== workload
def lincheck_module() -> Any:
    """``tools/lincheck.py`` (tools/ is not an installed package: add the repo root if needed)."""
    try:
        from tools import lincheck
    except ImportError:
        root = Path(__file__).resolve().parents[1]
        if not (root / "tools" / "lincheck.py").exists():
            raise
        sys.path.insert(0, str(root))
        from tools import lincheck
    return lincheck


READ_LEVELS = ("local", "session", "linearizable")
DEFAULT_MIX = {"put": 3, "cas": 2, "linearizable": 2, "session": 2, "local": 1}


@dataclass
class OpRecord:
    """One client operation with everything the checks need (a read's value as returned)."""

    process: int
    f: str                          # put | cas | read
    key: str
    value: Any                      # put: the value; cas: [expected, new]; read: None
    level: str | None               # read consistency
    invoke: float
    complete: float | None = None
    outcome: str = "open"           # ok | fail | info
    result: Any = None              # read: the value returned (None: absent)
    revision: int | None = None     # mod_revision of the record returned (0: absent)
    observed: tuple[Any, int] | None = None   # (value, mod_revision) seen by a failed cas
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    def describe(self) -> str:
        what = f"{self.f}"
        if self.f == "read":
            what += f"[{self.level}] -> {self.result!r}@{self.revision}"
        else:
            what += f" {self.value!r}"
            if self.revision is not None:
                what += f" @{self.revision}"
        end = "open" if self.complete is None else f"{self.complete:.3f}"
        return (f"p{self.process} {what} on {self.key!r}: {self.outcome}"
                f"{' (' + self.error + ')' if self.error else ''} [{self.invoke:.3f}, {end}]")


@dataclass
class Anomaly:
    kind: str          # lost-write, non-linearizable, session, divergence, crash, ...
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


class Workload:
    """Client workers (threads, each its own Client and process id) doing put / get (every
    read level) / cas on a few keys, recording every operation.

    Outcome rules (what the checkers rely on):
    - ok: acknowledged; reads record the value (and mod_revision) they returned;
    - fail: definitely no effect: a cas answered CompareFailed, any failed read;
    - info: unknown: a write whose request may have been sent and that did not succeed
      (Timeout, Unavailable, or anything unexpected, which is also reported as an anomaly).
    Written values are unique (``"<process>-<seq>"``), so a value names its write.
    """

    def __init__(self, endpoints: list[str], token: str, *, workers: int = 4,
                 keys: Iterable[str] = ("k0", "k1", "k2"), seed: int = 0,
                 op_timeout: float = 5.0, mix: dict[str, int] | None = None,
                 think_s: float = 0.0, max_ops_per_worker: int = 1_000_000) -> None:
        lincheck = lincheck_module()
        self.history = lincheck.HistoryRecorder()   # writes, cas, linearizable reads
        self.endpoints = list(endpoints)
        self.token = token
        self.workers = workers
        self.keys = list(keys)
        self.seed = seed
        self.op_timeout = op_timeout
        self.mix = dict(mix or DEFAULT_MIX)
        self.think_s = think_s
        self.max_ops_per_worker = max_ops_per_worker
        self.ops: list[OpRecord] = []
        self.unexpected: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- control ---------------------------------------------------------------------------------
    def start(self) -> None:
        for process in range(self.workers):
            thread = threading.Thread(target=self._worker, args=(process,),
                                      name=f"worker-{process}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the workers; True if all finished (each ends its current op first)."""
        self._stop.set()
        deadline = time.monotonic() + (timeout if timeout is not None else self.op_timeout + 15)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def count(self, outcome: str | None = None, f: str | None = None) -> int:
        with self._lock:
            return sum(1 for op in self.ops if (outcome is None or op.outcome == outcome)
                       and (f is None or op.f == f))

    def ok_writes(self) -> int:
        with self._lock:
            return sum(1 for op in self.ops if op.outcome == "ok" and op.f != "read")

    def wait_for_progress(self, writes: int, timeout: float) -> bool:
        """Wait until ``writes`` more writes are acknowledged (bounded poll)."""
        target = self.ok_writes() + writes
        return bool(poll_until(lambda: self.ok_writes() >= target, timeout, 0.05))

    def summary(self) -> dict[str, int]:
        with self._lock:
            ops = list(self.ops)
        counts: dict[str, int] = collections.Counter()
        for op in ops:
            name = op.f if op.f != "read" else f"read-{op.level}"
            counts[f"{name}:{op.outcome}"] += 1
        counts["total"] = len(ops)
        return dict(sorted(counts.items()))

    # ---- one worker --------------------------------------------------------------------------------
    def _worker(self, process: int) -> None:
        from consensus_store.client import Client, RetryPolicy
        rng = random.Random(f"{self.seed}-{process}")
        endpoints = list(self.endpoints)
        rng.shuffle(endpoints)
        kinds = list(self.mix)
        weights = [self.mix[k] for k in kinds]
        last_seen: dict[str, Any] = {}
        retry = RetryPolicy(max_tries=50, backoff_s=0.05, max_backoff_s=0.5)
        client = Client(endpoints, token=self.token, timeout=self.op_timeout, retry=retry,
                        client_id=f"p{process}-{os.urandom(4).hex()}")
        try:
            for seq in range(self.max_ops_per_worker):
                if self._stop.is_set():
                    return
                kind = rng.choices(kinds, weights)[0]
                key = rng.choice(self.keys)
                if kind == "put":
                    self._put(client, process, key, f"{process}-{seq}", last_seen)
                elif kind == "cas":
                    self._cas(client, process, key, last_seen.get(key), f"{process}-{seq}",
                              last_seen)
                else:
                    self._read(client, process, key, kind, last_seen)
                if self.think_s:
                    self._stop.wait(rng.uniform(0, 2 * self.think_s))
        finally:
            client.close()

    def _begin(self, op: OpRecord) -> OpRecord:
        with self._lock:
            self.ops.append(op)
        return op

    def _finish(self, op: OpRecord, outcome: str, error: BaseException | None = None) -> None:
        op.complete = time.monotonic()
        op.outcome = outcome
        if error is not None:
            op.error = f"{type(error).__name__}: {getattr(error, 'message', error)}"[:200]

    def _unexpected(self, op: OpRecord, exc: BaseException) -> None:
        with self._lock:
            self.unexpected.append(f"{op.describe()}: {type(exc).__name__}: {exc}")

    def _put(self, client: Any, process: int, key: str, value: str,
             last_seen: dict[str, Any]) -> None:
        from consensus_store.errors import Timeout, Unavailable
        handle = self.history.invoke(process, "write", key, value)
        op = self._begin(OpRecord(process, "put", key, value, None, time.monotonic()))
        try:
            kv = client.put(key, value)
        except (Timeout, Unavailable) as exc:
            self.history.info(handle)
            self._finish(op, "info", exc)
        except Exception as exc:  # noqa: BLE001 - unknown outcome, and a finding
            self.history.info(handle)
            self._finish(op, "info", exc)
            self._unexpected(op, exc)
        else:
            self.history.ok(handle)
            op.revision = kv.mod_revision
            self._finish(op, "ok")
            if kv.value != value or kv.key != key:
                self._unexpected(op, AssertionError(f"put answered {kv}"))
            last_seen[key] = value

    def _cas(self, client: Any, process: int, key: str, expected: Any, value: str,
             last_seen: dict[str, Any]) -> None:
        from consensus_store.errors import CompareFailed, Timeout, Unavailable
        handle = self.history.invoke(process, "cas", key, [expected, value])
        op = self._begin(OpRecord(process, "cas", key, [expected, value], None, time.monotonic()))
        try:
            if expected is None:
                kv = client.cas(key, value, expect_mod_revision=0)   # 0: the key is absent
            else:
                kv = client.cas(key, value, expect_value=expected)
        except CompareFailed as exc:
            self.history.fail(handle)
            current = getattr(exc, "current", None)
            if current is not None:
                op.observed = (current.value, current.mod_revision)
                last_seen[key] = current.value
            else:
                op.observed = (None, 0)
            self._finish(op, "fail", exc)
        except (Timeout, Unavailable) as exc:
            self.history.info(handle)
            self._finish(op, "info", exc)
        except Exception as exc:  # noqa: BLE001
            self.history.info(handle)
            self._finish(op, "info", exc)
            self._unexpected(op, exc)
        else:
            self.history.ok(handle)
            op.revision = kv.mod_revision
            self._finish(op, "ok")
            if kv.value != value:
                self._unexpected(op, AssertionError(f"cas answered {kv}"))
            last_seen[key] = value

    def _read(self, client: Any, process: int, key: str, level: str,
              last_seen: dict[str, Any]) -> None:
        from consensus_store.errors import Timeout, Unavailable
        linearizable = level == "linearizable"
        handle = self.history.invoke(process, "read", key) if linearizable else None
        op = self._begin(OpRecord(process, "read", key, None, level, time.monotonic()))
        try:
            kv = client.get(key, consistency=level)
        except (Timeout, Unavailable) as exc:
            if handle is not None:
                self.history.info(handle)
            self._finish(op, "info", exc)
        except Exception as exc:  # noqa: BLE001
            if handle is not None:
                self.history.info(handle)
            self._finish(op, "info", exc)
            self._unexpected(op, exc)
        else:
            value = kv.value if kv is not None else None
            if handle is not None:
                self.history.ok(handle, value)
            op.result = value
            op.revision = kv.mod_revision if kv is not None else 0
            self._finish(op, "ok")
            if value is not None:
                last_seen[key] = value

    # ---- artifacts ---------------------------------------------------------------------------------
    def dump(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        history = directory / "history.jsonl"
        self.history.dump(history)
        ops = directory / "operations.jsonl"
        with self._lock:
            text = "".join(json.dumps(op.to_json()) + "\n" for op in self.ops)
        ops.write_text(text)
        return {"history": history, "operations": ops}


# =============================================================================== checks
def check_linearizable(events: list[dict], timeout_s: float | None = 120.0
                       ) -> tuple[list[Anomaly], list[str]]:
    """(a) writes, cas and linearizable reads form a linearizable history (per key, WGL)."""
    lincheck = lincheck_module()
    result = lincheck.check_events(events, timeout_s)
    if result.linearizable is None:
        return [], [f"linearizability check undecided: {result.explanation}"]
    if not result.linearizable:
        return [Anomaly("non-linearizable", result.explanation)], []
    return [], []


def check_sessions(ops: list[OpRecord]) -> list[Anomaly]:
    """(b) per client: a session read returns no record older than one the client already saw
    (its own acknowledged writes: read-your-writes; earlier answers: monotonic reads).

    Every answer carries the node's applied index, which is >= the revision of any record in
    it, and session reads wait for the highest index the client has seen; so even a record
    seen through a local read sets the floor.  Revisions are unique per write (log indexes).
    """
    anomalies = []
    by_process: dict[int, list[OpRecord]] = collections.defaultdict(list)
    for op in ops:
        by_process[op.process].append(op)
    for process, mine in by_process.items():
        mine.sort(key=lambda o: o.invoke)
        floor: dict[str, tuple[int, OpRecord]] = {}
        for op in mine:
            if op.outcome == "ok" and op.f == "read" and op.level == "session":
                seen = floor.get(op.key)
                if seen is not None and (op.revision or 0) < seen[0]:
                    kind = "read-your-writes" if seen[1].f != "read" else "monotonic-reads"
                    anomalies.append(Anomaly(
                        f"session-{kind}",
                        f"{op.describe()}\n  returned revision {op.revision} after the same "
                        f"client saw revision {seen[0]}:\n  {seen[1].describe()}"))
            revision = None
            if op.outcome == "ok":
                revision = op.revision
            elif op.observed is not None:
                revision = op.observed[1]
            if revision is not None and revision >= floor.get(op.key, (-1, op))[0]:
                floor[op.key] = (revision, op)
    return anomalies


def check_values(ops: list[OpRecord], final: dict[str, dict[str, tuple[Any, int]]]
                 ) -> list[Anomaly]:
    """Every record anyone saw is a write that was attempted, on that key, with one revision;
    a revision names one value; a cas that answered CompareFailed is never seen."""
    anomalies = []
    writes: dict[Any, OpRecord] = {}
    for op in ops:
        if op.f in ("put", "cas"):
            writes[op.value if op.f == "put" else op.value[1]] = op
    revision_of: dict[Any, tuple[int, str]] = {}
    value_at: dict[tuple[str, int], tuple[Any, str]] = {}

    def observe(key: str, value: Any, revision: int | None, source: str) -> None:
        if value is None or revision is None:
            return
        write = writes.get(value)
        if write is None:
            anomalies.append(Anomaly("phantom-value", f"{source}: {value!r} was never written"))
        elif write.key != key:
            anomalies.append(Anomaly("wrong-key", f"{source}: {value!r} was written to "
                                                  f"{write.key!r}, seen on {key!r}"))
        elif write.outcome == "fail":
            anomalies.append(Anomaly("failed-write-visible",
                                     f"{source}: sees {value!r}@{revision}, but the write "
                                     f"failed definitely: {write.describe()}"))
        known = revision_of.setdefault(value, (revision, source))
        if known[0] != revision:
            anomalies.append(Anomaly("inconsistent-revision",
                                     f"{value!r} has revision {revision} in {source} but "
                                     f"{known[0]} in {known[1]}"))
        other = value_at.setdefault((key, revision), (value, source))
        if other[0] != value:
            anomalies.append(Anomaly("inconsistent-revision",
                                     f"{key!r}@{revision} is {value!r} in {source} but "
                                     f"{other[0]!r} in {other[1]}"))

    for op in ops:
        if op.outcome == "ok":
            if op.f == "read":
                observe(op.key, op.result, op.revision, op.describe())
            else:
                observe(op.key, op.value if op.f == "put" else op.value[1], op.revision,
                        op.describe())
        elif op.observed is not None:
            observe(op.key, op.observed[0], op.observed[1], op.describe() + " (current)")
    for node_id, state in final.items():
        for key, (value, revision) in state.items():
            observe(key, value, revision, f"final state of {node_id}")
    return anomalies


def check_no_lost_writes(ops: list[OpRecord], final: dict[str, dict[str, tuple[Any, int]]],
                         examples: int = 5) -> list[Anomaly]:
    """(c) every acknowledged write is in every node's final state or was overwritten by a
    later one: the key's final mod_revision >= the write's revision (equal: same value).
    One anomaly per node that lacks writes, with the count and the first examples."""
    anomalies = []
    for node_id, state in final.items():
        lost = []
        for op in ops:
            if op.outcome != "ok" or op.f == "read":
                continue
            value = op.value if op.f == "put" else op.value[1]
            current = state.get(op.key)
            if current is None:
                lost.append(f"{op.describe()}\n    but {op.key!r} does not exist on {node_id}")
            elif current[1] < op.revision or (current[1] == op.revision and current[0] != value):
                lost.append(f"{op.describe()}\n    but {node_id} has {current[0]!r}@{current[1]}")
        if lost:
            anomalies.append(Anomaly("lost-write", f"{node_id} lacks {len(lost)} acknowledged "
                                                   f"writes, e.g.\n  " + "\n  ".join(lost[:examples])))
    return anomalies


def node_state(cluster: ProxiedCluster, node_id: str, timeout: float = 3.0
               ) -> dict[str, tuple[Any, int]]:
    """{key: (value, mod_revision)} of every key one node holds (local read, that node only)."""
    with cluster.client([node_id], timeout=timeout) as client:
        result = client.range("", consistency="local", timeout=timeout)
    return {kv.key: (kv.value, kv.mod_revision) for kv in result.kvs}


def node_digest(cluster: ProxiedCluster, node_id: str, timeout: float = 3.0
                ) -> tuple[str, int, dict[str, str]]:
    """(digest of the whole replicated state, the index it covers, digest of each part)."""
    with cluster.client([node_id], timeout=timeout) as client:
        result = client._request("digest", {}, timeout)
    return result["digest"], result["index"], result["parts"]


def wait_converged(cluster: ProxiedCluster, timeout: float = 60.0
                   ) -> tuple[dict[str, dict[str, tuple[Any, int]]], list[Anomaly]]:
    """(d) wait until every node reports the same applied index (unchanged while their states
    are read), then compare the full states.  Returns (states, anomalies)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    states: dict[str, dict[str, tuple[Any, int]]] = {}
    while time.monotonic() < deadline:
        before = cluster.statuses(timeout=2.0)
        last = before
        marks = {s.applied_index for s in before.values()}
        if len(before) == len(cluster.ids) and len(marks) == 1:
            try:
                states = {n: node_state(cluster, n) for n in cluster.ids}
                digests = {n: node_digest(cluster, n) for n in cluster.ids}
            except Exception:  # noqa: BLE001 - a node went away: try again
                time.sleep(0.2)
                continue
            after = cluster.statuses(timeout=2.0)
            if {n: s.applied_index for n, s in after.items()} == \
                    {n: s.applied_index for n, s in before.items()}:
                reference_id = cluster.ids[0]
                index = next(iter(marks))
                anomalies = []
                for node_id, state in states.items():
                    if state != states[reference_id]:
                        anomalies.append(Anomaly("divergence", _state_diff(
                            reference_id, states[reference_id], node_id, state, index)))
                    elif digests[node_id] != digests[reference_id]:
                        # same keys, yet sessions or the at-most-once tables differ
                        anomalies.append(Anomaly("divergence", f"state digests differ at "
                                                 f"index {index}: {digests}"))
                return states, anomalies
        time.sleep(0.2)
    summary = ", ".join(f"{n}: applied {s.applied_index} commit {s.commit_index} "
                        f"{s.role.value} leader {s.leader}" for n, s in last.items())
    missing = sorted(set(cluster.ids) - set(last))
    try:
        states = {n: node_state(cluster, n) for n in cluster.ids if n in last}
    except Exception:  # noqa: BLE001
        states = {}
    return states, [Anomaly("no-convergence", f"replicas did not reach the same applied index "
                                              f"within {timeout:g}s: {summary}"
                                              f"{'; unreachable ' + str(missing) if missing else ''}"
                                              f"\n raft status:\n{raft_diagnostics(cluster)}")]


def raft_status(cluster: ProxiedCluster, node_id: str, timeout: float = 3.0) -> dict[str, Any]:
    """pysyncobj's own ``getStatus()`` of one node (next/match indexes, log length...), asked
    directly on its raft port (not through the proxy), like ``syncobj_admin -status``."""
    from pysyncobj.utility import TcpUtility
    config = cluster.nodes[node_id].config
    result: dict[str, Any] = {}
    done = threading.Event()

    def ask() -> None:
        try:
            answer = TcpUtility(config.secret, timeout).executeCommand(str(config.raft_address),
                                                                       ["status"])
            result.update(answer if isinstance(answer, dict) else {"answer": answer})
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            done.set()

    threading.Thread(target=ask, daemon=True).start()
    if not done.wait(timeout + 1):
        return {"error": "no answer"}
    return {k: (str(v) if not isinstance(v, (int, float, str, type(None))) else v)
            for k, v in result.items()}


def raft_diagnostics(cluster: ProxiedCluster) -> str:
    keys = ("state", "raft_term", "leader", "log_len", "commit_idx", "last_applied",
            "leader_commit_idx")
    lines = []
    for node_id in cluster.ids:
        status = raft_status(cluster, node_id)
        short = {k: status.get(k) for k in keys if k in status}
        peers = {k.replace("_server_127.0.0.1:", "@"): v for k, v in status.items()
                 if k.startswith(("next_node_idx_server", "match_idx_server",
                                  "partner_node_status_server"))}
        lines.append(f"  {node_id} ({cluster.nodes[node_id].config.raft_address}): {short} "
                     f"{peers} {status.get('error', '')}")
    return "\n".join(lines)


def _state_diff(a_id: str, a: dict, b_id: str, b: dict, index: int | None) -> str:
    lines = [f"{a_id} and {b_id} differ at applied index {index}:"]
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            lines.append(f"  {key!r}: {a_id} {a.get(key)!r}, {b_id} {b.get(key)!r}")
    return "\n".join(lines[:20])


HAZARD_PATTERNS = (r"CRITICAL pysyncobj\.syncobj: truncating already-applied log entries",)


def scan_node_logs(cluster: ProxiedCluster) -> tuple[list[str], list[str]]:
    """(hazards, warnings) from the node logs: hazards are pysyncobj's own warnings that safety
    may be at risk (truncating applied entries); warnings are other errors and tracebacks."""
    hazards, warnings = [], []
    for node in cluster.nodes.values():
        try:
            text = node.log_path.read_text(errors="replace")
        except OSError:
            continue
        for match in re.finditer(r"^.*(?:Traceback|ERROR|CRITICAL|Exception).*$", text, re.M):
            line = f"{node.id}: {match.group(0)[:240]}"
            if any(re.search(p, line) for p in HAZARD_PATTERNS):
                hazards.append(line)
            else:
                warnings.append(line)
    return hazards, warnings


@dataclass
class SafetyResult:
    anomalies: list[Anomaly] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    hazards: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    states: dict[str, dict[str, tuple[Any, int]]] = field(default_factory=dict)


def check_safety(cluster: ProxiedCluster, workload: Workload,
                 lincheck_timeout_s: float | None = 300.0,
                 convergence_timeout_s: float = 60.0) -> SafetyResult:
    """The checks every fault run ends with, once the faults are healed and the workload is
    stopped: (d) convergence, (a) linearizability, (b) sessions, (c) no lost write, value /
    revision consistency, unexpected client errors, node log hazards."""
    result = SafetyResult()
    result.states, convergence = wait_converged(cluster, convergence_timeout_s)
    result.anomalies += convergence
    ops = list(workload.ops)
    result.anomalies += [Anomaly("unexpected-error", u) for u in workload.unexpected]
    lin, result.undecided = check_linearizable(workload.history.events(), lincheck_timeout_s)
    result.anomalies += lin
    result.anomalies += check_sessions(ops)
    result.anomalies += check_values(ops, result.states)
    result.anomalies += check_no_lost_writes(ops, result.states)
    result.hazards, result.warnings = scan_node_logs(cluster)
    return result


# =============================================================================== nemesis
@dataclass
class FaultRecord:
    name: str
    detail: str = ""
    at_s: float = 0.0                 # since the run started
    hold_s: float = 0.0
    recovery_s: float | None = None   # heal -> a leader and new acknowledged writes
    error: str | None = None

    def describe(self) -> str:
        recovery = "not recovered" if self.recovery_s is None else f"recovered in {self.recovery_s:.1f}s"
        return (f"t={self.at_s:6.1f}s {self.name:<26} {self.detail} (held {self.hold_s:.1f}s, "
                f"{recovery}){' ERROR ' + self.error if self.error else ''}")


FAULTS = ("kill-leader", "kill-node", "kill-minority", "pause-leader", "pause-node",
          "isolate-leader", "partition", "partition-leader-minority", "bridge", "kill-all",
          "latency", "isolate-leader-and-kill")
FAULT_WEIGHTS = {"kill-leader": 3, "kill-node": 2, "kill-minority": 1, "pause-leader": 2,
                 "pause-node": 1, "isolate-leader": 3, "partition": 2,
                 "partition-leader-minority": 2, "bridge": 2, "kill-all": 1, "latency": 1,
                 "isolate-leader-and-kill": 1}


class Nemesis:
    """Injects one fault at a time, holds it, heals it and waits until the cluster serves
    writes again.  Node crashes it did not cause are anomalies (the node is restarted)."""

    def __init__(self, cluster: ProxiedCluster, workload: Workload, rng: random.Random,
                 log: Callable[[str], None], recovery_timeout: float = 30.0) -> None:
        self.cluster = cluster
        self.workload = workload
        self.rng = rng
        self.log = log
        self.recovery_timeout = recovery_timeout
        self.killed: set[str] = set()
        self.records: list[FaultRecord] = []
        self.anomalies: list[Anomaly] = []
        self.started = time.monotonic()

    # ---- helpers ---------------------------------------------------------------------------------
    def _leader(self) -> str:
        return self.cluster.leader() or self.rng.choice(self.cluster.ids)

    def _kill(self, node_id: str) -> None:
        self.killed.add(node_id)
        self.cluster.kill(node_id)

    def _restart_killed(self) -> None:
        for node_id in sorted(self.killed):
            self.cluster.restart(node_id)
        self.killed.clear()

    def check_crashes(self) -> None:
        """Nodes that died without being killed: an anomaly (restarted so the run goes on)."""
        for node_id, node in self.cluster.nodes.items():
            if node_id in self.killed or node.process is None or node.alive:
                continue
            tail = _log_tail(node.log_path)
            self.anomalies.append(Anomaly("crash", f"{node_id} exited with "
                                                   f"{node.process.returncode}:\n{tail}"))
            self.log(f"!! {node_id} crashed (exit {node.process.returncode}); restarting")
            node.start()

    def heal_all(self) -> None:
        self.cluster.proxy.heal()
        self.cluster.proxy.set_latency(0.0)
        self.cluster.resume_all()
        self._restart_killed()

    # ---- one fault -------------------------------------------------------------------------------
    def run(self, name: str, hold_s: float) -> FaultRecord:
        record = FaultRecord(name, at_s=time.monotonic() - self.started, hold_s=hold_s)
        self.check_crashes()
        try:
            record.detail = self._inject(name)
            self.log(f"fault {name}: {record.detail}; holding {hold_s:.1f}s")
            time.sleep(hold_s)               # the schedule itself, not a synchronisation
            record.detail += f"; leader at the end: {self.cluster.leader(timeout=0.5) or 'none'}"
            self.check_crashes()
        except Exception as exc:  # noqa: BLE001 - harness problem: report, heal, go on
            record.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.heal_all()
        healed = time.monotonic()
        if self.wait_recovered():
            record.recovery_s = time.monotonic() - healed
        else:
            self.anomalies.append(Anomaly(
                "unavailable", f"no leader with new acknowledged writes {self.recovery_timeout:g}s "
                               f"after healing {name} ({record.detail}): {self.cluster.describe()}"))
        self.check_crashes()
        self.records.append(record)
        self.log(f"   {record.describe()}")
        return record

    def wait_recovered(self) -> bool:
        deadline = time.monotonic() + self.recovery_timeout
        if poll_until(self.cluster.leader, self.recovery_timeout, 0.1) is None:
            return False
        return self.workload.wait_for_progress(3, max(1.0, deadline - time.monotonic()))

    def _inject(self, name: str) -> str:
        cluster, proxy, rng = self.cluster, self.cluster.proxy, self.rng
        ids = cluster.ids
        n = len(ids)
        minority_max = (n - 1) // 2
        if name == "kill-leader":
            leader = self._leader()
            self._kill(leader)
            return f"kill -9 leader {leader}"
        if name == "kill-node":
            victim = rng.choice(ids)
            self._kill(victim)
            return f"kill -9 {victim}"
        if name == "kill-minority":
            leader = self._leader()
            others = [i for i in ids if i != leader]
            victims = [leader] + rng.sample(others, minority_max - 1)
            for victim in victims:
                self._kill(victim)
            return f"kill -9 {','.join(victims)} (leader {leader})"
        if name == "kill-all":
            for victim in ids:
                self._kill(victim)
            return "kill -9 every node"
        if name == "pause-leader":
            leader = self._leader()
            cluster.pause(leader)
            return f"SIGSTOP leader {leader}"
        if name == "pause-node":
            victim = rng.choice(ids)
            cluster.pause(victim)
            return f"SIGSTOP {victim}"
        if name == "isolate-leader":
            leader = self._leader()
            proxy.isolate(leader)
            return f"isolate leader {leader}"
        if name == "isolate-leader-and-kill":
            leader = self._leader()
            proxy.isolate(leader)
            if n >= 5:
                victim = rng.choice([i for i in ids if i != leader])
                self._kill(victim)
                return f"isolate leader {leader}, kill -9 {victim}"
            return f"isolate leader {leader}"
        if name in ("partition", "partition-leader-minority"):
            leader = self._leader()
            size = rng.randint(1, minority_max)
            others = [i for i in ids if i != leader]
            if name == "partition-leader-minority" or rng.random() < 0.5:
                minority = [leader] + rng.sample(others, size - 1)
            else:
                minority = rng.sample(others, size)
            majority = [i for i in ids if i not in minority]
            proxy.partition([minority, majority])
            return f"partition {sorted(minority)} | {sorted(majority)} (leader {leader})"
        if name == "bridge":
            leader = self._leader()
            shuffled = ids[:]
            rng.shuffle(shuffled)
            if rng.random() < 0.5:      # the leader is the bridge ...
                middle = leader
            else:                       # ... or on one side
                middle = rng.choice([i for i in ids if i != leader])
            rest = [i for i in shuffled if i != middle]
            left, right = rest[:len(rest) // 2], rest[len(rest) // 2:]
            proxy.bridge(left, middle, right)
            return f"bridge {sorted(left)} - {middle} - {sorted(right)} (leader {leader})"
        if name == "latency":
            delay = rng.uniform(0.02, 0.2)
            proxy.set_latency(delay, jitter=delay / 2)
            return f"latency {delay * 1000:.0f}ms (+jitter) on every link"
        raise ValueError(f"unknown fault {name!r}")


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


# =============================================================================== one run
SHORT_SCHEDULES: dict[int, list[tuple[str, float]]] = {
    3: [("kill-leader", 2.0), ("pause-leader", 2.5), ("isolate-leader", 3.0),
        ("partition", 2.5), ("kill-node", 2.0), ("bridge", 3.0), ("latency", 2.0),
        ("partition-leader-minority", 3.0), ("pause-node", 2.0), ("kill-all", 1.0)],
    5: [("kill-leader", 2.0), ("partition-leader-minority", 3.0), ("bridge", 3.0),
        ("pause-leader", 2.5), ("isolate-leader-and-kill", 3.0), ("kill-minority", 2.0),
        ("partition", 3.0), ("latency", 2.0), ("bridge", 3.0), ("kill-all", 1.0)],
}


@dataclass
class RunReport:
    nodes: int
    seed: int
    wall_s: float = 0.0
    ops: dict[str, int] = field(default_factory=dict)
    faults: list[FaultRecord] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    hazards: list[str] = field(default_factory=list)     # logged risks, no violation seen
    warnings: list[str] = field(default_factory=list)
    artifacts: Path | None = None
    check_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.anomalies and not self.undecided

    def format(self) -> str:
        ops = self.ops
        acked = sum(v for k, v in ops.items() if k.endswith(":ok") and not k.startswith("read"))
        lines = [f"nodes={self.nodes} seed={self.seed} wall={self.wall_s:.1f}s "
                 f"(checks {self.check_s:.1f}s)",
                 f"operations: {ops.get('total', 0)} ({acked} acknowledged writes)",
                 "  " + " ".join(f"{k}={v}" for k, v in ops.items() if k != "total"),
                 f"faults injected: {len(self.faults)}"]
        lines += [f"  {f.describe()}" for f in self.faults]
        lines.append(f"anomalies: {len(self.anomalies)}")
        by_kind: dict[str, list[Anomaly]] = collections.defaultdict(list)
        for anomaly in self.anomalies:
            by_kind[anomaly.kind].append(anomaly)
        for kind, found in by_kind.items():
            lines.append(f"  {kind}: {len(found)}")
            lines += ["    " + str(a).replace("\n", "\n      ") for a in found[:5]]
            if len(found) > 5:
                lines.append(f"    ... {len(found) - 5} more {kind}")
        if self.undecided:
            lines += ["undecided:"] + [f"  {u}" for u in self.undecided]
        if self.hazards:
            lines.append(f"hazards (logged by the nodes; no violation observed): {len(self.hazards)}")
            lines += [f"  {h}" for h in self.hazards[:10]]
        if self.warnings:
            lines.append(f"warnings: {len(self.warnings)}")
            lines += [f"  {w}" for w in self.warnings[:15]]
        if self.artifacts:
            lines.append(f"artifacts (history, operations, faults, node logs): {self.artifacts}")
        return "\n".join(lines)


def run_nemesis(root: Path, *, nodes: int = 3, seed: int = 0,
                schedule: list[tuple[str, float]] | None = None,
                duration_s: float | None = None, workers: int | None = None,
                keys: Iterable[str] = ("k0", "k1", "k2"), op_timeout: float = 5.0,
                hold_range: tuple[float, float] = (1.0, 4.0), gap_range: tuple[float, float] = (0.5, 2.0),
                faults: Iterable[str] = FAULTS, lincheck_timeout_s: float = 300.0,
                log: Callable[[str], None] = lambda line: None) -> RunReport:
    """Start a proxied cluster, run the workload under faults, heal, check everything.

    ``schedule``: (fault, hold seconds) pairs, run in order.  ``duration_s``: then keep
    injecting random faults (seeded) for that many more seconds.
    Artifacts (history.jsonl for tools/lincheck.py, operations.jsonl, faults.txt, report.txt,
    node logs) stay in ``root``.
    """
    root = Path(root)
    rng = random.Random(seed)
    report = RunReport(nodes, seed)
    started = time.monotonic()
    cluster = ProxiedCluster(root / "cluster", nodes, seed=seed)
    workload: Workload | None = None
    nemesis: Nemesis | None = None
    try:
        leader = cluster.start()
        log(f"cluster of {nodes} up in {time.monotonic() - started:.1f}s, leader {leader}; "
            f"{cluster.describe()}")
        workload = Workload(cluster.endpoints, cluster.token, workers=workers or nodes + 1,
                            keys=keys, seed=seed, op_timeout=op_timeout)
        workload.start()
        if not workload.wait_for_progress(10, 30.0):
            report.anomalies.append(Anomaly("unavailable", "no progress before any fault"))
        nemesis = Nemesis(cluster, workload, rng, log)
        steps = list(schedule or [])
        weighted = [f for f in faults for _ in range(FAULT_WEIGHTS.get(f, 1))]
        random_since: float | None = None
        for step in range(100_000):                     # bounded
            if steps:
                name, hold = steps.pop(0)
            else:
                random_since = random_since or time.monotonic()
                if duration_s is None or time.monotonic() - random_since >= duration_s:
                    break
                name, hold = rng.choice(weighted), rng.uniform(*hold_range)
            nemesis.run(name, hold)
            time.sleep(rng.uniform(*gap_range))         # normal operation between faults
        nemesis.heal_all()
        if not workload.wait_for_progress(5, 30.0):
            report.anomalies.append(Anomaly("unavailable", "no progress after the final heal"))
        if not workload.stop():
            report.warnings.append("some workers did not stop in time")
        check_started = time.monotonic()
        nemesis.check_crashes()
        report.anomalies += nemesis.anomalies
        report.faults = nemesis.records
        report.ops = workload.summary()
        safety = check_safety(cluster, workload, lincheck_timeout_s)
        report.anomalies += safety.anomalies
        report.undecided += safety.undecided
        report.hazards += safety.hazards
        report.warnings += safety.warnings
        report.check_s = time.monotonic() - check_started
    except BaseException as exc:
        report.anomalies.append(Anomaly("harness", f"run aborted: {type(exc).__name__}: {exc}"))
        raise
    finally:
        if workload is not None:
            workload.stop(timeout=op_timeout + 15)
            if nemesis is not None:
                report.faults = nemesis.records
            report.ops = workload.summary()
        cluster.close()
        report.wall_s = time.monotonic() - started
        report.artifacts = _save_artifacts(root, report, workload)
    return report


def _save_artifacts(root: Path, report: RunReport, workload: Workload | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if workload is not None:
        workload.dump(root)
    (root / "faults.txt").write_text("".join(f.describe() + "\n" for f in report.faults))
    report.artifacts = root
    (root / "report.txt").write_text(report.format() + "\n")
    return root
