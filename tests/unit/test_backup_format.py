"""The backup file (backup_file.py): a round trip gives the machine's plain state back, and
every kind of damage is refused with the line it is on."""
from __future__ import annotations

import hashlib
import io

import pytest

from consensus_store import backup_file as backup
from consensus_store.state import StateMachine
from consensus_store.state.commands import encode_command
from consensus_store.state.digest import parts_of


def machine_with_data() -> StateMachine:
    machine = StateMachine()
    index = 1
    commands = [{"op": "put", "key": f"k/{i:04d}", "value": {"i": i, "text": "a\nb\u2028é"}}
                for i in range(1200)]
    commands += [{"op": "delete", "key": "k/0003"}, {"op": "put", "key": "k/0001", "value": 2},
                 {"op": "session_open", "ttl": 30, "node": "n1", "key_hash": "ab" * 32},
                 {"op": "put", "key": "eph", "value": 1, "session": 1204, "admin": True},
                 {"op": "put", "key": "again", "value": 1, "cid": "c1", "rid": 1}]
    for command in commands:
        index += 1
        machine.apply(encode_command({"v": 2, **command}), index)
    return machine


def encoded(machine: StateMachine) -> bytes:
    state = machine.plain_state()
    header = backup.header_for(state, "2026-12-07T00:00:00Z", "n1")
    pieces = list(backup.encode(state, header))
    assert len(pieces) > 3              # written in pieces, not as one string
    return b"".join(pieces)


def resealed(data: bytes) -> bytes:
    """``data`` with a checksum line that matches it (a file written wrong, not damaged)."""
    body = data[:data.rindex(b"sha256 ")]
    return body + b"sha256 " + hashlib.sha256(body).hexdigest().encode() + b"\n"


def decode(data: bytes) -> tuple[backup.BackupHeader, dict]:
    return backup.decode(io.BytesIO(data), "test.csb")


def test_round_trip_gives_the_same_state() -> None:
    machine = machine_with_data()
    assert machine.keyspace.key_session and machine.answers.clients and machine.sessions.sessions
    header, state = decode(encoded(machine))
    assert header.keys == len(machine) and header.sessions == 1 and header.clients == 1
    assert header.applied_index == machine.applied_index
    assert header.revision == machine.revision
    restored = StateMachine()
    restored.__setstate__(state)
    assert parts_of(restored.plain_state()) == parts_of(machine.plain_state())
    assert restored.get("k/0001") == machine.get("k/0001")
    assert backup.verify(io.BytesIO(encoded(machine)), "test.csb") == header


@pytest.mark.parametrize("damage, reason", [
    (lambda d: d.replace(b'"i":7,', b'"i":8,', 1), "SHA-256 mismatch"),
    (lambda d: d[:len(d) // 2], "cut short"),
    (lambda d: d[:d.rindex(b"sha256 ")], "truncated"),
    (lambda d: d[:-10], "bad checksum line"),
    (lambda d: d + b"extra\n", "after the checksum"),
    (lambda d: b"nope\n" + d, "not a consensus-store backup"),
    (lambda d: d.replace(b'"format":1', b'"format":9', 1), "unknown format"),
    (lambda d: resealed(d.replace(b'"keys":', b'"keys":1', 1)), "where the header says"),
    (lambda d: d.replace(b'["kv","k/0005"', b'["kv","k/0004"', 1), "out of order"),
    (lambda d: b"", "no header"),
])
def test_damage_is_refused(damage, reason) -> None:
    data = encoded(machine_with_data())
    with pytest.raises(backup.BackupDamaged, match=reason) as caught:
        decode(damage(data))
    assert "test.csb" in caught.value.message and "\n" not in caught.value.message
    with pytest.raises(backup.BackupDamaged, match=reason):      # the client's check
        backup.verify(io.BytesIO(damage(data)), "test.csb")
