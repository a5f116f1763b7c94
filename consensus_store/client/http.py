"""HTTP/JSON transports (httpx): each op is one route of the node's HTTP API, as the op table
(``protocol.OPS``) declares it: its method, path and whether it has a body.

A transport sends one request to one endpoint and returns ``(status, JSON result)``; retries,
failover and write ids are ``core``'s business.  Transport failures become ``Unavailable`` or
``Timeout`` (both retryable), except a certificate the client does not trust or a TLS handshake
the node refused: ``TlsError`` (not retryable).
"""
from __future__ import annotations

import contextlib
import ssl
from typing import Any, Iterator

import httpx

from consensus_store.errors import InvalidRequest, Timeout, TlsError, Unavailable
from consensus_store.protocol import OPS, Op
from consensus_store.tls import certificate_problem


def _op(name: str) -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise InvalidRequest(f"unknown op {name!r}") from None


@contextlib.contextmanager
def _typed_errors(endpoint: str, timeout: float) -> Iterator[None]:
    """httpx's exceptions as ours (the same for the blocking and the asyncio transport)."""
    try:
        yield
    except httpx.TimeoutException:
        raise Timeout(f"{endpoint} did not answer within {timeout:g}s") from None
    except httpx.TransportError as exc:
        problem = certificate_problem(exc)
        if problem is not None:   # no retry or other endpoint can help: say what is wrong
            raise TlsError(f"{endpoint}: {problem}") from None
        raise Unavailable(f"{endpoint}: {exc.__class__.__name__}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"request is not JSON-serialisable: {exc}") from None


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _result(response: httpx.Response) -> tuple[int, Any]:
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


class HttpTransport:
    """Blocking HTTP transport: one ``httpx.Client`` (keep-alive pool) for every endpoint.
    ``ssl_context``: what ``https://`` endpoints are verified with (default: the system's)."""

    def __init__(self, token: str | None, timeout: float, max_connections: int = 64, *,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._http = httpx.Client(headers=_headers(token), timeout=timeout,
                                  limits=httpx.Limits(max_keepalive_connections=max_connections),
                                  verify=ssl_context if ssl_context is not None else True)

    def send(self, endpoint: str, op: str, body: dict[str, Any],
             timeout: float) -> tuple[int, Any]:
        spec = _op(op)
        with _typed_errors(endpoint, timeout):
            if spec.has_body:
                response = self._http.post(endpoint + spec.path, json=body,
                                           timeout=timeout + 0.5)
            else:
                response = self._http.get(endpoint + spec.path, timeout=timeout)
        return _result(response)

    def close(self) -> None:
        self._http.close()


class AsyncHttpTransport:
    """asyncio HTTP transport: one ``httpx.AsyncClient`` for every endpoint."""

    def __init__(self, token: str | None, timeout: float, max_connections: int = 64, *,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._http = httpx.AsyncClient(
            headers=_headers(token), timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=max_connections),
            verify=ssl_context if ssl_context is not None else True)

    async def send(self, endpoint: str, op: str, body: dict[str, Any],
                   timeout: float) -> tuple[int, Any]:
        spec = _op(op)
        with _typed_errors(endpoint, timeout):
            if spec.has_body:
                response = await self._http.post(endpoint + spec.path, json=body,
                                                 timeout=timeout + 0.5)
            else:
                response = await self._http.get(endpoint + spec.path, timeout=timeout)
        return _result(response)

    async def aclose(self) -> None:
        await self._http.aclose()
