"""What the blocking and the asyncio native transports share: timeouts, reading answer frames,
the auth answer, the connect gate and the typed error of a failed connection.

Imports ``wire``, ``errors`` and ``tls`` only (no other ``client`` module).
"""
from __future__ import annotations

import time
from typing import Any

from consensus_store.errors import ConsensusStoreError, TlsError, Unavailable, error_from_json
from consensus_store.tls import certificate_problem
from consensus_store.wire import AUTH_ID

CONNECT_TIMEOUT_S = 2.0     # at most this much of a request's time goes to (re)connecting
SEND_TIMEOUT_S = 10.0       # a node that accepts no bytes for this long is given up
ANSWER_GRACE_S = 0.5        # the node answers by the request's "timeout"; allow for the trip
RECV_BYTES = 256 * 1024


class ProtocolError(Exception):
    """The node sent something the protocol does not allow; the connection is dropped."""


def parse_answer(message: Any) -> tuple[Any, int, Any]:
    """(id, status, body) of an answer frame."""
    if not isinstance(message, dict) or type(message.get("status")) is not int:
        raise ProtocolError(f"not an answer: {message!r:.200}")
    request_id = message.get("id")
    if request_id is not None and type(request_id) is not int:
        raise ProtocolError(f"answer id {request_id!r:.50} is not an integer")
    return request_id, message["status"], message.get("body")


def check_auth_answer(endpoint: str, message: Any) -> None:
    request_id, status, body = parse_answer(message)
    if request_id != AUTH_ID and request_id is not None:
        raise ProtocolError(f"expected the answer to auth, got id {request_id}")
    if status != 200:
        raise error_from_json(status, body)


class ConnectGate:
    """One connection attempt at a time per endpoint; callers that queued behind a failed
    attempt fail at once with its error instead of trying again one by one."""

    def __init__(self) -> None:
        self.failed_at = -1.0
        self.failure: tuple[type[ConsensusStoreError], str] | None = None

    def recent_failure(self, started: float) -> ConsensusStoreError | None:
        if self.failure is not None and self.failed_at >= started:
            cls, message = self.failure
            return cls(message)
        return None

    def record(self, error: ConsensusStoreError) -> None:
        self.failed_at = time.monotonic()
        self.failure = (type(error), error.message)


# TLS 1.3: a node that refuses the client's certificate (or its absence) closes after the
# handshake, without an alert the client can read
CLOSED_AFTER_HANDSHAKE = (" (after the TLS handshake: a node whose tls.client_ca_file did not "
                           "sign the client's certificate, or that got none, closes like this)")


def connect_error(endpoint: str, exc: BaseException) -> ConsensusStoreError:
    """The typed error for a failed connection attempt (``TlsError`` is not retried)."""
    problem = certificate_problem(exc)
    if problem is not None:
        return TlsError(f"{endpoint}: {problem}")
    return Unavailable(f"{endpoint}: {exc.__class__.__name__}: {exc}")
