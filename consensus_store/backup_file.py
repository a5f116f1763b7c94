"""The backup file: a consistent copy of the replicated state, one JSON record per line.

    consensus-store-backup\\n                         magic line
    {"format": 1, "applied_index": A, "revision": R, "keys": N, "sessions": S,
     "clients": C, "created": "2026-12-07T11:30:00Z", "node": "n2"}\\n     header
    ["kv", key, value, create_revision, mod_revision, version, session]\\n    x N, key order
    ["session", id, ttl_s, node, [keys...], key_hash]\\n                      x S
    ["client", client_id, low_water, [[request_id, answer]...]]\\n            x C
    sha256 <64 hex digits>\\n                          over every byte before this line

The state is the plain state of ``StateMachine.plain_state`` (coordination records are keys
under the reserved prefix, so they are ``kv`` lines too); ``decode`` gives it back without its
``format`` key, which the restoring node adds.  ``encode`` yields the file in pieces (never the
whole state as one string); ``decode`` reads it line by line and refuses anything damaged,
truncated or reordered (``BackupDamaged``).  Pure, and outside ``state/``: the clients read it
too, and import nothing of the state machine.  The caller passes the time and does the I/O.
docs/backup.md documents the format.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator

from consensus_store.errors import ConfigError

MAGIC = b"consensus-store-backup\n"
FORMAT_VERSION = 1
TRAILER_PREFIX = b"sha256 "
LINES_PER_PIECE = 500         # records encoded per piece that ``encode`` yields
_HEX64 = re.compile(rb"[0-9a-f]{64}\n")
_encode_json = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class BackupDamaged(ConfigError):
    """A backup file fails its checks (damaged, truncated, not a backup): nothing restored."""

    code = "backup_damaged"


@dataclass(frozen=True)
class BackupHeader:
    format: int
    applied_index: int        # the Raft index the copy is consistent at
    revision: int             # the key space's revision (the last index that changed a key)
    keys: int
    sessions: int
    clients: int              # at-most-once answer tables
    created: str              # ISO 8601 UTC, the saving node's clock
    node: str                 # the node that took the copy

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def header_for(state: dict[str, Any], created: str, node: str) -> BackupHeader:
    return BackupHeader(FORMAT_VERSION, state["applied_index"], state["keyspace"]["revision"],
                        len(state["keyspace"]["kv"]), len(state["sessions"]),
                        len(state["clients"]), created, node)


def encode(state: dict[str, Any], header: BackupHeader) -> Iterator[bytes]:
    """The backup of plain ``state`` in pieces of about LINES_PER_PIECE records, the SHA-256
    trailer last."""
    hasher = hashlib.sha256()

    def hashed(piece: bytes) -> bytes:
        hasher.update(piece)
        return piece

    yield hashed(MAGIC + _encode_json(header.to_json()).encode() + b"\n")
    for batch in _batches(_record_lines(state)):
        yield hashed(batch)
    yield TRAILER_PREFIX + hasher.hexdigest().encode() + b"\n"


def _record_lines(state: dict[str, Any]) -> Iterator[list[Any]]:
    keyspace = state["keyspace"]
    sessions_of = dict(keyspace.get("key_session", []))
    for key, record in keyspace["kv"]:
        yield ["kv", key, *record, sessions_of.get(key)]
    for session in state["sessions"]:
        yield ["session", *session]
    for client in state["clients"]:
        yield ["client", *client]


def _batches(lines: Iterator[list[Any]]) -> Iterator[bytes]:
    batch: list[str] = []
    for line in lines:
        batch.append(_encode_json(line))
        if len(batch) >= LINES_PER_PIECE:
            yield ("\n".join(batch) + "\n").encode()
            batch = []
    if batch:
        yield ("\n".join(batch) + "\n").encode()


def decode(lines: Iterable[bytes], source: str) -> tuple[BackupHeader, dict[str, Any]]:
    """(header, plain state) of a backup read as binary lines; BackupDamaged names ``source``
    and the line of the first problem."""
    reader = _Reader(source, keep=True)
    for line in lines:
        reader.feed(line)
    return reader.finish()


def verify(lines: Iterable[bytes], source: str) -> BackupHeader:
    """``decode``'s checks, keeping no record (a client checking what it downloaded)."""
    reader = _Reader(source, keep=False)
    for line in lines:
        reader.feed(line)
    return reader.finish()[0]


class _Reader:
    def __init__(self, source: str, keep: bool) -> None:
        self.source = source
        self.keep = keep
        self.counts = [0, 0, 0]   # kv, session, client records
        self.last_key: str | None = None
        self.hasher = hashlib.sha256()
        self.number = 0
        self.header: BackupHeader | None = None
        self.kv: list[list[Any]] = []
        self.key_session: list[tuple[str, int]] = []
        self.sessions: list[list[Any]] = []
        self.clients: list[list[Any]] = []
        self.trailer: bytes | None = None
        self.section = 0          # kv, then session, then client lines

    def damaged(self, reason: str) -> BackupDamaged:
        return BackupDamaged(f"{self.source}: not a usable backup: line {self.number}: {reason}")

    def feed(self, line: bytes) -> None:
        self.number += 1
        if self.trailer is not None:
            raise self.damaged("data after the checksum line")
        if self.number == 1:
            if line != MAGIC:
                raise self.damaged("not a consensus-store backup (unknown first line)")
        elif line.startswith(TRAILER_PREFIX):
            self.trailer = line[len(TRAILER_PREFIX):]
            return
        elif not line.endswith(b"\n"):
            raise self.damaged("cut short (no end of line): the file is truncated")
        elif self.number == 2:
            self.header = self._header(line)
        else:
            self._record(line)
        self.hasher.update(line)

    def _json(self, line: bytes) -> Any:
        try:
            return json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise self.damaged(f"not JSON ({exc})") from None

    def _header(self, line: bytes) -> BackupHeader:
        raw = self._json(line)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_VERSION:
            raise self.damaged(f"header of an unknown format (this version reads format "
                               f"{FORMAT_VERSION})")
        try:
            header = BackupHeader(**raw)
        except TypeError as exc:
            raise self.damaged(f"bad header ({exc})") from None
        counts = (header.applied_index, header.revision, header.keys, header.sessions,
                  header.clients)
        if not all(_is_count(n) for n in counts) or header.revision > header.applied_index:
            raise self.damaged("bad header (counts and indexes are integers >= 0, revision "
                               "<= applied_index)")
        return header

    def _record(self, line: bytes) -> None:
        record = self._json(line)
        kind = record[0] if isinstance(record, list) and record else None
        order = {"kv": 0, "session": 1, "client": 2}.get(kind)   # type: ignore[arg-type]
        if order is None or order < self.section:
            raise self.damaged(f"unexpected record {str(record)[:60]}")
        self.section = order
        if kind == "kv":
            self._kv(record)
        elif kind == "session":
            if len(record) != 6 or not _is_count(record[1]) or not isinstance(record[4], list):
                raise self.damaged("bad session record")
            self._keep(1, self.sessions, record[1:])
        else:
            if len(record) != 4 or not isinstance(record[1], str) \
                    or not isinstance(record[3], list):
                raise self.damaged("bad client record")
            self._keep(2, self.clients, record[1:])

    def _kv(self, record: list[Any]) -> None:
        assert self.header is not None
        if len(record) != 7 or not isinstance(record[1], str) \
                or not all(_is_count(n) for n in record[3:6]) \
                or not (record[6] is None or _is_count(record[6])):
            raise self.damaged("bad kv record")
        key = record[1]
        if self.last_key is not None and key <= self.last_key:
            raise self.damaged(f"key {key[:60]!r} out of order")
        if not record[3] <= record[4] <= self.header.revision:
            raise self.damaged(f"key {key[:60]!r}: revisions out of range")
        self.last_key = key
        self._keep(0, self.kv, [key, record[2:6]])
        if record[6] is not None and self.keep:
            self.key_session.append((key, record[6]))

    def _keep(self, kind: int, records: list[Any], record: Any) -> None:
        self.counts[kind] += 1
        if self.keep:
            records.append(record)

    def finish(self) -> tuple[BackupHeader, dict[str, Any]]:
        if self.header is None:
            raise self.damaged("no header: the file is truncated")
        if self.trailer is None:
            raise self.damaged("no checksum line at the end: the file is truncated")
        if not _HEX64.fullmatch(self.trailer):
            raise self.damaged("bad checksum line")
        if self.trailer[:64].decode() != self.hasher.hexdigest():
            raise self.damaged("SHA-256 mismatch: the file is damaged")
        header = self.header
        found = tuple(self.counts)
        if found != (header.keys, header.sessions, header.clients):
            raise self.damaged(f"holds {found[0]} keys, {found[1]} sessions, {found[2]} "
                               f"clients where the header says {header.keys}, "
                               f"{header.sessions}, {header.clients}")
        state = {"applied_index": header.applied_index,
                 "keyspace": {"revision": header.revision, "kv": self.kv,
                              "key_session": self.key_session},
                 "sessions": self.sessions, "clients": self.clients}
        return header, state


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
