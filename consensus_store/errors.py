"""Exception tree shared by the client, the node and the CLI.

    ConsensusStoreError
    ├── InvalidRequest        bad key, value, command or argument (HTTP 400)
    │   └── PayloadTooLarge   key or value over its limit (HTTP 413)
    ├── AuthError             missing or wrong client token (HTTP 401)
    ├── Forbidden             the token's role does not allow this operation (HTTP 403)
    ├── NotFound              no such key, route or object (HTTP 404)
    ├── CompareFailed         a compare-and-set / transaction guard did not hold (HTTP 409)
    ├── Compacted             a watch asked for history the node no longer keeps (HTTP 410)
    ├── LimitExceeded         a count limit of the cluster is reached: sessions, groups... (HTTP 429)
    ├── ConfigError           a config file is missing, malformed or inconsistent
    │   └── TlsError          the node's certificate is not trusted, or TLS cannot be agreed
    ├── Unavailable           no leader, no quorum, node stopping, endpoint unreachable (HTTP 503)
    │   └── NotLeader         this node cannot serve the request now (retry elsewhere)
    └── Timeout               the deadline passed; a write's outcome is then unknown (HTTP 504)

``RETRYABLE`` names the errors a client may retry.  A retried write is safe only because every
write carries a (client id, request id) pair that the state machine de-duplicates.
"""
from __future__ import annotations


class ConsensusStoreError(Exception):
    """Root of every error this package raises on purpose."""

    http_status = 500
    code = "internal"

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "message": self.message}
        body.update(self.details)
        return body


class InvalidRequest(ConsensusStoreError):
    http_status = 400
    code = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    http_status = 413
    code = "payload_too_large"


class AuthError(ConsensusStoreError):
    http_status = 401
    code = "unauthorized"


class Forbidden(ConsensusStoreError):
    http_status = 403
    code = "forbidden"


class NotFound(ConsensusStoreError):
    http_status = 404
    code = "not_found"


class CompareFailed(ConsensusStoreError):
    http_status = 409
    code = "compare_failed"


class Compacted(ConsensusStoreError):
    """A watch's start is older than the history kept: re-read, then watch from
    ``oldest_revision`` or later."""
    http_status = 410
    code = "compacted"

    @property
    def oldest_revision(self) -> int:
        """The oldest revision a watch may start from now (the compacted floor + 1)."""
        floor = self.details.get("floor")
        return floor + 1 if isinstance(floor, int) else 0


class LimitExceeded(ConsensusStoreError):
    """Not retryable as is: something must end first (a session, a member...)."""
    http_status = 429
    code = "limit_exceeded"


class ConfigError(ConsensusStoreError):
    code = "config_error"


class TlsError(ConfigError):
    """Not retryable: a wrong CA, a missing client certificate, or someone in the middle."""
    code = "tls_error"


class Unavailable(ConsensusStoreError):
    http_status = 503
    code = "unavailable"


class NotLeader(Unavailable):
    code = "not_leader"


class Timeout(ConsensusStoreError):
    http_status = 504
    code = "timeout"


RETRYABLE: tuple[type[ConsensusStoreError], ...] = (Unavailable, Timeout)

_BY_CODE: dict[str, type[ConsensusStoreError]] = {
    cls.code: cls
    for cls in (InvalidRequest, PayloadTooLarge, AuthError, Forbidden, NotFound, CompareFailed,
                ConfigError, Unavailable, NotLeader, Timeout)
}
_BY_CODE[Compacted.code] = Compacted
_BY_CODE[LimitExceeded.code] = LimitExceeded


def error_from_json(status: int, body: object) -> ConsensusStoreError:
    """Rebuild the typed error a node sent as ``{"error": code, "message": ...}``."""
    if isinstance(body, dict):
        cls = _BY_CODE.get(str(body.get("error")), ConsensusStoreError)
        details = {k: v for k, v in body.items() if k not in ("error", "message")}
        return cls(str(body.get("message", "")), **details)
    return ConsensusStoreError(f"HTTP {status}: {body!r}")
