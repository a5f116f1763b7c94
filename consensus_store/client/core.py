"""What every client does whatever its transport (HTTP or native, blocking or asyncio).

``ClientCore`` holds the state one client shares across its threads or tasks: the endpoints and
which one is preferred, the write ids, the highest applied index seen.  ``Attempts`` is the retry
policy of one request, free of I/O, so that the blocking and the asyncio clients run the same
loop around their own send and sleep:

    attempts = core.attempts(op, body, timeout)
    try:
        while (attempt := attempts.next()) is not None:
            try:
                return core.decode(attempt.endpoint, *send(attempt))
            except RETRYABLE as exc:
                sleep(attempts.failed(attempt, exc))
        raise attempts.give_up()
    finally:
        attempts.close()

Guarantees kept here:
- session reads (the default): every read carries the highest applied index this client has seen
  (from any answer), so a replica answers only once it has caught up: read-your-writes and
  monotonic reads across nodes;
- at-most-once writes: each write carries (client id, request id); a retry after a timeout,
  a connection loss or a leader change reuses them, and the state machine applies it once.
"""
from __future__ import annotations

import itertools
from pathlib import Path
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple
from urllib.parse import urlsplit

from consensus_store.protocol import WRITE_OPS
from consensus_store.errors import (ConsensusStoreError, InvalidRequest, Timeout, Unavailable,
                                    error_from_json)

DEFAULT_TIMEOUT_S = 10.0
MAX_SERVER_TIMEOUT_S = 300.0       # the node rejects a request "timeout" above this
SCHEMES = ("http", "https", "tcp", "tls")    # tcp/tls: the native protocol (tls: over TLS)
TLS_SCHEMES = ("https", "tls")


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed request is retried (only errors in ``RETRYABLE``, only where safe)."""

    max_tries: int = 20
    backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    jitter: float = 0.25

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


def normalize_endpoints(endpoints: Iterable[str]) -> list[str]:
    """``http(s)://host:port`` or ``tcp://host:port`` / ``tls://host:port`` URLs, without
    trailing slashes."""
    result = []
    for endpoint in endpoints:
        endpoint = endpoint.strip().rstrip("/")
        if scheme_of(endpoint) not in SCHEMES:
            raise InvalidRequest(f"endpoint {endpoint!r}: use http(s)://HOST:PORT (HTTP API) or "
                                 "tcp://HOST:PORT / tls://HOST:PORT (native protocol)")
        result.append(endpoint)
    if not result:
        raise InvalidRequest("give at least one endpoint")
    return result


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


class Attempt(NamedTuple):
    index: int            # position of the endpoint in ClientCore.endpoints
    endpoint: str
    body: dict[str, Any]  # what to send this time (min_index and timeout refreshed)
    timeout: float        # seconds left for this request


class ClientCore:
    """Endpoints, write ids and the session index of one client; thread-safe."""

    def __init__(self, endpoints: Iterable[str], *, timeout: float = DEFAULT_TIMEOUT_S,
                 retry: RetryPolicy = RetryPolicy(), client_id: str | None = None) -> None:
        self.endpoints = normalize_endpoints(endpoints)
        self.timeout = timeout
        self.retry = retry
        self.client_id = client_id or uuid.uuid4().hex
        self._lock = threading.Lock()
        self._request_ids = itertools.count(1)
        self._pending: set[int] = set()
        self.seen_index = 0
        self.preferred = 0

    def attempts(self, op: str, body: dict[str, Any], timeout: float | None) -> "Attempts":
        return Attempts(self, op, body, self.timeout if timeout is None else timeout)

    # ---- write ids ------------------------------------------------------------------------------
    def _open_write(self) -> tuple[int, int]:
        with self._lock:
            request_id = next(self._request_ids)
            self._pending.add(request_id)
            return request_id, min(self._pending)

    def _close_write(self, request_id: int) -> None:
        with self._lock:
            self._pending.discard(request_id)

    # ---- answers --------------------------------------------------------------------------------
    def decode(self, endpoint: str, status: int, result: Any) -> dict[str, Any]:
        """The JSON result of an answer, or its typed error; notes the applied index seen."""
        if not isinstance(result, dict):
            raise Unavailable(f"{endpoint} answered {status} without a JSON object")
        header = result.get("header")
        if isinstance(header, dict):
            self.observe(header.get("applied_index", 0))
        if status >= 400:
            raise error_from_json(status, result)
        return result

    def observe(self, index: Any) -> None:
        if type(index) is int and index > self.seen_index:
            with self._lock:
                if index > self.seen_index:
                    self.seen_index = index

    def rotate_from(self, failed_index: int) -> None:
        with self._lock:
            if self.preferred == failed_index:
                self.preferred = (failed_index + 1) % len(self.endpoints)


class Attempts:
    """The retry plan of one request: which endpoint next, what to send, how long to back off."""

    __slots__ = ("core", "timeout", "deadline", "body", "tries", "last_error", "request_id",
                 "session")

    def __init__(self, core: ClientCore, op: str, body: dict[str, Any], timeout: float) -> None:
        self.core = core
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.tries = 0
        self.last_error: ConsensusStoreError = Unavailable("no endpoint tried")
        self.request_id: int | None = None
        if op in WRITE_OPS:
            self.request_id, done_below = core._open_write()
            body = {**body, "client_id": core.client_id, "request_id": self.request_id,
                    "done_below": done_below}
        self.body = body
        self.session = body.get("consistency") == "session"

    def next(self) -> Attempt | None:
        """The next attempt, or None when out of time or tries (then raise ``give_up()``)."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self.tries >= self.core.retry.max_tries:
            return None
        self.tries += 1
        body = self.body
        if self.session:
            body["min_index"] = self.core.seen_index
        body["timeout"] = min(MAX_SERVER_TIMEOUT_S, max(0.05, remaining))
        index = self.core.preferred
        return Attempt(index, self.core.endpoints[index], body, remaining)

    def failed(self, attempt: Attempt, error: ConsensusStoreError) -> float:
        """Record a retryable failure; returns how long to wait before ``next()``."""
        self.last_error = error
        self.core.rotate_from(attempt.index)
        return min(self.core.retry.delay(self.tries - 1),
                   max(0.0, self.deadline - time.monotonic()))

    def give_up(self) -> ConsensusStoreError:
        if isinstance(self.last_error, Timeout):
            return self.last_error
        return Timeout(f"gave up after {self.timeout:g}s: {self.last_error.message}",
                       last=self.last_error.code)

    def close(self) -> None:
        if self.request_id is not None:
            self.core._close_write(self.request_id)
            self.request_id = None


class ClientSettings:
    """What ``Client`` and ``AsyncClient`` expose of their ``ClientCore`` (read-only)."""

    _core: ClientCore

    @classmethod
    def from_config(cls, path: "str | Path", *, protocol: str | None = None,
                    **options: Any) -> Any:
        """A client for the cluster a node config describes (its endpoints and token).

        Uses the native protocol when every node of the config has a ``native_address``;
        ``protocol="http"`` forces HTTP, ``protocol="native"`` requires native.  With ``[tls]``
        the endpoints are ``https://``/``tls://``, verified against ``tls.ca_file`` (else the
        system's trust store), and when the nodes require client certificates
        (``tls.client_ca_file``) the client presents the node's own certificate.  ``cacert``,
        ``cert``, ``key`` and ``token`` in ``options`` win over the config's.
        """
        from consensus_store.client.transport import config_endpoints
        from consensus_store.config import load_config
        config = load_config(path)
        tls = config.tls
        if tls is not None:
            options.setdefault("cacert", tls.ca_file)
            if tls.client_ca_file is not None and "cert" not in options:
                options["cert"], options["key"] = tls.cert_file, tls.key_file
        options.setdefault("token", config.admin_token)
        return cls(config_endpoints(config, protocol), **options)

    @property
    def endpoints(self) -> list[str]:
        return self._core.endpoints

    @property
    def timeout(self) -> float:
        return self._core.timeout

    @property
    def retry(self) -> RetryPolicy:
        return self._core.retry

    @property
    def client_id(self) -> str:
        return self._core.client_id

    @property
    def preferred_endpoint(self) -> str:
        """Where the next request goes first (moves on after a retryable failure)."""
        return self._core.endpoints[self._core.preferred]

    @property
    def seen_index(self) -> int:
        """Highest applied index seen in any answer (what session reads wait for)."""
        return self._core.seen_index


def tls_context(endpoints: list[str], cacert: str | Path | None, cert: str | Path | None,
                key: str | Path | None) -> Any:
    """The ``ssl.SSLContext`` a client's ``https://``/``tls://`` endpoints use, or None when it
    has none and no TLS option was given.  The server is always verified."""
    if not any(scheme_of(e) in TLS_SCHEMES for e in endpoints) and (cacert, cert, key) == (
            None, None, None):
        return None
    from consensus_store.tls import client_context
    return client_context(cacert, cert, key)
