"""GET /v1/watch/stream on a real node: JSON lines with heartbeats, refusals before the
stream (401, 400, 405, 410, 503 at the watcher cap), and a reader that stops reading is cut
off instead of buffering without bound."""
from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack
from typing import Any, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from consensus_store.launcher import LocalCluster
from consensus_store.node.watch_stream import SEND_TIMEOUT_S

from .support import ClusterPool, wait_until

MAX_WATCHERS = 3
TCP_CLOSE = 7           # linux/tcp_states.h


@pytest.fixture(scope="module")
def node(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(1, name="stream", extra_toml=f"""
[limits]
watch_history_events = 300
max_watchers = {MAX_WATCHERS}
max_value_bytes = 1048576
""")


def _url(cluster: LocalCluster, query: str) -> str:
    return f"{cluster.endpoints[0]}/v1/watch/stream?{query}"


def _auth(cluster: LocalCluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.token}"}


def _lines(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def test_events_and_heartbeats_as_json_lines(node: LocalCluster) -> None:
    with node.client() as client:
        first = client.put("s/a", 1).mod_revision
        client.put("other", 0)
        client.delete("s/a")
        with httpx.stream("GET", _url(node, f"prefix=s/&start_revision={first}&heartbeat=0.2"),
                          headers=_auth(node), timeout=10.0) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-ndjson"
            lines = _lines(response)
            assert next(lines) == {"heartbeat": True, "revision": first - 1}
            put, delete = next(lines), next(lines)
            assert (put["type"], put["kv"]["key"], put["kv"]["mod_revision"]) == ("put", "s/a",
                                                                                   first)
            assert (delete["type"], delete["key"]) == ("delete", "s/a")
            assert "prev_kv" not in delete
            beat = next(lines)                      # nothing more under s/: a heartbeat
            assert beat["heartbeat"] is True and beat["revision"] >= delete["revision"]
            client.put("s/b", 2)
            later = next(line for line in lines if "type" in line)
            assert later["kv"]["key"] == "s/b"


def test_refusals_come_before_the_stream(node: LocalCluster) -> None:
    with node.client() as client:
        for i in range(400):
            client.put("fill", i)
    answers = {
        "no token": httpx.get(_url(node, "prefix=x"), timeout=5.0),
        "bad start": httpx.get(_url(node, "start_revision=-3"), headers=_auth(node), timeout=5.0),
        "bad heartbeat": httpx.get(_url(node, "heartbeat=0"), headers=_auth(node), timeout=5.0),
        "unknown": httpx.get(_url(node, "prefx=a"), headers=_auth(node), timeout=5.0),
        "post": httpx.post(_url(node, ""), headers=_auth(node), timeout=5.0),
        "compacted": httpx.get(_url(node, "start_revision=1"), headers=_auth(node), timeout=5.0),
    }
    assert {name: a.status_code for name, a in answers.items()} == {
        "no token": 401, "bad start": 400, "bad heartbeat": 400, "unknown": 400, "post": 405,
        "compacted": 410}
    for answer in answers.values():
        assert "message" in answer.json()
    assert answers["compacted"].json()["floor"] > 1


def test_a_cap_on_watchers_answers_503(node: LocalCluster) -> None:
    readers = []         # a line iterator closed by the garbage collector closes its stream
    with ExitStack() as stack:
        for _ in range(MAX_WATCHERS):
            response = stack.enter_context(httpx.stream(
                "GET", _url(node, "prefix=cap/&heartbeat=0.2"), headers=_auth(node),
                timeout=10.0))
            assert response.status_code == 200
            readers.append(response.iter_lines())
            next(readers[-1])                       # attached
        refused = httpx.get(_url(node, "prefix=cap/"), headers=_auth(node), timeout=5.0)
        assert refused.status_code == 503 and "watchers" in refused.json()["message"]
    # Closed streams are noticed (at their next heartbeat) and free their places.
    wait_until(lambda: _opens(node), 20.0, what="a stream opens again after the others left")


def _opens(node: LocalCluster) -> bool:
    with httpx.stream("GET", _url(node, "prefix=cap/&heartbeat=0.2"), headers=_auth(node),
                      timeout=5.0) as response:
        return response.status_code == 200


def test_a_reader_that_stops_reading_is_cut_off(node: LocalCluster) -> None:
    address = urlsplit(node.endpoints[0])

    def attach() -> socket.socket | None:
        sock = socket.create_connection((address.hostname, address.port), timeout=5.0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /v1/watch/stream?prefix=big/ HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {node.token}\r\n\r\n".encode())
        if sock.recv(12) == b"HTTP/1.1 200":
            return sock
        sock.close()         # 503 while other tests' streams are still counted
        return None

    def reset() -> bool:
        """Reset by the node?  (TCP_INFO's state, read without taking any data.)"""
        return stalled.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_CLOSE

    stalled = wait_until(attach, 20.0, what="a stream attached")
    with node.client() as client:
        big = "x" * (256 * 1024)
        for i in range(128):                      # 32 MiB the stalled reader never takes
            client.put(f"big/{i % 4}", big + str(i))
        written = time.monotonic()
        assert not reset()
        wait_until(reset, SEND_TIMEOUT_S + 20.0, what="the stalled stream is reset")
        assert time.monotonic() - written < SEND_TIMEOUT_S + 20.0
        assert client.get("big/0") is not None    # the node serves on
    received = 0                                  # what was in flight when it was reset
    try:
        while chunk := stalled.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        pass
    stalled.close()
    assert received < 4 * 1024 * 1024
