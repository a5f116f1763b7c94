"""The native protocol without a cluster: framing, request building and result parsing shared by
the sync and async APIs, the client's retry policy, the node's connection handler (fed bytes by
hand) and the client transports over socket pairs."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from consensus_store.api import AsyncKVApi, KVApi, resolve_level
from consensus_store.api.kv import cas_call, get_call, put_call
from consensus_store.client.core import MAX_SERVER_TIMEOUT_S, ClientCore, RetryPolicy
from consensus_store.client.native import _AsyncLink, _Link
from consensus_store.config import ClientToken, Limits, Role
from consensus_store.wire import (HEADER, FrameReader, FrameTooLarge, decode,
                                         encode_auth, encode_request, encode_response, frame,
                                         peek_request_id)
from consensus_store.errors import (CompareFailed, InvalidRequest, NotLeader, PayloadTooLarge,
                                    Timeout, Unavailable)
from consensus_store.models import KeyValue

SECRET = "s" * 20
KV = {"key": "k", "value": 1, "create_revision": 2, "mod_revision": 3, "version": 1}


def frames_of(data: bytes) -> list[Any]:
    reader = FrameReader()
    reader.feed(data)
    out = []
    while (payload := reader.next()) is not None:
        out.append(decode(payload))
    assert reader.buffered == 0
    return out


# ---- framing ----------------------------------------------------------------------------------
def test_request_frame_is_length_prefixed_json_with_id_first() -> None:
    data = encode_request(7, "put", {"key": "k", "value": {"a": [1, "é"]}})
    (length,) = HEADER.unpack_from(data)
    assert length == len(data) - 4
    assert data[4:].startswith(b'{"id":7,"op":"put"')
    assert json.loads(data[4:]) == {"id": 7, "op": "put", "key": "k", "value": {"a": [1, "é"]}}
    assert frames_of(encode_auth("tok")) == [{"id": 0, "op": "auth", "token": "tok"}]


def test_values_json_cannot_carry_are_rejected_before_sending() -> None:
    for value in (float("nan"), {1, 2}, object()):
        with pytest.raises(InvalidRequest):
            encode_request(1, "put", {"key": "k", "value": value})


def test_response_frame() -> None:
    data = encode_response(3, 200, {"kv": None, "header": {"node": "n1"}})
    assert frames_of(data) == [{"id": 3, "status": 200, "body": {"kv": None,
                                                                "header": {"node": "n1"}}}]
    assert frames_of(encode_response(None, 400, {"error": "x"}))[0]["id"] is None


def test_reader_reassembles_frames_split_anywhere() -> None:
    messages = [{"id": i, "op": "get", "key": "k" * (i * 37 % 300)} for i in range(200)]
    stream = b"".join(encode_request(m["id"], "get", {"key": m["key"]}) for m in messages)
    for chunk_size in (1, 3, 4, 5, 64, 1000, len(stream)):
        reader = FrameReader()
        got = []
        for start in range(0, len(stream), chunk_size):
            reader.feed(stream[start:start + chunk_size])
            while (payload := reader.next()) is not None:
                got.append(decode(payload))
        assert got == messages, chunk_size
        assert reader.buffered == 0


def test_reader_compacts_its_buffer_on_long_streams() -> None:
    reader = FrameReader()
    one = frame(b'{"id":1,"x":"' + b"y" * 5000 + b'"}')
    for _ in range(300):                 # never fully drained: a partial frame stays behind
        reader.feed(one + one[:10])
        assert reader.next() is not None
        reader.feed(one[10:])
        assert reader.next() is not None
    assert len(reader._buf) < 4 * len(one) + 256 * 1024


def test_oversized_frame_is_reported_with_the_request_id() -> None:
    reader = FrameReader(max_size=100)
    data = encode_request(42, "put", {"key": "k", "value": "v" * 500})
    reader.feed(data[:10])               # header known, id not yet: wait for more bytes
    assert reader.next() is None
    reader.feed(data[10:60])
    with pytest.raises(FrameTooLarge) as caught:
        reader.next()
    assert (caught.value.request_id, caught.value.limit) == (42, 100)
    assert caught.value.length == len(data) - 4

    reader = FrameReader(max_size=10)
    reader.feed(frame(b'{"op":"put","id":5,"value":"' + b"x" * 100 + b'"}'))
    with pytest.raises(FrameTooLarge) as caught:
        reader.next()
    assert caught.value.request_id is None


def test_peek_request_id() -> None:
    assert peek_request_id(b'{"id":12,"op"') == 12
    assert peek_request_id(b'{ "id" : 3 }') == 3
    assert peek_request_id(b'{"op":"put","id":1') is None
    assert peek_request_id(b'{"id":"7"') is None


# ---- request building / result parsing --------------------------------------------------------
def test_calls_build_bodies_and_parse_results() -> None:
    assert put_call("k", [1]).body == {"key": "k", "value": [1]}
    assert put_call("k", 1).parse({"kv": KV}) == KeyValue("k", 1, 2, 3, 1)
    assert get_call("k", "local").parse({"kv": None}) is None
    assert cas_call("k", 2, expect_mod_revision=0).body == {"key": "k", "value": 2,
                                                            "expect_mod_revision": 0}
    assert cas_call("k", 2, expect_value=None).body["expect_value"] is None
    with pytest.raises(InvalidRequest):
        cas_call("k", 2)
    with pytest.raises(CompareFailed) as caught:
        cas_call("k", 2, expect_value=1).parse({"succeeded": False, "kv": KV})
    assert caught.value.current == KeyValue("k", 1, 2, 3, 1)  # type: ignore[attr-defined]
    assert resolve_level(None, "session") == "session"
    with pytest.raises(InvalidRequest):
        resolve_level("eventual", "session")


class _Recorder:
    answers = {
        "put": {"kv": KV}, "get": {"kv": KV}, "delete": {"deleted": 3},
        "cas": {"succeeded": True, "kv": KV},
        "range": {"kvs": [KV], "count": 2},
        "txn": {"succeeded": False, "results": [], "header": {"revision": 9}},
    }

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], float | None]] = []

    def answer(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        self.sent.append((op, body, timeout))
        return self.answers[op]


class SyncApi(KVApi, _Recorder):
    def request(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        return self.answer(op, body, timeout)


class AsyncApi(AsyncKVApi, _Recorder):
    async def request(self, op: str, body: dict[str, Any],
                      timeout: float | None) -> dict[str, Any]:
        await asyncio.sleep(0)
        return self.answer(op, body, timeout)


def test_sync_and_async_apis_send_and_return_the_same() -> None:
    def script(api: Any, call: Any) -> list[Any]:
        return [call(api.put("k", 1, timeout=2)), call(api.get("k", consistency="local")),
                call(api.delete("k")), call(api.delete_prefix("p/")),
                call(api.cas("k", 5, expect_value=1)), call(api.range("p/", limit=1)),
                call(api.txn([{"key": "k"}], [{"op": "get", "key": "k"}]))]

    sync_api, async_api = SyncApi(), AsyncApi()
    sync_results = script(sync_api, lambda value: value)

    async def run_async() -> list[Any]:
        return [await c for c in script(async_api, lambda coroutine: coroutine)]

    assert sync_results == asyncio.run(run_async())
    assert sync_api.sent == async_api.sent
    assert sync_results[2:4] == [True, 3]
    assert sync_results[5].more and sync_results[6].revision == 9
    assert sync_api.sent[1] == ("get", {"key": "k", "consistency": "local"}, None)


# ---- the client's retry policy ----------------------------------------------------------------
def test_writes_keep_their_ids_across_attempts_and_rotate_endpoints() -> None:
    core = ClientCore(["tcp://a:1", "http://b:2/"], retry=RetryPolicy(backoff_s=0.0))
    assert core.endpoints == ["tcp://a:1", "http://b:2"]
    first = core.attempts("put", {"key": "k", "value": 1}, 5.0)
    other = core.attempts("delete", {"key": "k"}, 5.0)
    a1 = first.next()
    assert a1 is not None and a1.endpoint == "tcp://a:1"
    assert a1.body["client_id"] == core.client_id and a1.body["done_below"] == 1
    request_id = a1.body["request_id"]
    assert first.failed(a1, Unavailable("down")) == 0.0
    a2 = first.next()
    assert a2 is not None and a2.endpoint == "http://b:2"
    assert a2.body["request_id"] == request_id           # same write, same id
    first.close()
    later = core.attempts("put", {"key": "k", "value": 2}, 5.0).next()
    assert later is not None and later.body["done_below"] == other.request_id
    assert core.attempts("get", {"key": "k", "consistency": "session"}, 1).body.get(
        "client_id") is None


def test_session_reads_carry_the_highest_index_seen() -> None:
    core = ClientCore(["http://a:1"])
    attempts = core.attempts("get", {"key": "k", "consistency": "session"}, 2.0)
    assert attempts.next().body["min_index"] == 0  # type: ignore[union-attr]
    core.decode("http://a:1", 200, {"kv": None, "header": {"applied_index": 17}})
    core.observe(3)
    assert attempts.next().body["min_index"] == 17  # type: ignore[union-attr]
    with pytest.raises(NotLeader):
        core.decode("x", 503, {"error": "not_leader", "header": {"applied_index": 20}})
    assert core.seen_index == 20
    with pytest.raises(Unavailable):
        core.decode("x", 502, None)


def test_attempts_stop_at_max_tries_and_deadline() -> None:
    core = ClientCore(["http://a:1"], retry=RetryPolicy(max_tries=3))
    attempts = core.attempts("get", {"key": "k"}, 1000.0)
    sent = []
    while (attempt := attempts.next()) is not None:
        sent.append(attempt.body["timeout"])
        attempts.failed(attempt, Unavailable("no"))
    assert len(sent) == 3 and max(sent) == MAX_SERVER_TIMEOUT_S   # node rejects > 300 s
    error = attempts.give_up()
    assert isinstance(error, Timeout) and error.details["last"] == "unavailable"
    expired = core.attempts("get", {"key": "k"}, 0.0)
    assert expired.next() is None


def test_unknown_endpoint_schemes_are_rejected() -> None:
    for bad in ([], ["127.0.0.1:7201"], ["udp://h:1"]):
        with pytest.raises(InvalidRequest):
            ClientCore(bad)


# ---- the node's connection handler, fed by hand -------------------------------------------------
class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.data += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def answers(self) -> list[dict[str, Any]]:
        got = frames_of(bytes(self.data))
        self.data.clear()
        return got


class FakeService:
    """What the native server needs of KVService; writes wait until the test releases them."""

    def __init__(self) -> None:
        limits = Limits(max_value_bytes=1000)
        self.config = SimpleNamespace(limits=limits, native_address=None)
        caller = ClientToken("client", SECRET, Role.ADMIN)
        self.tokens = SimpleNamespace(
            lookup=lambda raw: caller if raw == SECRET.encode() else None, generation=1)
        # try_write_in_batch: False sends writes down the task path (see the batch test)
        self.engine = SimpleNamespace(applied_index=5, try_write_in_batch=lambda *a: False)
        self.store: dict[str, Any] = {}
        self.gates: dict[str, asyncio.Future] = {}
        self.waited_reads = 0

    def header(self) -> dict[str, Any]:
        return {"node": "n1", "applied_index": self.engine.applied_index}

    def timeout_s(self, timeout: float | None) -> float:
        return 10.0 if timeout is None else timeout

    def command_for(self, op: str, body: dict[str, Any], *, caller: Any = None) -> dict[str, Any]:
        if op != "put":
            raise InvalidRequest(f"fake has no {op}")
        return {"op": op, **body}

    async def write_command(self, command: dict[str, Any], timeout: float,
                            alone: bool = False) -> dict[str, Any]:
        self.alone = alone
        gate = self.gates[command["key"]] = asyncio.get_running_loop().create_future()
        await gate
        self.store[command["key"]] = command["value"]
        return {"kv": {"key": command["key"], "value": command["value"]}}

    async def get(self, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        min_index = body.get("min_index", 0)
        if min_index > self.engine.applied_index or body.get("consistency") == "linearizable":
            self.waited_reads += 1
            await asyncio.sleep(0)
        if "key" not in body:
            raise InvalidRequest("'key' must be a non-empty string")
        return {"kv": self.store.get(body["key"])}

    async def range(self, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        return {"kvs": [], "count": len(self.store)}

    async def status(self) -> dict[str, Any]:
        return {"id": "n1"}

    def call(self, op: str, body: dict[str, Any], caller: Any = None,
             timeout: float | None = None) -> Any:
        """``KVService.call``: the coroutine answering ``op``."""
        from consensus_store.node.validate import request_timeout
        timeout = request_timeout(body) if timeout is None else timeout
        if op == "get":
            return self.get(body, timeout)
        if op == "range":
            return self.range(body, timeout)
        if op == "status":
            return self.status()
        raise InvalidRequest(f"fake has no {op}")


async def _connection(service: FakeService | None = None) -> tuple[Any, FakeTransport,
                                                                    FakeService]:
    from consensus_store.node.native import NativeServer, _Connection
    service = service or FakeService()
    server = NativeServer(service)  # type: ignore[arg-type]
    connection = _Connection(server)
    transport = FakeTransport()
    connection.connection_made(transport)
    return connection, transport, service


def _send(connection: Any, request_id: Any, op: str | None = None, **body: Any) -> None:
    message: dict[str, Any] = {"id": request_id}
    if op is not None:
        message["op"] = op
    message.update(body)
    connection.data_received(frame(json.dumps(message).encode()))


def test_node_requires_auth_first() -> None:
    async def scenario() -> None:
        connection, transport, _ = await _connection()
        _send(connection, 1, "get", key="k")
        [answer] = transport.answers()
        assert (answer["id"], answer["status"], answer["body"]["error"]) == (1, 401,
                                                                             "unauthorized")
        assert transport.closed

        connection, transport, _ = await _connection()
        _send(connection, 0, "auth", token="wrong" * 5)
        assert transport.answers()[0]["status"] == 401 and transport.closed

        connection, transport, _ = await _connection()
        connection.data_received(encode_auth(SECRET) + encode_request(1, "get", {"key": "k"}))
        auth, get = transport.answers()
        assert (auth["id"], auth["status"], auth["body"]["ok"]) == (0, 200, True)
        assert (get["id"], get["status"], get["body"]) == (1, 200, {"kv": None, "header": {
            "node": "n1", "applied_index": 5}})
        assert not transport.closed
    asyncio.run(scenario())


def test_bad_frames_get_400_and_the_connection_stays_up() -> None:
    async def scenario() -> None:
        connection, transport, _ = await _connection()
        connection.data_received(encode_auth(SECRET))
        transport.answers()
        connection.data_received(frame(b"not json") + frame(b"\xff\xfe") + frame(b"[1,2]")
                                 + frame(b'{"op":"get"}') + frame(b'{"id":"x","op":"get"}'))
        _send(connection, 4)                          # no op
        _send(connection, 5, "frobnicate")
        _send(connection, 6, "get")                   # no key: the service's own error
        _send(connection, 7, "get", key="k", timeout=-1)
        connection.data_received(frame(b'{"id":8,"op":"put","value":' + b"[" * 20_000
                                       + b"]" * 20_000 + b"}"))
        answers = transport.answers()
        assert [(a["id"], a["status"]) for a in answers] == [
            (None, 400), (None, 400), (None, 400), (None, 400), (None, 400),
            (4, 400), (5, 400), (6, 400), (7, 400), (None, 400)]
        assert all(a["body"]["error"] == "invalid_request" and a["body"]["message"]
                   and "header" in a["body"] for a in answers)
        assert "unknown op" in answers[6]["body"]["message"]
        _send(connection, 9, "get", key="k")
        assert transport.answers()[0]["status"] == 200 and not transport.closed
    asyncio.run(scenario())


def test_answers_go_out_as_requests_complete_in_any_order() -> None:
    async def scenario() -> None:
        connection, transport, service = await _connection()
        connection.data_received(encode_auth(SECRET))
        transport.answers()
        connection.data_received(encode_request(1, "put", {"key": "a", "value": 1})
                                 + encode_request(2, "put", {"key": "b", "value": 2})
                                 + encode_request(3, "get", {"key": "a"}))
        [get] = transport.answers()                  # the read did not wait for the writes
        assert (get["id"], get["body"]["kv"]) == (3, None)
        assert len(connection.tasks) == 2
        await asyncio.sleep(0)
        service.gates["b"].set_result(None)
        await asyncio.sleep(0.01)
        assert [a["id"] for a in transport.answers()] == [2]
        service.gates["a"].set_result(None)
        await asyncio.sleep(0.01)
        [put_a] = transport.answers()
        assert (put_a["id"], put_a["body"]["kv"]) == (1, {"key": "a", "value": 1})
        assert not connection.tasks
    asyncio.run(scenario())


def test_batched_writes_are_answered_from_the_batch_without_a_task() -> None:
    async def scenario() -> None:
        from consensus_store.errors import error_from_json
        joined: list[Any] = []

        def applied_answer(index: int, outcome: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            if "error" in outcome:
                raise error_from_json(400, outcome)
            return index, dict(outcome)

        service = FakeService()
        service.engine = SimpleNamespace(
            applied_index=5, applied_answer=applied_answer,
            try_write_in_batch=lambda command, timeout, deliver: joined.append(deliver) or True)
        connection, transport, _ = await _connection(service)
        connection.data_received(encode_auth(SECRET))
        transport.answers()
        for request_id, key in ((1, "a"), (2, "b"), (3, "c")):
            connection.data_received(encode_request(request_id, "put", {"key": key, "value": 1}))
        assert len(joined) == 3 and not connection.tasks and connection.batched == 3
        joined[1]((7, {"kv": {"key": "b"}}))
        joined[0]((7, {"error": "compare_failed", "message": "no"}))
        await asyncio.sleep(0)
        answers = {a["id"]: a for a in transport.answers()}
        assert answers[2]["status"] == 200 and answers[2]["body"]["kv"] == {"key": "b"}
        assert answers[1]["status"] == 409
        joined[2](None)                              # the batch did not confirm it: alone
        assert len(connection.tasks) == 1 and connection.batched == 0
        await asyncio.sleep(0)
        assert service.alone is True
        service.gates["c"].set_result(None)
        await asyncio.sleep(0.01)
        [alone] = transport.answers()
        assert (alone["id"], alone["status"]) == (3, 200)
    asyncio.run(scenario())


def test_reads_that_need_no_wait_are_answered_inline_without_a_task() -> None:
    async def scenario() -> None:
        connection, transport, service = await _connection()
        connection.data_received(encode_auth(SECRET))
        transport.answers()
        service.store["k"] = 1
        for request_id, body in enumerate([{"consistency": "local"},
                                           {"consistency": "session", "min_index": 5},
                                           {}], start=1):
            _send(connection, request_id, "get", key="k", **body)
            assert not connection.tasks
            assert transport.answers()[0]["body"]["kv"] == 1
        _send(connection, 9, "get", key="k", consistency="session", min_index=6)
        _send(connection, 10, "get", key="k", consistency="linearizable")
        assert len(connection.tasks) == 2 and transport.answers() == []
        await asyncio.sleep(0.01)
        assert sorted(a["id"] for a in transport.answers()) == [9, 10]
        assert service.waited_reads == 2 and not connection.tasks
    asyncio.run(scenario())


def test_oversized_frame_gets_413_with_its_id_then_close() -> None:
    async def scenario() -> None:
        connection, transport, _ = await _connection()
        connection.data_received(encode_auth(SECRET))
        transport.answers()
        big = encode_request(11, "put", {"key": "k", "value": "x" * (70 * 1024 + 1000)})
        connection.data_received(encode_request(10, "get", {"key": "k"}) + big[:4096])
        get, error = transport.answers()
        assert get["id"] == 10
        assert (error["id"], error["status"], error["body"]["error"]) == (
            11, 413, "payload_too_large")
        assert transport.closed
        connection.data_received(big[4096:])          # the rest is ignored
        assert transport.answers() == []
    asyncio.run(scenario())


def test_client_gone_mid_request_drops_the_answer_quietly() -> None:
    async def scenario() -> None:
        connection, transport, service = await _connection()
        connection.data_received(encode_auth(SECRET))
        transport.answers()
        connection.data_received(encode_request(1, "put", {"key": "a", "value": 1}))
        await asyncio.sleep(0)
        connection.connection_lost(ConnectionResetError())
        service.gates["a"].set_result(None)
        await asyncio.sleep(0.01)
        assert service.store == {"a": 1}              # the write still completed
        assert transport.data == bytearray() and not connection.tasks
    asyncio.run(scenario())


def test_many_requests_in_flight_pause_reading() -> None:
    from consensus_store.node import native

    async def scenario() -> None:
        connection, transport, service = await _connection()
        connection.data_received(encode_auth(SECRET))
        transport.answers()
        limit = native.MAX_IN_FLIGHT
        burst = b"".join(encode_request(i, "put", {"key": f"k{i}", "value": i})
                         for i in range(1, limit + 11))
        connection.data_received(burst)
        assert len(connection.tasks) == limit and not transport.reading
        for _ in range(1000):                         # complete writes as they arrive
            await asyncio.sleep(0)
            for gate in list(service.gates.values()):
                if not gate.done():
                    gate.set_result(None)
            if len(service.store) == limit + 10:
                break
        await asyncio.sleep(0.01)
        assert transport.reading and len(service.store) == limit + 10
        assert len(transport.answers()) == limit + 10 and not connection.tasks
    asyncio.run(scenario())


# ---- client transports over socket pairs ------------------------------------------------------
def _serve_reversed(sock: socket.socket, count: int) -> None:
    """Read ``count`` requests, answer them in reverse order."""
    reader = FrameReader()
    requests: list[dict[str, Any]] = []
    while len(requests) < count:
        data = sock.recv(65536)
        if not data:
            return
        reader.feed(data)
        while (payload := reader.next()) is not None:
            requests.append(decode(payload))
    sock.sendall(b"".join(encode_response(r["id"], 200, {"echo": r["key"]})
                          for r in reversed(requests)))


def test_sync_link_pipelines_and_matches_answers_by_id() -> None:
    client_sock, server_sock = socket.socketpair()
    link = _Link("tcp://test:1", client_sock, FrameReader())
    server = threading.Thread(target=_serve_reversed, args=(server_sock, 16))
    server.start()
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        results[i] = link.call("get", {"key": f"k{i}"}, 5.0)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    server.join(10)
    assert results == {i: (200, {"echo": f"k{i}"}) for i in range(16)}

    with pytest.raises(Timeout):                       # no answer: per-call timeout
        link.call("get", {"key": "late"}, 0.01)
    server_sock.close()                                # the node goes away
    deadline = time.monotonic() + 5
    while link.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not link.alive
    with pytest.raises(Unavailable):
        link.call("get", {"key": "k"}, 1.0)
    link.close()


def test_sync_link_fails_callers_in_flight_when_the_connection_drops() -> None:
    client_sock, server_sock = socket.socketpair()
    link = _Link("tcp://test:1", client_sock, FrameReader())
    errors: list[BaseException] = []

    def call() -> None:
        try:
            link.call("put", {"key": "k", "value": 1}, 30.0)
        except Unavailable as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    server_sock.recv(65536)                            # request arrived
    server_sock.close()
    thread.join(10)
    assert len(errors) == 1 and not link.alive


def test_async_link_pipelines_and_matches_answers_by_id() -> None:
    async def scenario() -> None:
        client_sock, server_sock = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=client_sock)
        link = _AsyncLink("tcp://test:1", reader, writer, FrameReader())
        server = threading.Thread(target=_serve_reversed, args=(server_sock, 32))
        server.start()
        results = await asyncio.gather(*(link.call("get", {"key": f"k{i}"}, 5.0)
                                         for i in range(32)))
        assert results == [(200, {"echo": f"k{i}"}) for i in range(32)]
        await asyncio.to_thread(server.join, 10)
        with pytest.raises(Timeout):
            await link.call("get", {"key": "late"}, 0.01)
        server_sock.close()
        for _ in range(200):
            if not link.alive:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(Unavailable):
            await link.call("get", {"key": "k"}, 1.0)
        await link.aclose()
    asyncio.run(scenario())


def test_payload_too_large_error_maps_to_its_type() -> None:
    core = ClientCore(["tcp://a:1"])
    with pytest.raises(PayloadTooLarge):
        core.decode("tcp://a:1", 413, {"error": "payload_too_large", "message": "big"})
