"""Sealed peer frames (node/peer_frames.py): what travels on the raft port."""
from __future__ import annotations

import pytest

from consensus_store.node.peer_frames import (COMPRESS_ABOVE, FrameError, FrameOpener,
                                              FrameSealer, master_key)

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
    assert received == sent and buffer == b""


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
