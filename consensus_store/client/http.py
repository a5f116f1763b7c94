"""``Client``: the key-value API over HTTP/JSON, with failover and safe retries.

Guarantees kept by the client:
- session reads (the default): every read carries the highest applied index this client has seen
  (from any answer), so a replica answers only once it has caught up: read-your-writes and
  monotonic reads across nodes;
- at-most-once writes: each write carries (client id, request id); a retry after a timeout,
  a connection loss or a leader change reuses them, and the state machine applies it once.
"""
from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import httpx

from consensus_store.config import load_config
from consensus_store.errors import (RETRYABLE, ConsensusStoreError, InvalidRequest, Timeout,
                                    Unavailable, error_from_json)
from consensus_store.kv_api import KVApi
from consensus_store.models import NodeStatus, Role

DEFAULT_TIMEOUT_S = 10.0
_WRITE_OPS = frozenset({"put", "delete", "cas", "txn"})


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


class Client(KVApi):
    """Client of a consensus_store cluster.

    >>> client = Client(["http://127.0.0.1:7201"], token="...")
    >>> client.put("config/feature", {"enabled": True})
    >>> client.get("config/feature").value
    """

    def __init__(self, endpoints: Iterable[str], token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S, retry: RetryPolicy = RetryPolicy(),
                 client_id: str | None = None) -> None:
        self.endpoints = [e.rstrip("/") for e in endpoints]
        if not self.endpoints:
            raise InvalidRequest("give at least one endpoint")
        self.timeout = timeout
        self.retry = retry
        self.client_id = client_id or uuid.uuid4().hex
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(headers=headers, timeout=timeout,
                                  limits=httpx.Limits(max_keepalive_connections=64))
        self._lock = threading.Lock()
        self._request_ids = itertools.count(1)
        self._pending: set[int] = set()
        self._seen_index = 0
        self._preferred = 0

    @classmethod
    def from_config(cls, path: str | Path, **options: Any) -> "Client":
        """A client for the cluster a node config describes (its endpoints and token)."""
        config = load_config(path)
        return cls(config.api_endpoints, token=config.secret, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def seen_index(self) -> int:
        """Highest applied index seen in any answer (what session reads wait for)."""
        return self._seen_index

    # ---- the one request path ------------------------------------------------------------------
    def _request(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        timeout = self.timeout if timeout is None else timeout
        request_id = None
        if op in _WRITE_OPS:
            with self._lock:
                request_id = next(self._request_ids)
                self._pending.add(request_id)
                done_below = min(self._pending)
            body = {**body, "client_id": self.client_id, "request_id": request_id,
                    "done_below": done_below}
        try:
            return self._post_with_retries(f"/v1/kv/{op}", body, timeout)
        finally:
            if request_id is not None:
                with self._lock:
                    self._pending.discard(request_id)

    def _post_with_retries(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last_error: ConsensusStoreError = Unavailable("no endpoint tried")
        for attempt in range(self.retry.max_tries):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if body.get("consistency") == "session":
                body["min_index"] = self._seen_index
            body["timeout"] = max(0.05, remaining)
            endpoint_index = self._preferred
            try:
                return self._post_once(self.endpoints[endpoint_index], path, body, remaining)
            except RETRYABLE as exc:
                last_error = exc
                self._rotate_from(endpoint_index)
            time.sleep(min(self.retry.delay(attempt), max(0.0, deadline - time.monotonic())))
        if isinstance(last_error, Timeout):
            raise last_error
        raise Timeout(f"gave up after {timeout:g}s: {last_error.message}", last=last_error.code)

    def _rotate_from(self, failed_index: int) -> None:
        with self._lock:
            if self._preferred == failed_index:
                self._preferred = (failed_index + 1) % len(self.endpoints)

    def _post_once(self, endpoint: str, path: str, body: dict[str, Any],
                   timeout: float) -> dict[str, Any]:
        try:
            response = self._http.post(endpoint + path, json=body, timeout=timeout + 0.5)
        except httpx.TimeoutException:
            raise Timeout(f"{endpoint} did not answer within {timeout:g}s") from None
        except httpx.TransportError as exc:
            raise Unavailable(f"{endpoint}: {exc.__class__.__name__}: {exc}") from None
        return self._decode(endpoint, response)

    def _decode(self, endpoint: str, response: httpx.Response) -> dict[str, Any]:
        try:
            result = response.json()
        except ValueError:
            raise Unavailable(f"{endpoint} answered HTTP {response.status_code} without JSON") from None
        header = result.get("header") if isinstance(result, dict) else None
        if isinstance(header, dict):
            self._observe(header.get("applied_index", 0))
        if response.status_code >= 400:
            raise error_from_json(response.status_code, result)
        return result

    def _observe(self, index: Any) -> None:
        if isinstance(index, int) and index > self._seen_index:
            with self._lock:
                self._seen_index = max(self._seen_index, index)

    # ---- cluster information -------------------------------------------------------------------
    def status(self, endpoint: str | None = None, *, timeout: float = 2.0) -> NodeStatus:
        """Status of one node (default: the preferred endpoint); raises if it is unreachable."""
        endpoint = endpoint or self.endpoints[self._preferred]
        try:
            response = self._http.get(endpoint + "/v1/status", timeout=timeout)
        except httpx.TransportError as exc:
            raise Unavailable(f"{endpoint}: {exc.__class__.__name__}") from None
        return NodeStatus.from_json(endpoint, self._decode(endpoint, response))

    def cluster_status(self, *, timeout: float = 2.0) -> list[NodeStatus]:
        """Status of every endpoint; unreachable ones are reported with role DOWN."""
        statuses = []
        for endpoint in self.endpoints:
            try:
                statuses.append(self.status(endpoint, timeout=timeout))
            except ConsensusStoreError as exc:
                statuses.append(NodeStatus(id="?", endpoint=endpoint, role=Role.DOWN,
                                           error=exc.message))
        return statuses

    def wait_for_leader(self, timeout: float = 15.0) -> NodeStatus:
        """Block until some endpoint reports itself leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for status in self.cluster_status(timeout=1.0):
                if status.role is Role.LEADER:
                    return status
            time.sleep(0.1)
        raise Timeout(f"no leader within {timeout:g}s")
