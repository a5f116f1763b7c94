"""``GET /v1/watch/stream``: a watch as one long HTTP answer of JSON lines (chunked).

    curl -N -H "Authorization: Bearer $TOKEN" \\
        'http://127.0.0.1:7201/v1/watch/stream?prefix=config/&start_revision=1'

Query: ``prefix`` (default all keys), ``start_revision`` (inclusive; default: after what this
node has applied now), ``prev_kv`` (``true``: events carry the previous record),
``heartbeat`` (seconds between heartbeats, default 5).  Each line is one event as the long-poll
op ``watch`` gives it, or ``{"heartbeat": true, "revision": R}`` (everything up to R was sent:
resume from R + 1), the first line being one; a stream whose history is compacted away ends
with ``{"error": "compacted", "floor": F, ...}``.  Refusals come before the stream, as JSON
with their status: 401/403 (token), 400 (query), 410 (``start_revision`` compacted), 503 (the
node's watcher cap, ``WatchHub.max_watchers``).

Bounded: the stream shares the hub's one pass per prefix; it writes at most
``STREAM_EVENTS_PER_SEND`` events (completed to the end of their revision) at a time, then
waits for its next turn (``WatchHub.turn``: each loop pass runs a bounded share of the
watchers, so Raft and requests are served in every pass); a reader that does not take a
send within ``SEND_TIMEOUT_S`` is cut off (the connection is reset: it resumes from its last
heartbeat or event revision), so a stalled watcher holds a socket buffer, not a growing queue.  A
client that left is noticed at the next heartbeat.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import parse_qs

from consensus_store import fast_json
from consensus_store.errors import Compacted, ConsensusStoreError, Forbidden, InvalidRequest
from consensus_store.node.api import check_token, forbidden_message
from consensus_store.node.watch import without_prev
from consensus_store.protocol import OPS_ALLOWED

if TYPE_CHECKING:
    from consensus_store.node.service import KVService

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

WATCH_STREAM_PATH = "/v1/watch/stream"
HEARTBEAT_S = 5.0
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 0.05, 60.0
SEND_TIMEOUT_S = 10.0
STREAM_EVENTS_PER_SEND = 64   # then the next send: one stream's unsent bytes stay small
_NDJSON = (b"content-type", b"application/x-ndjson")
_ENCODED_CACHE = 8192         # events encoded once for every stream that sends them
_encoded: dict[tuple[int, bool], tuple[dict[str, Any], bytes]] = {}


def encode_events(events: list[dict[str, Any]], prev_kv: bool) -> bytes:
    """The lines of ``events``; each event is encoded once however many streams send it
    (the cache keeps the event alive, so its id is not reused while cached)."""
    lines = []
    for event in events:
        key = (id(event), prev_kv)
        cached = _encoded.get(key)
        if cached is None:
            body = event if prev_kv or "prev_kv" not in event else without_prev([event])[0]
            if len(_encoded) >= _ENCODED_CACHE:
                _encoded.clear()
            cached = _encoded[key] = (event, fast_json.encode(body) + b"\n")
        lines.append(cached[1])
    return b"".join(lines)


class StreamQuery:
    def __init__(self, query_string: bytes, applied_index: int) -> None:
        try:
            query = parse_qs(query_string.decode("ascii"), keep_blank_values=True,
                             strict_parsing=False, max_num_fields=16)
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequest("the query string is not valid") from None
        unknown = set(query) - {"prefix", "start_revision", "prev_kv", "heartbeat"}
        if unknown:
            raise InvalidRequest(f"unknown query parameter {sorted(unknown)[0]!r:.40}")
        self.prefix = query.get("prefix", [""])[-1]
        start = query.get("start_revision", [None])[-1]
        if start is None:
            self.after = applied_index
        elif start.isdigit() and 0 < int(start) < 1 << 63:
            self.after = int(start) - 1
        else:
            raise InvalidRequest("'start_revision' must be a positive integer")
        prev = query.get("prev_kv", ["false"])[-1]
        if prev not in ("true", "false", "1", "0"):
            raise InvalidRequest("'prev_kv' must be true or false")
        self.prev_kv = prev in ("true", "1")
        try:
            self.heartbeat = float(query.get("heartbeat", [HEARTBEAT_S])[-1])
        except ValueError:
            self.heartbeat = -1.0
        if not MIN_HEARTBEAT_S <= self.heartbeat <= MAX_HEARTBEAT_S:
            raise InvalidRequest(f"'heartbeat' must be a number of seconds in "
                                 f"[{MIN_HEARTBEAT_S:g}, {MAX_HEARTBEAT_S:g}]")


async def serve_watch_stream(service: "KVService", scope: dict[str, Any], receive: Receive,
                             send: Send) -> None:
    """Answer one ``GET /v1/watch/stream`` (any other method: 405)."""
    hub = service.watches
    authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
    try:
        caller = check_token(service, authorization)
        if scope["method"] != "GET":
            await _refuse(service, send, 405, {"error": "method_not_allowed",
                                               "message": "use GET"}, allow=b"GET")
            return
        if "watch" not in OPS_ALLOWED[caller.role]:
            raise Forbidden(forbidden_message("watch", caller))
        query = StreamQuery(scope.get("query_string", b""), service.engine.applied_index)
        attached = hub.attach()
    except ConsensusStoreError as exc:
        await _refuse(service, send, exc.http_status, exc.to_json())
        return
    with attached:
        try:   # a compacted start is refused with 410 before the stream begins
            events, after = await hub.watch_through(query.prefix, query.after, 0)
        except Compacted as exc:
            await _refuse(service, send, exc.http_status, exc.to_json())
            return
        await receive()                  # the (empty) body of the GET
        left = asyncio.ensure_future(receive())   # completes when the client goes
        try:
            await _stream(service, query, send, left, events, after)
        except asyncio.CancelledError:
            await _end_on_stop(send)      # the node stops (HttpFront.close cancels its tasks)
        finally:
            left.cancel()


async def _end_on_stop(send: Send) -> None:
    """End the answer (the client resumes elsewhere) instead of leaving uvicorn a cancelled
    task, which it logs with a traceback: one per stream, thousands at a stop."""
    try:
        if _may_wait(send):
            await _cut_off(send)
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except (Exception, asyncio.CancelledError):  # already gone: nothing to end
        pass


async def _stream(service: "KVService", query: StreamQuery, send: Send,
                  left: asyncio.Future, events: list[dict[str, Any]], after: int) -> None:
    hub = service.watches
    await send({"type": "http.response.start", "status": 200, "headers": [_NDJSON]})
    chunk = _heartbeat(query.after) + encode_events(events, query.prev_kv)
    started = time.perf_counter()
    while not left.done():
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        if not _may_wait(send):
            await send(message)       # the usual case: no timer, no task
            hub.charge(time.perf_counter() - started)
        else:
            try:
                await asyncio.wait_for(send(message), SEND_TIMEOUT_S)
            except asyncio.TimeoutError:
                await _cut_off(send)
                return
        if after < hub.latest:
            await hub.turn()          # more to look at: after the other watchers' turns
        try:
            events, after = await hub.watch_through(query.prefix, after, query.heartbeat,
                                                    STREAM_EVENTS_PER_SEND)
        except Compacted as exc:
            body = fast_json.encode(exc.to_json()) + b"\n"
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        started = time.perf_counter()
        chunk = encode_events(events, query.prev_kv) if events else _heartbeat(after)
    # the client left: nothing more to send to anyone


def _may_wait(send: Send) -> bool:
    """Would ``send`` wait for the reader?  (uvicorn's cycle waits only while its writes are
    paused; any other server: assume it may.)"""
    flow = getattr(getattr(send, "__self__", None), "flow", None)
    return getattr(flow, "write_paused", True) is not False


def _heartbeat(revision: int) -> bytes:
    return b'{"heartbeat":true,"revision":%d}\n' % revision


async def _cut_off(send: Send) -> None:
    """Abort a connection whose reader stopped reading (uvicorn's request cycle is ``send``'s
    owner; it then sees the disconnect and logs nothing)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    while transport is not None and not hasattr(transport, "abort"):
        transport = getattr(transport, "transport", None)   # http_guard's write wrapper
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:      # a reset, not a close: the kernel drops the unsent bytes too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await asyncio.sleep(0)          # let the connection notice it is lost


async def _refuse(service: "KVService", send: Send, status: int, body: dict[str, Any],
                  allow: bytes | None = None) -> None:
    body["header"] = service.header()
    data = fast_json.encode(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    if allow is not None:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
