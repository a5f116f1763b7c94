"""HTTP/JSON client API (aiohttp): a thin layer over ``KVService``.

Every request but ``GET /health`` needs ``Authorization: Bearer <client token>`` whose role
allows the route (``protocol.REQUIRED_ROLE``, by route name; a route it does not list is
refused).  Every answer is JSON with a ``header`` (answering node, its applied index, the
leader, the revision); errors are ``{"error": code, "message": ...}`` with a 4xx/5xx status,
never a traceback.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from aiohttp.http_exceptions import HttpProcessingError

from consensus_store import fast_json
from consensus_store.config import ClientToken
from consensus_store.errors import (AuthError, ConsensusStoreError, Forbidden, InvalidRequest,
                                    NotFound, PayloadTooLarge)
from consensus_store.node.coordination_api import QUERIES
from consensus_store.protocol import (COORDINATION_WRITES, KV_WRITE_OPS, OPS_ALLOWED, PUBLIC_OPS,
                                      ROUTES)
from consensus_store.node.service import KVService

log = logging.getLogger("consensus_store.api")

SERVICE: web.AppKey[KVService] = web.AppKey("service", KVService)
CALLER: web.RequestKey[ClientToken] = web.RequestKey("caller", ClientToken)
"""The authenticated token of the request (handlers pass it to ``KVService`` as ``caller``)."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(service: KVService) -> web.Application:
    limits = service.config.limits
    # keepalive_timeout: an idle connection (or one that never completes a request) is closed
    # this long after it opened or after its last answer; the header deadline is http_guard's
    app = web.Application(client_max_size=limits.max_request_bytes, middlewares=[_guard],
                          handler_args={"keepalive_timeout": limits.idle_timeout_s})
    app[SERVICE] = service
    _quiet_parse_errors()
    # Each route is named by its op: the guard finds the role it needs by that name.
    app.router.add_get("/health", _health, name="health")
    handlers: dict[str, Handler] = {
        "status": _status, "get": _get, "range": _range, "watch": _watch,
        "session_open": _session_open, "session_keepalive": _session_keepalive,
        "session_close": _session_close, "sessions": _sessions, "digest": _digest,
    }
    handlers.update({op: _write_handler(op) for op in (*KV_WRITE_OPS, *COORDINATION_WRITES)})
    handlers.update({op: _query_handler(query) for op, query in QUERIES.items()})
    for op, handler in handlers.items():
        method, path = ROUTES[op]
        if method == "GET":
            app.router.add_get(path, handler, name=op)   # with HEAD, as before
        else:
            app.router.add_route(method, path, handler, name=op)
    return app


def _reply(request: web.Request, body: dict[str, Any], status: int = 200) -> web.Response:
    body["header"] = request.app[SERVICE].header()
    return web.Response(body=fast_json.encode(body), status=status,
                        content_type="application/json")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The token and role checks, then the handler; every error becomes a JSON answer (one
    middleware: each layer costs a coroutine per request)."""
    try:
        match = request.match_info
        if match.route.name not in PUBLIC_OPS:
            caller = _check_token(request)
            if match.http_exception is None:   # else the handler raises 404 or 405
                _check_role(match.route.name, caller)
            request[CALLER] = caller
        return await handler(request)
    except ConsensusStoreError as exc:
        return _reply(request, exc.to_json(), exc.http_status)
    except web.HTTPRequestEntityTooLarge:
        error = PayloadTooLarge("request body is larger than the node accepts")
        return _reply(request, error.to_json(), error.http_status)
    except web.HTTPNotFound:
        error = NotFound(f"no route {request.method} {request.path}")
        return _reply(request, error.to_json(), error.http_status)
    except web.HTTPMethodNotAllowed as exc:
        body = {"error": "method_not_allowed", "message": f"{request.method} not allowed here; "
                f"use {', '.join(sorted(exc.allowed_methods))}"}
        return _reply(request, body, 405)
    except web.HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug must not become a traceback for the client
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _reply(request, {"error": "internal", "message": type(exc).__name__}, 500)


def _check_token(request: web.Request) -> ClientToken:
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
    try:
        raw = supplied.encode("ascii")
    except UnicodeEncodeError:
        raw = b""      # a token is printable ASCII: anything else cannot match
    caller = request.app[SERVICE].tokens.lookup(raw)
    if caller is None:
        raise AuthError("missing or wrong client token (Authorization: Bearer <token>)")
    return caller


def _check_role(op: str | None, caller: ClientToken) -> None:
    """Deny by default: a route whose op the role table does not list is refused to all."""
    if op not in OPS_ALLOWED[caller.role]:
        raise Forbidden(forbidden_message(op, caller))


def forbidden_message(op: str | None, caller: ClientToken) -> str:
    return f"token {caller.name!r} (role {caller.role.value}) may not call {op or 'this route'}"


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


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content.is_eof():     # the whole body came with the head (the usual case)
        raw = await request.read()
    else:
        seconds = request.app[SERVICE].config.limits.body_timeout_s
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


def _timeout(body: dict[str, Any]) -> float | None:
    timeout = body.get("timeout")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 300:
        raise InvalidRequest("'timeout' must be a number of seconds in (0, 300]")
    return float(timeout)


async def _health(request: web.Request) -> web.Response:
    return _reply(request, {"ok": True})


async def _status(request: web.Request) -> web.Response:
    return _reply(request, await request.app[SERVICE].status())


def _write_handler(op: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        body = await _body(request)
        return _reply(request, await request.app[SERVICE].write(op, body, _timeout(body),
                                                                caller=request[CALLER]))
    return handle


def _query_handler(query: Any) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        body = await _body(request)
        return _reply(request, await request.app[SERVICE].query(query, body, _timeout(body)))
    return handle


async def _get(request: web.Request) -> web.Response:
    body = await _body(request)
    return _reply(request, await request.app[SERVICE].get(body, _timeout(body)))


async def _range(request: web.Request) -> web.Response:
    body = await _body(request)
    return _reply(request, await request.app[SERVICE].range(body, _timeout(body)))


async def _watch(request: web.Request) -> web.Response:
    return _reply(request, await request.app[SERVICE].watch(await _body(request)))


async def _session_open(request: web.Request) -> web.Response:
    body = await _body(request)
    return _reply(request, await request.app[SERVICE].session_open(body, _timeout(body),
                                                                   caller=request[CALLER]))


async def _session_keepalive(request: web.Request) -> web.Response:
    return _reply(request, await request.app[SERVICE].session_keepalive(
        await _body(request), caller=request[CALLER]))


async def _session_close(request: web.Request) -> web.Response:
    body = await _body(request)
    return _reply(request, await request.app[SERVICE].session_close(body, _timeout(body),
                                                                    caller=request[CALLER]))


async def _digest(request: web.Request) -> web.Response:
    return _reply(request, request.app[SERVICE].digest())


async def _sessions(request: web.Request) -> web.Response:
    return _reply(request, request.app[SERVICE].sessions())
