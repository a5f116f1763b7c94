"""HTTP/JSON client API: aiohttp's low-level server, routed from the op table.

Each op of ``protocol.OPS`` is served at its method and path (a GET route answers HEAD too)
by one handler: look the route up, check the token and its role, read the JSON body, call
``KVService.call``.  No router, no middleware chain, no ``web.Application``: aiohttp's
low-level ``web.Server`` parses HTTP (and answers 400 for what it cannot parse) and this
module does the rest, which took ~20 % less CPU per request here (tools/http_front_cost.py).

Every request but ``GET /health`` needs ``Authorization: Bearer <client token>`` whose role
allows the op (``protocol.OPS``; deny by default).  Every answer is JSON with a ``header``
(answering node, its applied index, the leader, the revision); errors are
``{"error": code, "message": ...}`` with a 4xx/5xx status, never a traceback.  The connection
limits (header deadline, idle timeout, caps, TLS) are ``http_guard``'s and ``client_ports``'.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

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


def create_server(service: "KVService") -> web.Server:
    """The low-level server answering every op of the table; call it for each connection's
    ``RequestHandler`` (``http_guard.GuardedHttp`` wraps one)."""
    limits = service.config.limits
    loop = asyncio.get_running_loop()
    _quiet_parse_errors()

    def request(message: Any, payload: Any, protocol: Any, writer: Any,
                task: "asyncio.Task[None]") -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, loop,
                               client_max_size=limits.max_request_bytes)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return await answer(service, request)

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
        return await answer(service, request)

    app.router.add_route("*", "/{path:.*}", handle)
    return app


async def answer(service: "KVService", request: web.BaseRequest) -> web.Response:
    """The answer to one request; every error becomes a JSON answer."""
    method, path = request.method, request.path
    try:
        op = OP_BY_ROUTE.get((method, path))
        if op is None and method == "HEAD":
            op = OP_BY_ROUTE.get(("GET", path))
        if op is None and path == HEALTH_ROUTE[1] and method in ("GET", "HEAD"):
            return _reply(service, {"ok": True})
        caller = _check_token(service, request)       # before 404/405, as always
        if op is None:
            return _no_route(service, method, path)
        if op.name not in OPS_ALLOWED[caller.role]:
            raise Forbidden(forbidden_message(op.name, caller))
        body = await _body(service, request) if op.has_body else {}
        return _reply(service, await service.call(op.name, body, caller))
    except ConsensusStoreError as exc:
        return _reply(service, exc.to_json(), exc.http_status)
    except web.HTTPRequestEntityTooLarge:
        error = PayloadTooLarge("request body is larger than the node accepts")
        return _reply(service, error.to_json(), error.http_status)
    except Exception as exc:  # noqa: BLE001 - a bug must not become a traceback for the client
        log.exception("unhandled error on %s %s", method, path)
        return _reply(service, {"error": "internal", "message": type(exc).__name__}, 500)


def _reply(service: "KVService", body: dict[str, Any], status: int = 200) -> web.Response:
    body["header"] = service.header()
    return web.Response(body=fast_json.encode(body), status=status, content_type=_JSON)


def _no_route(service: "KVService", method: str, path: str) -> web.Response:
    methods = _METHODS.get(path)
    if methods is None:
        error = NotFound(f"no route {method} {path}")
        return _reply(service, error.to_json(), error.http_status)
    body = {"error": "method_not_allowed",
            "message": f"{method} not allowed here; use {', '.join(sorted(methods))}"}
    response = _reply(service, body, 405)
    response.headers["Allow"] = ",".join(sorted(methods))
    return response


def _check_token(service: "KVService", request: web.BaseRequest) -> ClientToken:
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
    try:
        raw = supplied.encode("ascii")
    except UnicodeEncodeError:
        raw = b""      # a token is printable ASCII: anything else cannot match
    caller = service.tokens.lookup(raw)
    if caller is None:
        raise AuthError("missing or wrong client token (Authorization: Bearer <token>)")
    return caller


def forbidden_message(op: str | None, caller: ClientToken) -> str:
    return f"token {caller.name!r} (role {caller.role.value}) may not call {op or 'this route'}"


async def _body(service: "KVService", request: web.BaseRequest) -> dict[str, Any]:
    if request.content.is_eof():     # the whole body came with the head (the usual case)
        raw = await request.read()
    else:
        seconds = service.config.limits.body_timeout_s
        try:
            async with asyncio.timeout(seconds):
                raw = await request.read()
        except TimeoutError:
            raise InvalidRequest(f"request body not received within {seconds:g}s") from None
    try:
        body = fast_json.decode(raw or b"{}")
    except ValueError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    return body


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
