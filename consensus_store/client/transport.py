"""Which transport serves an endpoint, chosen by its URL scheme.

``http://host:port``: the HTTP/JSON API (httpx).  ``tcp://host:port``: the native protocol
(pipelined frames on one connection, see ``wire``), several times cheaper per request.
``https://`` and ``tls://`` are the same over TLS, with the client's ``ssl.SSLContext``.

A transport has one method, ``send(endpoint, op, body, timeout) -> (status, JSON result)``
(a coroutine for the asyncio ones), plus ``close()`` / ``aclose()``.  It raises ``Unavailable``
or ``Timeout`` when the request may be retried elsewhere; everything else is ``core``'s job.

Imports the transports (``http``, ``native``, ``native_async``) and ``endpoints``; never ``core``
or the clients.
"""
from __future__ import annotations

from typing import Any

from consensus_store.client.endpoints import TLS_SCHEMES, scheme_of
from consensus_store.client.http import AsyncHttpTransport, HttpTransport
from consensus_store.client.native import NativeTransport
from consensus_store.client.native_async import AsyncNativeTransport
from consensus_store.config import NodeConfig
from consensus_store.errors import ConfigError, InvalidRequest

PROTOCOLS = ("auto", "native", "http")

_SYNC = {"http": HttpTransport, "https": HttpTransport, "tcp": NativeTransport,
         "tls": NativeTransport}
_ASYNC = {"http": AsyncHttpTransport, "https": AsyncHttpTransport, "tcp": AsyncNativeTransport,
          "tls": AsyncNativeTransport}


def sync_transport(endpoint: str, token: str | None, timeout: float,
                   ssl_context: Any = None) -> Any:
    """``ssl_context``: used by ``https://`` and ``tls://`` endpoints only."""
    return _pick(_SYNC, endpoint)(token, timeout, ssl_context=_tls_only(endpoint, ssl_context))


def async_transport(endpoint: str, token: str | None, timeout: float,
                    ssl_context: Any = None) -> Any:
    return _pick(_ASYNC, endpoint)(token, timeout, ssl_context=_tls_only(endpoint, ssl_context))


def _tls_only(endpoint: str, ssl_context: Any) -> Any:
    return ssl_context if scheme_of(endpoint) in TLS_SCHEMES else None


def _pick(table: dict[str, Any], endpoint: str) -> Any:
    try:
        return table[scheme_of(endpoint)]
    except KeyError:
        raise InvalidRequest(f"endpoint {endpoint!r}: use http(s)://HOST:PORT or "
                             "tcp://HOST:PORT / tls://HOST:PORT") from None


def config_endpoints(config: NodeConfig, protocol: str | None = None) -> list[str]:
    """The endpoints of a node config: native ones when every node has a ``native_address``
    (``protocol`` "auto", the default), else HTTP; "native" or "http" forces one."""
    protocol = protocol or "auto"
    if protocol not in PROTOCOLS:
        raise InvalidRequest(f"protocol must be one of {', '.join(PROTOCOLS)}")
    if protocol == "http":
        return config.api_endpoints
    native = config.native_endpoints
    if native:
        return native
    if protocol == "native":
        raise ConfigError(f"{config.path}: not every node has a native_address")
    return config.api_endpoints
