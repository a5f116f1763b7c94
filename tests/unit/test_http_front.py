"""The HTTP front end (``node/http_front.py``: uvicorn's httptools protocol behind
``http_guard``, answering through ``api.respond``), served on 127.0.0.1 exactly as the node wires
it (``ClientPort`` around ``HttpFront.connection``), with a fake service: routes, status codes and
JSON error bodies, body limits, bad headers, the header deadline and the idle timeout."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from types import SimpleNamespace
from typing import Any, Awaitable, Callable

import pytest

from consensus_store.config import Address, ClientToken, Limits, Role
from consensus_store.errors import InvalidRequest
from consensus_store.launcher import free_ports
from consensus_store.node.client_ports import ClientPort, ConnectionGate
from consensus_store.node.http_front import HttpFront
from consensus_store.testing.polling import closed_within

TOKEN = "front-token-0123456789"
READER = "reader-token-0123456789"


class FakeService:
    def __init__(self, limits: Limits) -> None:
        callers = {TOKEN.encode(): ClientToken("admin", TOKEN, Role.ADMIN),
                   READER.encode(): ClientToken("reader", READER, Role.READ)}
        self.config = SimpleNamespace(limits=limits)
        self.tokens = SimpleNamespace(lookup=callers.get)
        self.calls: list[tuple[str, dict[str, Any], Any]] = []

    def header(self) -> dict[str, Any]:
        return {"node": "n1", "applied_index": 3}

    async def _answer(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("key") == "boom":
            raise RuntimeError("a bug")
        if body.get("key") == "bad":
            raise InvalidRequest("bad key")
        if body.get("key") == "slow":
            await asyncio.sleep(0.6)
        return {"op": op, "body": body}

    def call(self, op: str, body: dict[str, Any], caller: Any = None,
             timeout: float | None = None) -> Any:
        self.calls.append((op, body, caller))
        return self._answer(op, body)


Scenario = Callable[[Address, FakeService], Awaitable[None]]


def serve(scenario: Scenario, **limits: Any) -> FakeService:
    """Run ``scenario`` against the front end on a free loopback port, wired as the node does."""
    service = FakeService(Limits(**limits))

    async def main() -> None:
        http = HttpFront(service, limits.get("header_timeout_s", 10.0))   # type: ignore[arg-type]
        port = ClientPort("HTTP", http.connection, ConnectionGate("HTTP", 10, 10_000), None)
        address = Address("127.0.0.1", free_ports(1)[0])
        await port.listen(address)
        try:
            await scenario(address, service)
        finally:
            await port.close()
            await http.close()
    asyncio.run(main())
    return service


async def exchange(address: Address, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """One request on its own connection: (status, head, body) of the answer."""
    reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        writer.write(head + b"\r\nConnection: close\r\n\r\n" + body)
        answer = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    answer_head, _, answer_body = answer.partition(b"\r\n\r\n")
    return int(answer_head.split(b" ", 2)[1]), answer_head, answer_body


def request(method: str, path: str, token: str | None = TOKEN, body: bytes | None = None,
            headers: bytes = b"") -> tuple[bytes, bytes]:
    head = f"{method} {path} HTTP/1.1\r\nHost: node".encode() + headers
    if token is not None:
        head += f"\r\nAuthorization: Bearer {token}".encode()
    if body is not None:
        head += f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}".encode()
    return head, body or b""


def test_ops_are_served_at_their_routes_with_the_caller() -> None:
    async def scenario(address: Address, service: FakeService) -> None:
        status, head, body = await exchange(address, *request("POST", "/v1/kv/get",
                                                              body=b'{"key": "k"}'))
        assert status == 200 and b"application/json" in head
        assert json.loads(body) == {"op": "get", "body": {"key": "k"},
                                    "header": {"node": "n1", "applied_index": 3}}
        status, _, body = await exchange(address, *request("GET", "/v1/status"))
        assert (status, json.loads(body)["op"]) == (200, "status")
        status, _, body = await exchange(address, *request("HEAD", "/v1/status"))
        assert (status, body) == (200, b"")
        status, _, body = await exchange(address, *request("GET", "/health", token=None))
        assert status == 200 and json.loads(body)["ok"] is True
        status, _, body = await exchange(address, *request("POST", "/v1/groups/join",
                                                           body=b'{"group": "g"}'))
        assert (status, json.loads(body)["op"]) == (200, "group_join")
        status, _, body = await exchange(address, *request("POST", "/v1/session/open"))
        assert status == 200                      # no body at all: an empty object
    service = serve(scenario)
    assert [op for op, _, _ in service.calls] == ["get", "status", "status", "group_join",
                                                 "session_open"]
    assert {caller.name for _, _, caller in service.calls} == {"admin"}


@pytest.mark.parametrize(("method", "path", "token", "body", "status", "error"), [
    ("POST", "/v1/kv/get", None, b"{}", 401, "unauthorized"),
    ("POST", "/v1/kv/get", "wrong-token-0123456789", b"{}", 401, "unauthorized"),
    ("GET", "/v1/nowhere", None, None, 401, "unauthorized"),       # the token comes first
    ("GET", "/v1/nowhere", TOKEN, None, 404, "not_found"),
    ("GET", "/v1/kv/put", TOKEN, None, 405, "method_not_allowed"),
    ("POST", "/v1/status", TOKEN, b"{}", 405, "method_not_allowed"),
    ("POST", "/v1/kv/put", READER, b"{}", 403, "forbidden"),
    ("GET", "/v1/digest", READER, None, 403, "forbidden"),
    ("POST", "/v1/kv/get", TOKEN, b"{not json", 400, "invalid_request"),
    ("POST", "/v1/kv/get", TOKEN, b"[1, 2]", 400, "invalid_request"),
    ("POST", "/v1/kv/get", TOKEN, b"[" * 60_000 + b"]" * 60_000, 400, "invalid_request"),
    ("POST", "/v1/kv/get", TOKEN, b'{"key": "bad"}', 400, "invalid_request"),
    ("POST", "/v1/kv/get", TOKEN, b'{"key": "boom"}', 500, "internal"),
])
def test_errors_are_json_with_their_status(method: str, path: str, token: str | None,
                                           body: bytes | None, status: int,
                                           error: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(address: Address, service: FakeService) -> None:
        got, head, answer = await exchange(address, *request(method, path, token, body))
        assert got == status and b"application/json" in head
        decoded = json.loads(answer)
        assert decoded["error"] == error and decoded["message"] and "header" in decoded
        assert "Traceback" not in decoded["message"]
        if status == 405:
            assert b"allow: " in head.lower()
            assert ("use POST" if method == "GET" else "use GET, HEAD") in decoded["message"]
    with caplog.at_level(logging.ERROR):
        serve(scenario, max_value_bytes=100_000)


def test_a_body_over_the_limit_is_413_json() -> None:
    async def scenario(address: Address, service: FakeService) -> None:
        big = b'{"value": "' + b"x" * 300_000 + b'"}'
        status, _, body = await exchange(address, *request("POST", "/v1/kv/put", body=big))
        assert (status, json.loads(body)["error"]) == (413, "payload_too_large")
        assert service.calls == []
    serve(scenario, max_value_bytes=100_000)


@pytest.mark.parametrize("token", [b"\xe9\xff\xfe", "jeton-é-0123456789".encode(), b"\xc3"])
def test_a_non_ascii_authorization_is_401_json(token: bytes) -> None:
    async def scenario(address: Address, service: FakeService) -> None:
        head = b"GET /v1/status HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer " + token
        status, answer_head, body = await exchange(address, head)
        assert status == 401 and b"application/json" in answer_head
        assert json.loads(body)["error"] == "unauthorized"
    serve(scenario)


def test_a_header_line_http_cannot_parse_is_400_and_the_port_still_serves() -> None:
    async def scenario(address: Address, service: FakeService) -> None:
        status, _, _ = await exchange(address, b"GET /v1/status HTTP/1.1\r\nHost: node\r\n"
                                               b"no colon here")
        assert status == 400
        status, _, _ = await exchange(address, *request("GET", "/v1/status"))
        assert status == 200
    serve(scenario)


def test_the_header_deadline_and_idle_timeout_hold_but_a_slow_answer_is_not_cut() -> None:
    async def scenario(address: Address, service: FakeService) -> None:
        # a head trickling in: closed after the 0.3 s header deadline
        reader, writer = await asyncio.open_connection(address.host, address.port)
        started = time.monotonic()
        writer.write(b"POST /v1/kv/get HTTP/1.1\r\n")
        for _ in range(10):
            await asyncio.sleep(0.1)
            if reader.at_eof():
                break
            writer.write(b"X")
        assert await closed_within(reader, 2.0)
        assert time.monotonic() - started < 1.0
        writer.close()
        # a complete head answered slowly, twice on one connection: never cut
        reader, writer = await asyncio.open_connection(address.host, address.port)
        head, body = request("POST", "/v1/kv/get", body=b'{"key": "slow"}')
        for _ in range(2):
            writer.write(head + b"\r\n\r\n" + body)
            answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3.0)
            assert answer_head.startswith(b"HTTP/1.1 200")
            length = int(answer_head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await asyncio.wait_for(reader.readexactly(length), 1.0)
        # then idle: closed after the idle timeout (0.5 s), not at once
        idle_from = time.monotonic()
        assert await closed_within(reader, 3.0)
        assert time.monotonic() - idle_from >= 0.3
        writer.close()
        # a fresh connection that never sends: its first head is due too (uvicorn's keep-alive
        # timer only starts after an answer)
        reader, writer = await asyncio.open_connection(address.host, address.port)
        started = time.monotonic()
        assert await closed_within(reader, 2.0)
        assert time.monotonic() - started < 1.0
        writer.close()
    serve(scenario, header_timeout_s=0.3, idle_timeout_s=0.5)


def test_a_body_that_never_completes_is_answered_400_after_the_body_timeout() -> None:
    async def scenario(address: Address, service: FakeService) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        head, _ = request("POST", "/v1/kv/get", body=b"x" * 1000)
        writer.write(head + b'\r\n\r\n{"key": ')
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(65536), 5.0)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"body not received within 0.5s" in answer
        assert time.monotonic() - started < 2.0
        assert service.calls == []
    serve(scenario, body_timeout_s=0.5)


def test_a_head_too_large_is_refused_and_the_port_still_serves() -> None:
    async def scenario(address: Address, service: FakeService) -> None:
        lines = b"".join(b"\r\nX-Filler-%05d: %s" % (i, b"y" * 40) for i in range(10_000))
        reader, writer = await asyncio.open_connection(address.host, address.port)
        answer = b""
        try:
            writer.write(b"GET /v1/status HTTP/1.1\r\nHost: node" + lines + b"\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5.0)   # closed by the node
        except ConnectionResetError:
            pass                # closed while the rest of the head was still coming
        finally:
            writer.close()
        assert answer == b"" or answer.split(b" ", 2)[1] == b"431", answer[:100]
        status, _, _ = await exchange(address, *request("GET", "/v1/status"))
        assert status == 200
        assert [op for op, _, _ in service.calls] == ["status"]
    serve(scenario)


def test_a_body_that_came_with_its_head_is_read_without_a_timer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's request cycle says when the body is all in (``http_front._body_is_in``): then
    no timer is armed (it costs ~5 µs a request under uvloop)."""
    from consensus_store.node import http_front
    seen: list[bool] = []
    body_is_in = http_front._body_is_in

    def watched(receive: Any) -> bool:
        seen.append(body_is_in(receive))
        return seen[-1]
    monkeypatch.setattr(http_front, "_body_is_in", watched)

    async def scenario(address: Address, service: FakeService) -> None:
        status, _, body = await exchange(address, *request("POST", "/v1/kv/get",
                                                           body=b'{"key": "k"}'))
        assert status == 200, body
    serve(scenario)
    assert seen == [True]


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario(address: Address, service: FakeService) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        requests = b""
        for key in (b"a", b"b"):
            head, body = request("POST", "/v1/kv/get", body=b'{"key": "%s"}' % key)
            requests += head + b"\r\n\r\n" + body
        head, _ = request("HEAD", "/v1/status")
        writer.write(requests + head + b"\r\n\r\n")
        keys = []
        for _ in range(2):
            answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3.0)
            length = int(answer_head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            keys.append(json.loads(await reader.readexactly(length))["body"]["key"])
        assert keys == ["a", "b"]
        last = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3.0)
        assert last.startswith(b"HTTP/1.1 200")        # HEAD: a head, no body
        writer.close()
    serve(scenario)


def test_an_answer_s_head_waits_for_its_body_to_go_out_in_one_write() -> None:
    from consensus_store.node.http_guard import OneWritePerAnswer
    written: list[bytes] = []
    transport = SimpleNamespace(write=written.append, close=lambda: written.append(b"<close>"),
                                is_closing=lambda: False)
    writes = OneWritePerAnswer(transport)   # type: ignore[arg-type]
    writes.write(b"HTTP/1.1 100 Continue\r\n\r\n")        # not held: the client waits for it
    writes.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert written == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    writes.write(b"{}")
    assert written[1:] == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    writes.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    writes.close()                                         # what is held goes out first
    assert written[2:] == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n", b"<close>"]
