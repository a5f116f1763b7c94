"""Sealed peer frames (node/engine/peer_frames.py): what travels on the raft port."""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import pytest
from pysyncobj.node import TCPNode

from consensus_store.node.engine.peer_frames import (COMPRESS_ABOVE, FIRST_FRAME_MAX_BYTES, FrameError,
                                              FrameOpener, FrameSealer, master_key)

KEY = master_key("cluster secret")


def open_all(opener: FrameOpener, stream: bytes) -> tuple[list, bytes]:
    messages = []
    while (opened := opener.open(stream)) is not None:
        message, consumed = opened
        messages.append(message)
        stream = stream[consumed:]
    return messages, stream


def test_messages_round_trip_through_a_byte_stream_cut_anywhere() -> None:
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    sent = [{"type": "append_entries", "entries": [(b"\x00cmd", 7, 2)], "n": n} for n in range(5)]
    stream = b"".join(sealer.seal(m) for m in sent)
    received, buffer = [], b""
    for i in range(0, len(stream), 7):                  # arrives in 7-byte pieces
        buffer += stream[i:i + 7]
        messages, buffer = open_all(opener, buffer)
        received += messages
    # Plain data comes back equal, except that a tuple arrives as a list.
    assert received == [{**m, "entries": [[b"\x00cmd", 7, 2]]} for m in sent] and buffer == b""


def test_a_bytearray_buffer_opens_and_can_be_trimmed_after() -> None:
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    buffer = bytearray(sealer.seal("one") + sealer.seal({"two": [2, None, True, 2.5]}))
    message, consumed = opener.open(buffer)
    del buffer[:consumed]                               # no view of it is left open
    assert message == "one"
    assert opener.open(buffer) == ({"two": [2, None, True, 2.5]}, len(buffer))


class RunsCode:
    """What an attacker would seal: unpickling it calls os.mkdir(marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def seal_verbatim(sealer: FrameSealer, payload: bytes) -> bytes:
    """A frame whose sealed plaintext is ``payload`` as it is: what anyone holding the key can
    send (it mirrors FrameSealer.seal without the encoding; reaches into its key and counter)."""
    header = bytes((1,)) + sealer._salt if sealer._counter == 0 else b"\x00"
    sealed = sealer._aead.encrypt(sealer._counter.to_bytes(12, "big"), payload, header)
    sealer._counter += 1
    return struct.pack("<I", len(header) + len(sealed)) + header + sealed


@pytest.mark.parametrize("first", [True, False])
def test_a_sealed_pickle_constructs_nothing(tmp_path: Path, first: bool) -> None:
    marker = tmp_path / "ran"
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    stream = b"" if first else sealer.seal(b"k" * 32)
    stream += seal_verbatim(sealer, pickle.dumps((b"k" * 32, RunsCode(marker)), protocol=5))
    with pytest.raises(FrameError, match="not a plain-data message"):
        open_all(opener, stream)
    assert not marker.exists()


def test_only_plain_data_can_be_sealed(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        FrameSealer(KEY).seal({"type": "x", "payload": RunsCode(tmp_path / "ran")})
    # getStatus() holds pysyncobj Nodes: they travel as their id.
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    frame = sealer.seal({"self": TCPNode("127.0.0.1:7000"), "leader": None})
    assert open_all(opener, frame)[0] == [{"self": "127.0.0.1:7000", "leader": None}]


@pytest.mark.parametrize("payload", [
    b"\xd4\x05a",                                         # a msgpack extension type
    b"\x91" * 100_000 + b"\xc0",                          # lists nested 100,000 deep
    b"\x01\x02",                                          # trailing bytes
    b"",
])
def test_sealed_bytes_that_are_not_plain_data_are_refused(payload: bytes) -> None:
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    open_all(opener, sealer.seal("handshake"))
    with pytest.raises(FrameError, match="not a plain-data message"):
        opener.open(seal_verbatim(sealer, payload))


def test_frame_lengths_are_refused_from_the_prefix_alone() -> None:
    # The first frame of a stream is a handshake key: more than 4 KiB is not one.
    with pytest.raises(FrameError, match="length"):
        FrameOpener(KEY).open(struct.pack("<I", FIRST_FRAME_MAX_BYTES + 1))
    assert FrameOpener(KEY).open(struct.pack("<I", FIRST_FRAME_MAX_BYTES)) is None
    # Later frames: the opener's frame_limit.
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY, frame_limit=1000)
    open_all(opener, sealer.seal("handshake"))
    with pytest.raises(FrameError, match="length"):
        opener.open(struct.pack("<I", 1001))
    assert open_all(opener, sealer.seal("x" * 900)) == (["x" * 900], b"")


def test_a_compressed_frame_may_not_inflate_beyond_the_limit() -> None:
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY, frame_limit=100_000)
    open_all(opener, sealer.seal("handshake"))
    bomb = sealer.seal(b"\0" * 10_000_000)                # a few KiB on the wire
    assert len(bomb) < 100_000
    with pytest.raises(FrameError, match="inflates beyond"):
        opener.open(bomb)


def test_large_messages_are_compressed_and_come_back_whole() -> None:
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    big = {"entries": [b"x" * 1000] * (2 * COMPRESS_ABOVE // 1000)}
    frame = sealer.seal(big)
    assert len(frame) < COMPRESS_ABOVE
    assert open_all(opener, frame) == ([big], b"")


def test_a_frame_sealed_with_another_secret_is_refused() -> None:
    frame = FrameSealer(master_key("another secret")).seal("hello")
    with pytest.raises(FrameError, match="authentication"):
        FrameOpener(KEY).open(frame)


@pytest.mark.parametrize("position", [4, 5, 30, -1])
def test_any_changed_byte_is_refused(position: int) -> None:
    frame = bytearray(FrameSealer(KEY).seal({"type": "request_vote", "term": 9}))
    frame[position] ^= 0x01
    with pytest.raises(FrameError):
        FrameOpener(KEY).open(bytes(frame))


def test_a_replayed_or_reordered_frame_is_refused() -> None:
    sealer = FrameSealer(KEY)
    first, second, third = (sealer.seal(n) for n in range(3))
    opener = FrameOpener(KEY)
    assert open_all(opener, first + second) == ([0, 1], b"")
    with pytest.raises(FrameError):
        opener.open(second)                              # replayed
    skipping = FrameOpener(KEY)
    open_all(skipping, first)
    with pytest.raises(FrameError):
        skipping.open(third)                             # one frame dropped or reordered


def test_every_connection_direction_gets_its_own_key() -> None:
    # Nonces count from zero on each connection, so the keys must differ: a frame of one
    # connection never opens on another.
    one, other = FrameSealer(KEY), FrameSealer(KEY)
    assert one.seal("same") != other.seal("same")
    one, other = FrameSealer(KEY), FrameSealer(KEY)
    opener = FrameOpener(KEY)
    open_all(opener, one.seal("a"))
    other.seal("b")
    with pytest.raises(FrameError, match="authentication"):
        opener.open(other.seal("c"))                     # a later frame of the other one


def test_malformed_frames_are_refused() -> None:
    sealed = FrameSealer(KEY).seal("x")
    with pytest.raises(FrameError, match="salt"):
        FrameOpener(KEY).open(sealed[:4] + bytes([sealed[4] & ~1]) + sealed[5:])
    with pytest.raises(FrameError, match="length"):
        FrameOpener(KEY).open(b"\xff\xff\xff\xff" + b"\0" * 20)
    assert FrameOpener(KEY).open(sealed[:10]) is None      # incomplete: wait for more
