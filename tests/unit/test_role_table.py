"""Client roles: the one table (``protocol.REQUIRED_ROLE``) both servers derive their checks
from, and each server refusing what a role does not allow, without a cluster."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from consensus_store.config import Address, ClientToken, Limits, Role
from consensus_store.errors import Forbidden, error_from_json
from consensus_store.launcher import free_ports
from consensus_store.node.client_ports import ClientPort, ConnectionGate
from consensus_store.node.http_front import HttpFront
from consensus_store.node.native import NativeServer, _Connection
from consensus_store.protocol import (OPS, OPS_ALLOWED, PUBLIC_OPS, REQUIRED_ROLE, ROUTES,
                                      WRITE_OPS)
from consensus_store.wire import FrameReader, decode, encode_auth, encode_request

TOKENS = {role: ClientToken(f"{role.value}-client", f"{role.value}-token-0123456789", role)
          for role in Role}


class FakeTokens:
    def __init__(self) -> None:
        self.by_secret = {t.token.encode(): t for t in TOKENS.values()}
        self.generation = 1

    def lookup(self, raw: bytes) -> ClientToken | None:
        return self.by_secret.get(raw)

    def replace(self, by_secret: dict[bytes, ClientToken]) -> None:
        """What a reload of the tokens file does."""
        self.by_secret = by_secret
        self.generation += 1


class FakeService:
    """Answers every op at once with ``{"op": ...}``: these tests are about who gets through."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(limits=Limits(max_value_bytes=1000), native_address=None)
        self.tokens = FakeTokens()
        self.engine = SimpleNamespace(applied_index=1, try_write_in_batch=lambda *a: False)
        self.calls: list[tuple[str, Any]] = []     # (op, caller) of each op that got through

    @property
    def callers(self) -> list[Any]:
        return [caller for _, caller in self.calls]

    def header(self) -> dict[str, Any]:
        return {"node": "n1"}

    def timeout_s(self, timeout: float | None) -> float:
        return 1.0

    def command_for(self, op: str, body: dict[str, Any], *, caller: Any = None) -> dict[str, Any]:
        self.calls.append((op, caller))
        return {"op": op}

    async def write_command(self, command: dict[str, Any], timeout: float,
                            alone: bool = False) -> dict[str, Any]:
        return command

    def call(self, op: str, body: dict[str, Any], caller: Any = None,
             timeout: float | None = None) -> Any:
        self.calls.append((op, caller))

        async def answer() -> dict[str, Any]:
            return {"op": op}
        return answer()


# ---- the table ----------------------------------------------------------------------------------
def test_every_op_has_exactly_one_required_role() -> None:
    assert set(REQUIRED_ROLE) == set(ROUTES)
    assert not PUBLIC_OPS & set(REQUIRED_ROLE)
    assert all(isinstance(role, Role) for role in REQUIRED_ROLE.values())


@pytest.mark.parametrize(("role", "allowed", "refused"), [
    (Role.READ, {"get", "range", "status", "watch", "groups_members", "locks_status"},
     {"put", "delete", "cas", "txn", "group_join", "lock_acquire", "session_open",
      "session_keepalive", "session_close", "digest", "sessions"}),
    (Role.READWRITE, {"get", "put", "txn", "lock_acquire", "election_campaign", "session_open",
                      "session_keepalive", "session_close"},
     {"digest", "sessions"}),
    (Role.ADMIN, set(ROUTES), set()),
])
def test_each_role_allows_what_the_readme_says(role: Role, allowed: set[str],
                                               refused: set[str]) -> None:
    assert allowed <= OPS_ALLOWED[role]
    assert not refused & OPS_ALLOWED[role]


def test_every_write_needs_readwrite() -> None:
    assert all(REQUIRED_ROLE[op] is Role.READWRITE for op in WRITE_OPS)


def test_every_route_is_one_op_of_the_table() -> None:
    assert len(set(ROUTES.values())) == len(ROUTES) == len(OPS)
    assert all(OPS[name].route == route for name, route in ROUTES.items())


def test_every_native_op_is_in_the_table() -> None:
    server = NativeServer(FakeService())  # type: ignore[arg-type]
    assert set(server.ops) - {"auth"} == set(REQUIRED_ROLE)


# ---- HTTP ----------------------------------------------------------------------------------------
class _Serving:
    """The HTTP front end (``HttpFront``) on a loopback port, and an httpx client to it."""

    def __init__(self, service: FakeService) -> None:
        self.front = HttpFront(service)   # type: ignore[arg-type]
        self.port = ClientPort("HTTP", self.front.connection, ConnectionGate("HTTP", 10, 10_000),
                               None)
        self.address = Address("127.0.0.1", free_ports(1)[0])

    async def __aenter__(self) -> httpx.AsyncClient:
        await self.port.listen(self.address)
        self.client = httpx.AsyncClient(base_url=f"http://{self.address}")
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.port.close()
        await self.front.close()


def _http(requests: list[tuple[str, str, Role | None]]) -> list[tuple[int, dict[str, Any]]]:
    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        service = FakeService()
        answers = []
        async with _Serving(service) as client:
            for method, path, role in requests:
                headers = {"Authorization": f"Bearer {TOKENS[role].token}"} if role else {}
                reply = await client.request(method, path, headers=headers, json={})
                answers.append((reply.status_code, reply.json()))
        return answers
    return asyncio.run(scenario())


def test_http_refuses_what_the_role_does_not_allow_with_403() -> None:
    answers = _http([("POST", "/v1/kv/put", Role.READ), ("POST", "/v1/kv/get", Role.READ),
                     ("GET", "/v1/digest", Role.READWRITE), ("GET", "/v1/sessions", Role.READWRITE),
                     ("POST", "/v1/locks/acquire", Role.READ), ("GET", "/v1/digest", Role.ADMIN),
                     ("POST", "/v1/kv/put", Role.READWRITE), ("POST", "/v1/kv/put", None),
                     ("GET", "/health", None), ("GET", "/v1/nowhere", Role.READ)])
    assert [status for status, _ in answers] == [403, 200, 403, 403, 403, 200, 200, 401, 200, 404]
    status, body = answers[0]
    assert body["error"] == "forbidden" and "read-client" in body["message"]
    assert "put" in body["message"] and "header" in body
    assert isinstance(error_from_json(status, body), Forbidden)
    assert answers[5][1]["op"] == "digest"


def test_http_answers_405_and_404_as_json_after_the_token_check() -> None:
    answers = _http([("GET", "/v1/kv/put", Role.READ), ("POST", "/v1/status", Role.READ),
                     ("GET", "/v1/nowhere", None)])
    assert [status for status, _ in answers] == [405, 405, 401]
    assert answers[0][1]["error"] == "method_not_allowed" and "use POST" in answers[0][1]["message"]
    assert "use GET, HEAD" in answers[1][1]["message"]


def test_http_handlers_pass_the_caller_to_the_service() -> None:
    async def scenario() -> list[Any]:
        service = FakeService()
        async with _Serving(service) as client:
            headers = {"Authorization": f"Bearer {TOKENS[Role.READWRITE].token}"}
            for path in ("/v1/kv/put", "/v1/groups/join", "/v1/session/open",
                         "/v1/session/keepalive", "/v1/session/close"):
                assert (await client.post(path, headers=headers, json={})).status_code == 200
        return service.callers
    assert asyncio.run(scenario()) == [TOKENS[Role.READWRITE]] * 5


# ---- native --------------------------------------------------------------------------------------
class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def answers(self) -> list[tuple[Any, int, dict[str, Any]]]:
        reader = FrameReader()
        reader.feed(bytes(self.data))
        self.data.clear()
        out = []
        while (payload := reader.next()) is not None:
            message = decode(payload)
            out.append((message["id"], message["status"], message["body"]))
        return out


def _native(service: FakeService, role: Role) -> tuple[_Connection, FakeTransport]:
    server = NativeServer(service)  # type: ignore[arg-type]
    connection = _Connection(server)
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(encode_auth(TOKENS[role].token))
    assert transport.answers()[0][1] == 200
    return connection, transport


def test_native_refuses_what_the_role_does_not_allow_and_stays_open() -> None:
    async def scenario() -> None:
        service = FakeService()
        connection, transport = _native(service, Role.READ)
        for request_id, op in enumerate(["put", "session_open", "digest", "sessions", "get",
                                         "frobnicate", "status"], start=1):
            connection.data_received(encode_request(request_id, op, {"key": "k", "value": 1}))
        await asyncio.sleep(0.01)
        answers = sorted(transport.answers(), key=lambda a: a[0])
        assert [(i, status) for i, status, _ in answers] == [
            (1, 403), (2, 403), (3, 403), (4, 403), (5, 200), (6, 400), (7, 200)]
        assert answers[0][2]["error"] == "forbidden" and "read-client" in answers[0][2]["message"]
        assert "unknown op" in answers[5][2]["message"]
        assert not transport.closed
        assert [op for op, _ in service.calls] == ["get", "status"]   # only what was allowed
    asyncio.run(scenario())


def test_native_passes_the_caller_and_admin_may_do_everything() -> None:
    async def scenario() -> None:
        service = FakeService()
        connection, transport = _native(service, Role.ADMIN)
        for request_id, op in enumerate(["put", "session_open", "digest", "sessions"], start=1):
            connection.data_received(encode_request(request_id, op, {"key": "k", "value": 1}))
        await asyncio.sleep(0.01)
        assert sorted(status for _, status, _ in transport.answers()) == [200] * 4
        assert service.callers == [TOKENS[Role.ADMIN]] * 4
    asyncio.run(scenario())


def test_native_op_not_in_the_table_is_a_bad_request_even_for_admin() -> None:
    async def scenario() -> None:
        service = FakeService()
        connection, transport = _native(service, Role.ADMIN)
        connection.data_received(encode_request(1, "forgotten", {}))
        [(request_id, status, body)] = transport.answers()
        assert (request_id, status, body["error"]) == (1, 400, "invalid_request")
        assert service.calls == []
    asyncio.run(scenario())


def test_native_connection_follows_a_tokens_reload() -> None:
    async def scenario() -> None:
        service = FakeService()
        connection, transport = _native(service, Role.READWRITE)
        connection.data_received(encode_request(1, "session_open", {}))
        await asyncio.sleep(0.01)
        assert transport.answers()[0][:2] == (1, 200)
        # same secret, now read-only: the next request is checked against the new role
        secret = TOKENS[Role.READWRITE].token
        demoted = ClientToken("demoted", secret, Role.READ)
        service.tokens.replace({secret.encode(): demoted})
        connection.data_received(encode_request(2, "session_open", {})
                                 + encode_request(3, "get", {"key": "k"}))
        assert [a[:2] for a in transport.answers()] == [(2, 403), (3, 200)]
        assert not transport.closed
        # removed: 401 and the connection closes
        service.tokens.replace({})
        connection.data_received(encode_request(4, "get", {"key": "k"}))
        [(request_id, status, body)] = transport.answers()
        assert (request_id, status, body["error"]) == (4, 401, "unauthorized")
        assert transport.closed
    asyncio.run(scenario())


def test_native_op_that_is_not_a_string_is_a_bad_request() -> None:
    async def scenario() -> None:
        connection, transport = _native(FakeService(), Role.ADMIN)
        connection.data_received(encode_request(1, "get", {}).replace(b'"get"', b'["x"]'))
        [(request_id, status, body)] = transport.answers()
        assert (request_id, status, body["error"]) == (1, 400, "invalid_request")
    asyncio.run(scenario())


def test_forbidden_round_trips_through_json() -> None:
    error = error_from_json(403, json.loads(json.dumps(Forbidden("no").to_json())))
    assert isinstance(error, Forbidden) and error.http_status == 403 and error.message == "no"
