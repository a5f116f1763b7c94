"""The fault-injecting TCP proxy for Raft links (``FaultProxy``) and the port ranges it relies on.

How every Raft connection goes through the proxy (docs/pysyncobj.md, "Fault injection")
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

Owns sockets and one asyncio thread only: no node processes, no configs, no clients.
"""
from __future__ import annotations

import asyncio
import collections
import random
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

HOST = "127.0.0.1"
NODE_PORT_RANGE = (30000, 32767)    # node raft ports: "3xxxx"
PROXY_PORT_RANGE = (20000, 29999)   # proxy ports: "2xxxx", so every node address > every proxy


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
