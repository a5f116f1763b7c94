"""HTTP/JSON client API: what a request gets, whatever server library parses it.

``respond(service, method, path, authorization, read_body)`` serves each op of
``protocol.OPS`` at its method and path (a GET route answers HEAD too): look the route up,
check the token and its role, read the JSON body, call ``KVService.call``.  The node's front
end (``http_front.py``, uvicorn's httptools protocol) calls it and sends the ``Answer``.

Every request but ``GET /health`` needs ``Authorization: Bearer <client token>`` whose role
allows the op (deny by default).  Every answer is JSON with a ``header`` (answering node, its
applied index, the leader, the revision); errors are ``{"error": code, "message": ...}`` with a
4xx/5xx status, never a traceback.  The connection limits (header deadline, idle timeout,
caps, TLS) are ``http_front``'s, ``http_guard``'s and ``client_ports``'.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

from consensus_store import fast_json
from consensus_store.config import ClientToken
from consensus_store.errors import (AuthError, ConsensusStoreError, Forbidden, InvalidRequest,
                                    NotFound, PayloadTooLarge)
from consensus_store.node import snapshot_export
from consensus_store.protocol import HEALTH_ROUTE, OP_BY_ROUTE, OPS_ALLOWED

if TYPE_CHECKING:
    from consensus_store.node.service import KVService

log = logging.getLogger("consensus_store.api")

# Each path's methods, for 405 answers (a GET route answers HEAD too).
_METHODS: dict[str, set[str]] = {}
for _method, _path in (*OP_BY_ROUTE, HEALTH_ROUTE):
    _METHODS.setdefault(_path, set()).update({_method, "HEAD"} if _method == "GET" else {_method})


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, whatever server library sends it."""
    status: int
    body: bytes                  # JSON
    allow: str | None = None     # a 405's methods (its Allow header)
    close: bool = False          # close the connection after it (the body was not all read)
    stream: AsyncIterator[bytes] | None = None    # sent instead of ``body`` (the snapshot)
    content_type: bytes = b"application/json"     # /metrics: Prometheus' text format


class BodyTooLarge(PayloadTooLarge):
    """The request body is over ``limits.max_request_bytes`` (the rest of it is not read)."""


class BodyTimeout(InvalidRequest):
    """The request body did not arrive in time (the connection is out of step: closed)."""


BodyReader = Callable[[], Awaitable[bytes]]


async def respond(service: "KVService", method: str, path: str,
                  authorization: str | bytes | None, read_body: BodyReader) -> Answer:
    """The answer to one request, from its method, path, Authorization header and body; every
    error becomes a JSON answer."""
    try:
        op = OP_BY_ROUTE.get((method, path))
        if op is None and method == "HEAD":
            op = OP_BY_ROUTE.get(("GET", path))
        if op is None and path == HEALTH_ROUTE[1] and method in ("GET", "HEAD"):
            return _answer(service, {"ok": True})
        caller = check_token(service, authorization)        # before 404/405, as always
        if op is None:
            return _no_route(service, method, path)
        if op.name not in OPS_ALLOWED[caller.role]:
            raise Forbidden(forbidden_message(op.name, caller))
        body = decode_body(await read_body()) if op.has_body else {}
        if op.name == "snapshot":       # a backup file, streamed (snapshot_export.py)
            stream = await snapshot_export.open_stream(service, body)
            return Answer(200, b"", stream=stream.chunks())
        return _answer(service, await service.call(op.name, body, caller))
    except (BodyTooLarge, BodyTimeout) as exc:
        return _answer(service, exc.to_json(), exc.http_status, close=True)
    except ConsensusStoreError as exc:
        return _answer(service, exc.to_json(), exc.http_status)
    except Exception as exc:  # noqa: BLE001 - a bug must not become a traceback for the client
        log.exception("unhandled error on %s %s", method, path)
        return _answer(service, {"error": "internal", "message": type(exc).__name__}, 500)


def _answer(service: "KVService", body: dict[str, Any], status: int = 200,
            allow: str | None = None, close: bool = False) -> Answer:
    body["header"] = service.header()
    return Answer(status, fast_json.encode(body), allow, close)


def _no_route(service: "KVService", method: str, path: str) -> Answer:
    methods = _METHODS.get(path)
    if methods is None:
        error = NotFound(f"no route {method} {path}")
        return _answer(service, error.to_json(), error.http_status)
    body = {"error": "method_not_allowed",
            "message": f"{method} not allowed here; use {', '.join(sorted(methods))}"}
    return _answer(service, body, 405, allow=",".join(sorted(methods)))


def check_token(service: "KVService", authorization: str | bytes | None) -> ClientToken:
    """The caller of a request (AuthError without a known token); also for routes outside
    the op table (the watch stream, /metrics)."""
    raw = b""      # a token is printable ASCII: anything else cannot match
    if isinstance(authorization, bytes):
        supplied = authorization.removeprefix(b"Bearer ")
        raw = supplied if supplied.isascii() else b""
    elif authorization is not None:
        try:
            raw = authorization.removeprefix("Bearer ").encode("ascii")
        except UnicodeEncodeError:
            pass
    caller = service.tokens.lookup(raw)
    if caller is None:
        raise AuthError("missing or wrong client token (Authorization: Bearer <token>)")
    return caller


def forbidden_message(op: str | None, caller: ClientToken) -> str:
    return f"token {caller.name!r} (role {caller.role.value}) may not call {op or 'this route'}"


def decode_body(raw: bytes) -> dict[str, Any]:
    try:
        body = fast_json.decode(raw or b"{}")
    except ValueError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    return body


def body_timeout(seconds: float) -> BodyTimeout:
    return BodyTimeout(f"request body not received within {seconds:g}s")
