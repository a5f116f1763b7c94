"""Issue #10: headers a client library would never send, as raw bytes over a socket (httpx
refuses non-ASCII header values).  A bad ``Authorization`` value is a wrong token: 401 JSON.  A
header line HTTP cannot parse is the parser's 400 (uvicorn's httptools), never a 500.  Neither
leaves a traceback in the node's log (one per request would let anyone fill the disk)."""
from __future__ import annotations

import json
import socket

import pytest

from consensus_store.launcher import LocalCluster
from integration.support import ClusterPool


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3)


def raw_request(cluster: LocalCluster, node_id: str, head: bytes) -> tuple[int, bytes, bytes]:
    """Send ``head`` (a request line and headers, no terminator) to one node; (status, headers,
    body) of its answer."""
    address = cluster.nodes[node_id].config.api_address
    with socket.create_connection((address.host, address.port), timeout=10.0) as connection:
        connection.sendall(head + b"\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    headers, _, body = answer.partition(b"\r\n\r\n")
    return int(headers.split(b" ", 2)[1]), headers, body


def tracebacks(cluster: LocalCluster, node_id: str) -> int:
    return cluster.nodes[node_id].log_path.read_text(errors="replace").count("Traceback")


def status_line(token: bytes) -> bytes:
    return b"GET /v1/status HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer " + token


@pytest.mark.parametrize("token", [
    b"\xe9\xff\xfe",                       # not UTF-8
    "jeton-é-ü-0123456789".encode(),       # UTF-8, not ASCII
    b"\xc3",                               # a cut UTF-8 sequence
    b"\xed\xa0\x80",                       # an encoded surrogate
])
def test_non_ascii_authorization_is_401_json_without_traceback(cluster: LocalCluster,
                                                                token: bytes) -> None:
    node_id = cluster.wait_for_leader()
    before = tracebacks(cluster, node_id)
    for value in (token, cluster.token.encode() + token, token + cluster.token.encode()):
        status, headers, body = raw_request(cluster, node_id, status_line(value))
        assert status == 401, body
        assert b"application/json" in headers
        assert json.loads(body)["error"] == "unauthorized"
    status, _, _ = raw_request(cluster, node_id, status_line(cluster.token.encode()))
    assert status == 200
    assert tracebacks(cluster, node_id) == before


@pytest.mark.parametrize("line", [
    b"Authorization Bearer x",             # no colon
    b"Authorization : Bearer x",           # space before the colon
    b"Authorization: Bearer \x01\x02",     # control characters
    b"Authorization: Bearer a\x00b",       # NUL
    b"Auth\xe9rization: Bearer x",         # a non-ASCII header name
    b": Bearer x",                         # no name
])
def test_malformed_header_line_is_400_without_traceback(cluster: LocalCluster,
                                                        line: bytes) -> None:
    node_id = cluster.wait_for_leader()
    before = tracebacks(cluster, node_id)
    status, _, body = raw_request(cluster, node_id,
                                  b"GET /v1/status HTTP/1.1\r\nHost: node\r\n" + line)
    assert status == 400, body
    status, _, _ = raw_request(cluster, node_id, status_line(cluster.token.encode()))
    assert status == 200                     # the node still serves
    assert tracebacks(cluster, node_id) == before
