"""The native protocol's wire format, shared by the node (``node/native.py``) and the clients.

It sits beside ``protocol`` at the top of the package because both layers use it: the client
must never import ``consensus_store.node``, and the node should not reach into the client (it
imports nothing but the standard library, ``errors`` and ``fast_json``).

A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8 JSON (an
object).  On one TCP connection:

- the client's first frame is ``{"id": 0, "op": "auth", "token": <cluster secret>}``; the node
  answers ``{"id": 0, "status": 200, "body": {"ok": true, "header": ...}}``, or 401 and closes;
- then any number of requests ``{"id": n, "op": "put"|"get"|"delete"|"cas"|"range"|"txn"|"status"
  |..., ...the HTTP API's body fields}`` may be in flight at once (``node/native.py`` lists the
  ops: every route of the HTTP API has one);
- each answer ``{"id": n, "status": <HTTP status>, "body": <the HTTP API's JSON body>}`` is sent as
  soon as its request completes, so answers may come in any order: match them by ``id``.

A request the node cannot attribute (not JSON, no integer id) is answered with ``"id": null``.
A frame over the node's limit (``limits.max_request_bytes``: the value limit + 64 KiB) is
answered with 413, with the request's id when the frame starts with ``{"id": <n>`` (clients
write it first), and the node then closes the connection (the rest of that frame is never
read).
"""
from __future__ import annotations

import json
import re
import struct
from typing import Any

from consensus_store import fast_json
from consensus_store.errors import InvalidRequest

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
MAX_FRAME_BYTES = 2 ** 32 - 1        # what 4 length bytes can say
AUTH_OP = "auth"
AUTH_ID = 0
PEEK_BYTES = 40                       # enough for '{"id": <up to 18 digits>'

_COMPACT_AT = 256 * 1024
_ID_PREFIX = re.compile(rb'\s*\{\s*"id"\s*:\s*(\d{1,18})\s*[,}]')
_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_dumps = _encoder.encode


class FrameTooLarge(Exception):
    """A frame header announced more bytes than the reader accepts."""

    def __init__(self, length: int, limit: int, request_id: int | None) -> None:
        super().__init__(f"frame of {length} bytes is over the limit of {limit} bytes")
        self.length, self.limit, self.request_id = length, limit, request_id


class FrameReader:
    """Reassembles frames from the chunks a socket delivers (no I/O of its own).

    ``feed`` the bytes as they arrive, then call ``next`` until it returns None.  ``next`` raises
    ``FrameTooLarge`` once a header announces more than ``max_size`` bytes (after waiting for the
    first bytes of the payload, to report the request id); the stream is unusable afterwards.
    """

    __slots__ = ("max_size", "_buf", "_pos")

    def __init__(self, max_size: int = MAX_FRAME_BYTES) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def next(self) -> bytearray | None:
        buf, pos = self._buf, self._pos
        size = len(buf)
        if size - pos < HEADER_SIZE:
            return None
        (length,) = HEADER.unpack_from(buf, pos)
        start = pos + HEADER_SIZE
        if length > self.max_size:
            wanted = min(PEEK_BYTES, length)
            if size - start < wanted:
                return None
            request_id = peek_request_id(bytes(buf[start:start + wanted]))
            raise FrameTooLarge(length, self.max_size, request_id)
        end = start + length
        if size < end:
            return None
        frame = buf[start:end]
        if end == size:
            buf.clear()
            self._pos = 0
        elif end >= _COMPACT_AT and end * 2 >= size:
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return frame


def peek_request_id(prefix: bytes) -> int | None:
    """The id of a request from the first bytes of its frame, if it starts with ``{"id": n``."""
    match = _ID_PREFIX.match(prefix)
    return int(match.group(1)) if match else None


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_BYTES:
        raise InvalidRequest(f"a frame cannot carry {len(payload)} bytes")
    return HEADER.pack(len(payload)) + payload


def encode_request(request_id: int, op: str, body: dict[str, Any]) -> bytes:
    """One request frame; ``id`` comes first so a node can name it even in a 413 answer."""
    message = {"id": request_id, "op": op}
    message.update(body)
    try:
        payload = _dumps(message).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"request is not JSON-serialisable: {exc}") from None
    return frame(payload)


def encode_auth(token: str | None) -> bytes:
    return encode_request(AUTH_ID, AUTH_OP, {"token": token or ""})


def encode_response(request_id: int | None, status: int, body: dict[str, Any]) -> bytes:
    """One answer frame (the node's side).  ``body`` must already be JSON-safe (values were
    checked when written), so the fast encoder can be used."""
    rid = b"null" if request_id is None else str(request_id).encode()
    return frame(b'{"id":%s,"status":%d,"body":%s}' % (rid, status, fast_json.encode(body)))


def decode(payload: bytes | bytearray) -> Any:
    """Parse one frame's payload (raises ValueError if it is not JSON)."""
    return fast_json.decode(payload)
