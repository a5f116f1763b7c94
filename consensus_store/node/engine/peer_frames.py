"""How Raft messages travel between our nodes: sealed frames (replaces pysyncobj's framing).

pysyncobj frames each message as pickle (protocol 2) -> zlib level 3 -> Fernet (AES-CBC + HMAC
with a timestamp), and unpickles whatever arrives: a frame can construct any object and so run
any code.  Here: msgpack -> zlib only above ``COMPRESS_ABOVE`` -> AES-GCM, about 3 us.  msgpack
decodes to plain data only (dict, list, str, bytes, int, float, bool, None), so even a frame
sealed with the cluster secret cannot construct an object.  pysyncobj's messages are plain data
already; what changes on the way: a tuple arrives as a list (pysyncobj only unpacks or indexes
them), and a ``Node`` is sent as its id (only the ``status`` utility answer holds any).

Keys.  PBKDF2 turns the cluster secret into a master key (once per node).  Each direction of each
connection draws a random salt and uses HKDF(master, salt) as its key, so the nonce can simply
count the messages (0, 1, 2...) and never repeats under a key.  The salt travels in the clear in
the first frame.  The receiver counts too, so a frame dropped, replayed or reordered fails
authentication and the connection closes (TCP delivers in order: only an attacker causes that).
pysyncobj's handshake (a random key that each side must echo in every message) still runs on top
and keeps the frames of an old connection out of a new one.

Frame: ``length (4 bytes, little-endian) | flags (1) | salt (16, first frame only) | sealed``,
where flags and salt are authenticated as associated data.  The first frame of a connection is
a handshake key, so it may not exceed ``FIRST_FRAME_MAX_BYTES``; later frames may not exceed the
opener's ``frame_limit``.  Both are checked on the length alone, before the frame is buffered
(peer_connection.py reads that way).
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysyncobj.node import Node

COMPRESS_ABOVE = 64 * 1024        # loopback and LAN links gain nothing from compressing less
FIRST_FRAME_MAX_BYTES = 4096      # a handshake key (32 bytes) with room to spare
MAX_FRAME_BYTES = 1 << 30         # a length beyond this is garbage, not a message
SALT_BYTES = 16
LENGTH_BYTES = 4

_LENGTH = struct.Struct("<I")
_FLAG_SALT = 1
_FLAG_ZLIB = 2
_INFO = b"consensus_store peer frames v2 msgpack"   # v1 (pickle) frames fail authentication
_MASTER_SALT = b"consensus_store peer master v1"


class FrameError(Exception):
    """A frame that is malformed or fails authentication: drop the connection."""


def master_key(secret: str | bytes) -> bytes:
    """The key every node derives from the cluster secret (slow on purpose: PBKDF2)."""
    if isinstance(secret, str):
        secret = secret.encode()
    return PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_MASTER_SALT,
                      iterations=100_000).derive(secret)


def _as_plain_data(value: Any) -> Any:
    if isinstance(value, Node):        # getStatus() holds Nodes; their id names them
        return value.id
    raise TypeError(f"{type(value).__name__} cannot travel in a peer frame")


def _refuse_extension(code: int, data: memoryview) -> Any:
    raise ValueError(f"msgpack extension type {code}")


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_as_plain_data)
# Untyped, extensions refused: plain data only, never an object.
_DECODER = msgspec.msgpack.Decoder(ext_hook=_refuse_extension)


def _direction_key(master: bytes, salt: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                       info=_INFO).derive(master))


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


def frame_length(buffer: bytes | bytearray, offset: int = 0) -> int | None:
    """The length a frame at ``offset`` announces, or None while its prefix is incomplete."""
    if len(buffer) < offset + LENGTH_BYTES:
        return None
    return _LENGTH.unpack_from(buffer, offset)[0]


class FrameSealer:
    """One direction of one connection, sending side."""

    def __init__(self, master: bytes) -> None:
        self._salt = os.urandom(SALT_BYTES)
        self._aead = _direction_key(master, self._salt)
        self._counter = 0

    def seal(self, message: Any) -> bytes:
        """Raises TypeError for anything but plain data (and pysyncobj Nodes)."""
        data = _ENCODER.encode(message)
        flags = 0
        if len(data) > COMPRESS_ABOVE:
            data = zlib.compress(data, 1)
            flags |= _FLAG_ZLIB
        if self._counter == 0:
            header = bytes((flags | _FLAG_SALT,)) + self._salt
        else:
            header = bytes((flags,))
        sealed = self._aead.encrypt(_nonce(self._counter), data, header)
        self._counter += 1
        return _LENGTH.pack(len(header) + len(sealed)) + header + sealed


class FrameOpener:
    """One direction of one connection, receiving side.  ``frame_limit`` bounds every frame
    after the first (the first is bounded by ``FIRST_FRAME_MAX_BYTES``) and, for a compressed
    frame, the message it inflates to."""

    def __init__(self, master: bytes, frame_limit: int = MAX_FRAME_BYTES) -> None:
        self._master = master
        self._aead: AESGCM | None = None
        self._counter = 0
        self.frame_limit = frame_limit

    @property
    def authenticated(self) -> bool:
        """Whether a frame has opened: the other side holds the cluster secret."""
        return self._counter > 0

    def limit_for(self, frame_number: int) -> int:
        """The largest length frame ``frame_number`` (0: the first) of the stream may have."""
        return FIRST_FRAME_MAX_BYTES if frame_number == 0 else self.frame_limit

    def open(self, buffer: bytes | bytearray) -> tuple[Any, int] | None:
        """The first message in ``buffer`` and the bytes it took, or None if it is incomplete.
        Raises FrameError for anything not sealed by a holder of the cluster secret, and for
        anything sealed that is not plain data."""
        length = frame_length(buffer)
        if length is None:
            return None
        limit = self.limit_for(self._counter)
        if not 1 <= length <= limit:
            raise FrameError(f"bad frame length {length} (limit {limit})")
        end = LENGTH_BYTES + length
        if len(buffer) < end:
            return None
        flags = buffer[LENGTH_BYTES]
        start = LENGTH_BYTES + 1
        if self._aead is None:
            if not flags & _FLAG_SALT or length < 1 + SALT_BYTES:
                raise FrameError("first frame carries no salt")
            self._aead = _direction_key(self._master, bytes(buffer[start:start + SALT_BYTES]))
            start += SALT_BYTES
        elif flags & _FLAG_SALT:
            raise FrameError("salt after the first frame")
        header = bytes(buffer[LENGTH_BYTES:start])
        try:
            # A view, not a copy; released before the caller trims a bytearray buffer.
            with memoryview(buffer) as view, view[start:end] as sealed:
                data = self._aead.decrypt(_nonce(self._counter), sealed, header)
        except InvalidTag:
            raise FrameError("frame failed authentication (wrong secret, or tampered)") from None
        self._counter += 1
        try:
            if flags & _FLAG_ZLIB:
                data = _inflate(data, self.frame_limit)
            return _DECODER.decode(data), end
        except (msgspec.DecodeError, ValueError, zlib.error, RecursionError) as exc:
            raise FrameError(f"authenticated frame is not a plain-data message: {exc}") from None


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    message = inflater.decompress(data, limit)
    if inflater.unconsumed_tail or not inflater.eof:
        raise zlib.error(f"inflates beyond {limit} bytes, or is truncated")
    return message


def unwrap_keyed(message: Any, key: bytes) -> Any:
    """The payload of a message that pysyncobj's handshake wraps as ``(key, payload)``
    (a list once it has travelled)."""
    if not (isinstance(message, (list, tuple)) and len(message) == 2 and message[0] == key):
        raise FrameError("handshake key mismatch")
    return message[1]


def ask_raft_port(host: str, port: int, secret: str, command: list[Any],
                  timeout: float) -> Any:
    """Send one pysyncobj utility command (e.g. ``["status"]``) to a node's raft port and return
    its answer, like ``syncobj_admin`` does with pysyncobj's own framing (diagnostics, tests).
    Nodes in the answer (``status``: ``self``, ``leader``) arrive as their ``host:port``."""
    import socket
    master = master_key(secret)
    sealer, opener = FrameSealer(master), FrameOpener(master)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        buffer = bytearray()

        def receive() -> Any:
            while (opened := opener.open(buffer)) is None:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("raft port closed the connection")
                buffer.extend(chunk)
            message, consumed = opened
            del buffer[:consumed]
            return unwrap_keyed(message, own_key)

        own_key = os.urandom(32)
        sock.sendall(sealer.seal(own_key))          # the handshake: our key, then theirs
        their_key = receive()
        sock.sendall(sealer.seal((their_key, command)))
        return receive()
