"""HTTP/JSON client API: what a request gets, whatever server library parses it.

``respond(service, method, path, authorization, read_body)`` serves each op of
``protocol.OPS`` at its method and path (a GET route answers HEAD too): look the route up,
check the token and its role, read the JSON body, call ``KVService.call``.  The node's front
end (``http_front.py``, uvicorn's httptools protocol) calls it; so do the aiohttp adapters below
(``create_runner``: aiohttp's low-level server; ``create_app``: a ``web.Application``), kept for
a node still set up with aiohttp.

Every request but ``GET /health`` needs ``Authorization: Bearer <client token>`` whose role
allows the op (deny by default).  Every answer is JSON with a ``header`` (answering node, its
applied index, the leader, the revision); errors are ``{"error": code, "message": ...}`` with a
4xx/5xx status, never a traceback.  The connection limits (header deadline, idle timeout,
caps, TLS) are ``http_guard``'s and ``client_ports``'.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from consensus_store import fast_json
from consensus_store.config import ClientToken
from consensus_store.errors import (AuthError, ConsensusStoreError, Forbidden, InvalidRequest,
                                    NotFound, PayloadTooLarge)
from consensus_store.protocol import HEALTH_ROUTE, OP_BY_ROUTE, OPS_ALLOWED

if TYPE_CHECKING:
    from consensus_store.node.service import KVService

log = logging.getLogger("consensus_store.api")

# Each path's methods, for 405 answers (a GET route answers HEAD too, as aiohttp's router did).
_METHODS: dict[str, set[str]] = {}
for _method, _path in (*OP_BY_ROUTE, HEALTH_ROUTE):
    _METHODS.setdefault(_path, set()).update({_method, "HEAD"} if _method == "GET" else {_method})
_JSON = "application/json"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, whatever server library sends it."""
    status: int
    body: bytes                  # JSON
    allow: str | None = None     # a 405's methods (its Allow header)
    close: bool = False          # close the connection after it (the body was not all read)


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
        caller = _check_token(service, authorization)       # before 404/405, as always
        if op is None:
            return _no_route(service, method, path)
        if op.name not in OPS_ALLOWED[caller.role]:
            raise Forbidden(forbidden_message(op.name, caller))
        body = decode_body(await read_body()) if op.has_body else {}
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


def _check_token(service: "KVService", authorization: str | bytes | None) -> ClientToken:
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


# ---- aiohttp ---------------------------------------------------------------------------------
def create_server(service: "KVService") -> web.Server:
    """aiohttp's low-level server answering every op of the table; call it for each
    connection's ``RequestHandler`` (``http_guard.GuardedHttp`` wraps one)."""
    limits = service.config.limits
    loop = asyncio.get_running_loop()
    _quiet_parse_errors()

    def request(message: Any, payload: Any, protocol: Any, writer: Any,
                task: "asyncio.Task[None]") -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, loop,
                               client_max_size=limits.max_request_bytes)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return await aiohttp_answer(service, request)

    # keepalive_timeout: an idle connection (or one that never completes a request) is closed
    # this long after it opened or after its last answer; the header deadline is http_guard's
    return web.Server(handle, request_factory=request, access_log=None,
                      keepalive_timeout=limits.idle_timeout_s)


def create_runner(service: "KVService") -> web.ServerRunner:
    """The runner a node sets up: ``runner.server`` makes each connection's handler."""
    return web.ServerRunner(create_server(service), handle_signals=False)


def create_app(service: "KVService") -> web.Application:
    """The same answers through aiohttp's ``web.Application`` (one catch-all route), for a
    node still set up with ``web.AppRunner``; ``create_runner`` costs less per request."""
    limits = service.config.limits
    _quiet_parse_errors()
    app = web.Application(client_max_size=limits.max_request_bytes,
                          handler_args={"keepalive_timeout": limits.idle_timeout_s})

    async def handle(request: web.Request) -> web.StreamResponse:
        return await aiohttp_answer(service, request)

    app.router.add_route("*", "/{path:.*}", handle)
    return app


async def aiohttp_answer(service: "KVService", request: web.BaseRequest) -> web.Response:
    async def read_body() -> bytes:
        try:
            if request.content.is_eof():     # the whole body came with the head (usually)
                return await request.read()
            seconds = service.config.limits.body_timeout_s
            try:
                async with asyncio.timeout(seconds):
                    return await request.read()
            except TimeoutError:
                raise body_timeout(seconds) from None
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge("request body is larger than the node accepts") from None

    answer = await respond(service, request.method, request.path,
                           request.headers.get("Authorization"), read_body)
    response = web.Response(body=answer.body, status=answer.status, content_type=_JSON)
    if answer.allow is not None:
        response.headers["Allow"] = answer.allow
    return response


class _ParseErrorFilter(logging.Filter):
    """aiohttp logs a traceback at ERROR for each request it cannot parse (a malformed header
    line...), after answering 400 itself: a log flood anyone can cause.  One debug line, as
    aiohttp does for a bad method."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.msg, record.args = "%s (%s): %s", (record.getMessage(), type(error).__name__,
                                                  str(error.message).splitlines()[0])
        record.levelno, record.levelname, record.exc_info = logging.DEBUG, "DEBUG", None
        return True


_PARSE_ERROR_FILTER = _ParseErrorFilter()


def _quiet_parse_errors() -> None:
    logging.getLogger("aiohttp.server").addFilter(_PARSE_ERROR_FILTER)   # once: a set-like add
