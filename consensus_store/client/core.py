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

Free of I/O and of transports: imports ``endpoints`` only from ``client`` (the transports
import ``endpoints`` too, never this module, so the layers form no cycle).
"""
from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

from consensus_store.client.endpoints import normalize_endpoints
from consensus_store.errors import ConsensusStoreError, Timeout, Unavailable, error_from_json
from consensus_store.protocol import READ_OPS, WRITE_OPS    # the op table's columns

# Reads a read replica may answer (docs/replicas.md); the rest goes to the voters.
REPLICA_LEVELS = ("local", "session")

DEFAULT_TIMEOUT_S = 10.0
MAX_SERVER_TIMEOUT_S = 300.0       # the node rejects a request "timeout" above this


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
        self.voters = len(self.endpoints)   # endpoints[voters:] are read replicas
        self._next_replica = -1             # the last replica a read went to

    def add_read_replicas(self, endpoints: Iterable[str]) -> None:
        """Send ``local`` and ``session`` reads to these nodes (in turn), everything else to
        the voters; a read a replica cannot answer goes on to the voters."""
        with self._lock:
            known = set(self.endpoints)
            self.endpoints += [e for e in normalize_endpoints(endpoints) if e not in known]

    def set_voters(self, endpoints: Iterable[str]) -> None:
        """The voters' endpoints as the live membership names them (``sync_endpoints``);
        read replicas stay after them."""
        voters = normalize_endpoints(endpoints)
        with self._lock:
            replicas = [e for e in self.endpoints[self.voters:] if e not in voters]
            self.endpoints = voters + replicas
            self.voters = len(voters)
            self.preferred = 0

    def next_replica(self) -> int:
        with self._lock:
            count = len(self.endpoints) - self.voters
            self._next_replica = (self._next_replica + 1) % count
            return self.voters + self._next_replica

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
                self.preferred = (failed_index + 1) % self.voters


class Attempts:
    """The retry plan of one request: which endpoint next, what to send, how long to back off."""

    __slots__ = ("core", "timeout", "deadline", "body", "tries", "last_error", "request_id",
                 "session", "replica_tries")

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
        # How many read replicas this request may still try before the voters.
        self.replica_tries = (len(core.endpoints) - core.voters
                              if op in READ_OPS and body.get("consistency") in REPLICA_LEVELS
                              else 0)

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
        if self.replica_tries > 0:
            self.replica_tries -= 1
            index = self.core.next_replica()
        else:
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
