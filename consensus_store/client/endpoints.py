"""Client endpoints: the URL schemes a client accepts and what each one means.

``http://`` and ``https://``: the HTTP/JSON API; ``tcp://`` and ``tls://``: the native protocol
(``tls``/``https`` over TLS).  Pure functions of strings (and, for ``tls_context``, the TLS
files), imported by every other client module; imports nothing from ``client``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from consensus_store.errors import InvalidRequest

SCHEMES = ("http", "https", "tcp", "tls")    # tcp/tls: the native protocol (tls: over TLS)
TLS_SCHEMES = ("https", "tls")


def normalize_endpoints(endpoints: Iterable[str]) -> list[str]:
    """``http(s)://host:port`` or ``tcp://host:port`` / ``tls://host:port`` URLs, without
    trailing slashes.  HOST is a DNS name, ``localhost``, an IPv4 address or a bracketed IPv6
    address (``http://[::1]:7201``), as a node config's ``api_endpoints`` writes them."""
    result = []
    for endpoint in endpoints:
        endpoint = endpoint.strip().rstrip("/")
        if scheme_of(endpoint) not in SCHEMES:
            raise InvalidRequest(f"endpoint {endpoint!r}: use http(s)://HOST:PORT (HTTP API) or "
                                 "tcp://HOST:PORT / tls://HOST:PORT (native protocol)")
        _check_host(endpoint)
        result.append(endpoint)
    if not result:
        raise InvalidRequest("give at least one endpoint")
    return result


def _check_host(endpoint: str) -> None:
    try:
        parts = urlsplit(endpoint)
        host, _ = parts.hostname, parts.port
    except ValueError:     # e.g. an IPv6 address without brackets: its colons look like a port
        host = None
    if not host:
        raise InvalidRequest(f"endpoint {endpoint!r}: no HOST[:PORT] after the scheme (an IPv6 "
                             "address goes in brackets: http://[::1]:7201)")


def scheme_of(endpoint: str) -> str:
    return endpoint.partition("://")[0].lower() if "://" in endpoint else ""


def host_port(endpoint: str) -> tuple[str, int]:
    """(host, port) of a ``tcp://`` or ``tls://`` endpoint."""
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise InvalidRequest(f"endpoint {endpoint!r} is not tcp://HOST:PORT or tls://HOST:PORT")
    return host, port


def tls_context(endpoints: list[str], cacert: str | Path | None, cert: str | Path | None,
                key: str | Path | None) -> Any:
    """The ``ssl.SSLContext`` a client's ``https://``/``tls://`` endpoints use, or None when it
    has none and no TLS option was given.  The server is always verified."""
    if not any(scheme_of(e) in TLS_SCHEMES for e in endpoints) and (cacert, cert, key) == (
            None, None, None):
        return None
    from consensus_store.tls import client_context
    return client_context(cacert, cert, key)
