"""A node serving many watch streams keeps answering the puts sent to it under their prefix
(issue #13: with 10,000 streams and the writers on the same node, that node answered no put).

2,000 streams on ``hot/`` wait while 20,000 events under ``cold/`` are applied; then puts to
``hot/`` on the same node.  Before woken watchers skipped the events of other prefixes and
took turns, each of the 2,000 scanned the 20,000 cold events in one go at the first hot put:
the node's loop stopped for many seconds and the next puts timed out.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from urllib.parse import urlsplit

from consensus_store.errors import ConsensusStoreError

from .support import ClusterPool, wait_until

STREAMS = 2000
COLD_EVENTS = 20_000
TXN_OPS = 128            # MAX_TXN_OPS: the cold events go in as few entries
HOT_PUTS_S = 3.0
PUT_TIMEOUT_S = 5.0
_HOT = b'"key":"hot/'


class _Streams:
    """STREAMS watch streams read on their own loop thread as fast as they come."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.attached = 0
        self.hot_seen = [0] * STREAMS
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks = asyncio.run_coroutine_threadsafe(self._open_all(), self.loop).result(30)

    async def _open_all(self) -> list[asyncio.Task]:
        tasks = []
        for start in range(0, STREAMS, 200):
            tasks += [asyncio.create_task(self._read(n)) for n in range(start, start + 200)]
            await asyncio.sleep(0.02)
        return tasks

    async def _read(self, n: int) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(f"GET /v1/watch/stream?prefix=hot/&heartbeat=30 HTTP/1.1\r\nHost: t"
                         f"\r\nAuthorization: Bearer {self.token}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                return
            self.attached += 1
            tail = b""          # a key split between two reads is counted once
            while data := await reader.read(1 << 16):
                data = tail + data
                self.hot_seen[n] += data.count(_HOT)
                tail = data[-(len(_HOT) - 1):]
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        for task in self.tasks:
            self.loop.call_soon_threadsafe(task.cancel)
        time.sleep(0.5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_puts_to_a_watched_prefix_are_answered_by_the_node_serving_the_streams(
        cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(1, name="liveness", extra_toml=f"""
[limits]
max_http_connections = {STREAMS + 200}
max_watchers = {STREAMS + 200}
""")
    address = urlsplit(cluster.endpoints[0])
    streams = _Streams(address.hostname or "127.0.0.1", address.port or 0, cluster.token)
    try:
        wait_until(lambda: streams.attached == STREAMS, 60.0, what="all streams attached")
        with cluster.client() as client:
            for first in range(0, COLD_EVENTS, TXN_OPS):
                client.txn(success=[{"op": "put", "key": f"cold/{first + i}", "value": i}
                                    for i in range(TXN_OPS)])
            latencies, failed = [], 0
            deadline = time.monotonic() + HOT_PUTS_S
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    client.put(f"hot/{len(latencies) % 8}", len(latencies),
                               timeout=PUT_TIMEOUT_S)
                except ConsensusStoreError:
                    failed += 1
                    continue
                latencies.append(time.monotonic() - started)
            assert failed == 0, f"{failed} puts not answered within {PUT_TIMEOUT_S} s"
            assert len(latencies) >= 20, latencies
            hot = len(latencies)
        # and the watchers get every hot put, each once
        wait_until(lambda: min(streams.hot_seen) >= hot, 60.0, what="every stream got them")
        assert max(streams.hot_seen) == hot
    finally:
        streams.close()


def test_a_node_stopping_ends_its_streams_without_a_traceback_each(
        cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(1, name="stopstreams")
    node = next(iter(cluster.nodes.values()))
    address = urlsplit(cluster.endpoints[0])
    sockets = []
    for _ in range(20):
        sock = socket.create_connection((address.hostname, address.port), timeout=10.0)
        sock.sendall(f"GET /v1/watch/stream?prefix=a/ HTTP/1.1\r\nHost: t\r\n"
                     f"Authorization: Bearer {cluster.token}\r\n\r\n".encode())
        assert sock.recv(12) == b"HTTP/1.1 200"
        sockets.append(sock)
    try:
        assert node.stop() == 0
        log = node.log_path.read_text(errors="replace")
        assert "Exception in ASGI application" not in log
        assert "returned without completing response" not in log
    finally:
        for sock in sockets:
            sock.close()
