"""HTTP/JSON client API (aiohttp): a thin layer over ``KVService``.

Every request but ``GET /health`` needs ``Authorization: Bearer <cluster secret>``.  Every
answer is JSON with a ``header`` (answering node, its applied index, the leader, the revision);
errors are ``{"error": code, "message": ...}`` with a 4xx/5xx status, never a traceback.
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from consensus_store import fast_json
from consensus_store.errors import (AuthError, ConsensusStoreError, InvalidRequest, NotFound,
                                    PayloadTooLarge)
from consensus_store.node.coordination_api import QUERIES
from consensus_store.protocol import COORDINATION_WRITES, KV_WRITE_OPS, ROUTES
from consensus_store.node.service import KVService

log = logging.getLogger("consensus_store.api")

SERVICE: web.AppKey[KVService] = web.AppKey("service", KVService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]



def create_app(service: KVService) -> web.Application:
    app = web.Application(client_max_size=service.config.limits.max_request_bytes,
                          middlewares=[_guard])
    app[SERVICE] = service
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/status", _status)
    for op in (*KV_WRITE_OPS, *COORDINATION_WRITES):
        app.router.add_post(ROUTES[op][1], _write_handler(op))
    for op, query in QUERIES.items():
        app.router.add_post(ROUTES[op][1], _query_handler(query))
    app.router.add_post("/v1/kv/get", _get)
    app.router.add_post("/v1/kv/range", _range)
    app.router.add_post("/v1/watch", _watch)
    app.router.add_post("/v1/session/open", _session_open)
    app.router.add_post("/v1/session/keepalive", _session_keepalive)
    app.router.add_post("/v1/session/close", _session_close)
    app.router.add_get("/v1/sessions", _sessions)
    app.router.add_get("/v1/digest", _digest)
    return app


def _reply(request: web.Request, body: dict[str, Any], status: int = 200) -> web.Response:
    body["header"] = request.app[SERVICE].header()
    return web.Response(body=fast_json.encode(body), status=status,
                        content_type="application/json")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The token check, then the handler; every error becomes a JSON answer (one middleware:
    each layer costs a coroutine per request)."""
    try:
        if request.path != "/health":
            _check_token(request)
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


def _check_token(request: web.Request) -> None:
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
    try:
        raw = supplied.encode("ascii")
    except UnicodeEncodeError:
        raw = b""      # a token is printable ASCII: anything else cannot match
    if request.app[SERVICE].tokens.lookup(raw) is None:
        raise AuthError("missing or wrong client token (Authorization: Bearer <token>)")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
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
        return _reply(request, await request.app[SERVICE].write(op, body, _timeout(body)))
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
    return _reply(request, await request.app[SERVICE].session_open(body, _timeout(body)))


async def _session_keepalive(request: web.Request) -> web.Response:
    return _reply(request, await request.app[SERVICE].session_keepalive(await _body(request)))


async def _session_close(request: web.Request) -> web.Response:
    body = await _body(request)
    return _reply(request, await request.app[SERVICE].session_close(body, _timeout(body)))


async def _digest(request: web.Request) -> web.Response:
    return _reply(request, request.app[SERVICE].digest())


async def _sessions(request: web.Request) -> web.Response:
    return _reply(request, request.app[SERVICE].sessions())
