"""The data dir's files: modes, syncs, typed errors, the snapshot and term/vote files.

Every file a node keeps is checked when it is read, so damage stops the node with one line that
names the file and the offset, instead of a node that silently starts empty or replays a changed
record.  Errors:
  - ``StorageCorrupt`` (a ``ConfigError``: ``consensus-store node`` exits 2): a file fails its
    checksum or cannot be read at start-up.  The node refuses to start.
  - ``StorageFailure``: a write, preallocation or fsync failed while running (disk full, I/O
    error).  Fatal: the node stops, and never retries an fsync (after a failed fsync the kernel
    may have dropped the dirty pages, so a later "successful" one proves nothing).

Files: ``raft.journal`` (journal.py), ``raft.journal.meta`` (term and vote), ``raft.snapshot``.
The data dir is 0700 and every file in it 0600 (the snapshot holds every value).

Private pysyncobj names used (pinned to 0.3.17): Serializer's ``_Serializer__fileName``,
``_Serializer__pid``, ``_Serializer__currentID`` and ``_Serializer__incomingTransmissionFile``.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

from pysyncobj import pickle as syncobj_pickle
from pysyncobj.serializer import Serializer

from consensus_store.errors import ConfigError, ConsensusStoreError

log = logging.getLogger("consensus_store.storage")

DIR_MODE = 0o700
FILE_MODE = 0o600
JOURNAL_NAME = "raft.journal"
META_NAME = "raft.journal.meta"
SNAPSHOT_NAME = "raft.snapshot"
TEMP_SUFFIXES = (".tmp", ".1.tmp", ".rewrite")


# What a snapshot or an old term/vote file may name: a snapshot reaches a follower from the
# leader, so even a holder of the peer secret must not get an arbitrary object built.
SNAPSHOT_CLASSES = frozenset({
    ("consensus_store.state.machine", "StateMachine"),
    ("pysyncobj.node", "TCPNode"), ("pysyncobj.node", "Node"),
    ("_codecs", "encode"),                      # how protocol 2 writes bytes
    ("__builtin__", "set"), ("builtins", "set"),
    ("__builtin__", "frozenset"), ("builtins", "frozenset"),
})


class _SnapshotUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SNAPSHOT_CLASSES:
            raise pickle.UnpicklingError(f"a snapshot may not hold {module}.{name}")
        return super().find_class(module, name)


def restricted_loads(data: bytes) -> Any:
    """Unpickle pysyncobj's snapshot or meta payload, building only ``SNAPSHOT_CLASSES``."""
    return _SnapshotUnpickler(io.BytesIO(data), encoding="latin1").load()


NOT_REPAIRABLE = ("not repairable: move this node's data dir aside and restart the node empty "
                  "to get the state from the leader, while the rest of the cluster is healthy")


class StorageCorrupt(ConfigError):
    """A data file is damaged: the node refuses to start (exit 2)."""

    code = "storage_corrupt"


class StorageFailure(ConsensusStoreError):
    """Writing or syncing a data file failed while running: the node must stop."""

    code = "storage_failure"


def describe_os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


# ---- files and directories ---------------------------------------------------------------------
def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir 0700 (tighten it if it exists) and make its files 0600."""
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(data_dir, DIR_MODE)
    for name in (JOURNAL_NAME, META_NAME, SNAPSHOT_NAME):
        for suffix in ("",) + TEMP_SUFFIXES:
            path = data_dir / (name + suffix)
            if path.exists():
                os.chmod(path, FILE_MODE)


def open_private(path: str, flags: int) -> int:
    """os.open with mode 0600 (and 0600 even if the file already existed)."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def fsync_fd(fd: int, path: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise StorageFailure(f"fsync of {path} failed: {describe_os_error(exc)}") from exc


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fsync_fd(fd, path)
    finally:
        os.close(fd)


def fsync_directory_of(path: str) -> None:
    """Make a file's creation or rename in its directory durable."""
    fsync_path(os.path.dirname(path) or ".")


def write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def replace_file(path: str, data: bytes, *, sync: bool) -> None:
    """Write ``path`` through a 0600 temp file renamed over it (synced first if ``sync``)."""
    temp = path + ".tmp"
    try:
        fd = open_private(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            write_all(fd, data, 0)
            if sync:
                fsync_fd(fd, temp)
        finally:
            os.close(fd)
        os.replace(temp, path)
        if sync:
            fsync_directory_of(path)
    except (OSError, StorageFailure) as exc:
        try:
            os.unlink(temp)             # a half-written temp file only takes space
        except OSError:
            pass
        if isinstance(exc, StorageFailure):
            raise
        raise StorageFailure(f"cannot write {path}: {describe_os_error(exc)}") from exc


# ---- fatal failures while running ----------------------------------------------------------------
_failure_handler: Callable[[StorageFailure], None] | None = None


def set_failure_handler(handler: Callable[[StorageFailure], None] | None) -> None:
    """What the process does after a fatal storage failure (``consensus-store node`` stops)."""
    global _failure_handler
    _failure_handler = handler


def report_failure(failure: StorageFailure) -> None:
    log.critical("stopping: %s (nothing after this point was acknowledged)", failure.message)
    if _failure_handler is not None:
        _failure_handler(failure)


# ---- term and vote ------------------------------------------------------------------------------
META_MAGIC = b"csmeta1\n"


class MetaFile:
    """currentTerm, votedForNodeId and the commit index, checksummed (old pickled files are
    read, and rewritten in the new format at the next change)."""

    def __init__(self, path: str, *, sync: bool) -> None:
        self.path = path
        self.sync = sync

    def load(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StorageCorrupt(f"{self.path}: cannot read the term/vote file: "
                                 f"{describe_os_error(exc)}") from None
        if data.startswith(META_MAGIC):
            header = len(META_MAGIC) + 4
            (stored,) = struct.unpack_from("<I", data, len(META_MAGIC)) if len(data) >= header \
                else (None,)
            body = data[header:]
            if stored is None or zlib.crc32(body) != stored:
                raise StorageCorrupt(f"{self.path}: term/vote file damaged at offset 0: "
                                     f"fails its checksum ({NOT_REPAIRABLE})")
            return json.loads(body)
        try:
            meta = restricted_loads(data)          # written by pysyncobj's MetaStorer
        except Exception:  # noqa: BLE001 - any garbage
            meta = None
        if not isinstance(meta, dict):
            raise StorageCorrupt(f"{self.path}: term/vote file damaged at offset 0: not "
                                 f"readable ({NOT_REPAIRABLE})")
        return meta

    def store(self, meta: dict[str, Any]) -> None:
        body = json.dumps(meta, sort_keys=True).encode()
        replace_file(self.path, META_MAGIC + struct.pack("<I", zlib.crc32(body)) + body,
                     sync=self.sync)


# ---- snapshot -----------------------------------------------------------------------------------
SNAPSHOT_MAGIC = b"cssnap1\n"
SNAPSHOT_HEADER = struct.Struct("<QI")             # payload length, CRC-32 of the payload
SNAPSHOT_PREFIX = len(SNAPSHOT_MAGIC) + SNAPSHOT_HEADER.size
GZIP_MAGIC = b"\x1f\x8b"


SNAPSHOT_WRITE_BUFFER = 1 << 20
SNAPSHOT_PICKLE_PROTOCOL = 2            # pysyncobj's (its pickle.dump)


class _YieldingPickler(pickle.Pickler):
    """The C pickler holds the GIL for a whole dump (seconds for a 1M-key state), which stops
    the node's loop while a snapshot is written on another thread.  A ``persistent_id`` that is
    Python code runs for every object, so the interpreter can switch threads meanwhile; it
    returns None, so the bytes are the same."""

    def persistent_id(self, obj: Any) -> None:
        return None


def encode_snapshot(state: Any) -> bytes:
    """Header + gzip'ed pickle (pysyncobj's own payload, so old snapshots still load)."""
    buffer = io.BytesIO()
    # Level 1: gzip's default (9) took 14.5 s for a 1M-key state against 0.5 s, for the same
    # size; the buffer spares gzip pickle's many small writes.
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=1) as compressed:
        buffered = io.BufferedWriter(compressed, SNAPSHOT_WRITE_BUFFER)   # type: ignore[arg-type]
        _YieldingPickler(buffered, SNAPSHOT_PICKLE_PROTOCOL).dump(state)
        buffered.flush()
    payload = buffer.getvalue()
    return SNAPSHOT_MAGIC + SNAPSHOT_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def snapshot_payload(path: str, data: bytes) -> bytes:
    """The verified gzip payload of a snapshot file's bytes; StorageCorrupt if damaged."""
    def damaged(offset: int, reason: str) -> StorageCorrupt:
        return StorageCorrupt(f"{path}: snapshot damaged at offset {offset}: {reason} "
                              f"({NOT_REPAIRABLE})")
    if data.startswith(SNAPSHOT_MAGIC):
        if len(data) < SNAPSHOT_PREFIX:
            raise damaged(len(data), "header cut short")
        length, crc = SNAPSHOT_HEADER.unpack_from(data, len(SNAPSHOT_MAGIC))
        payload = data[SNAPSHOT_PREFIX:]
        if len(payload) != length:
            raise damaged(min(len(data), SNAPSHOT_PREFIX + length),
                          f"{len(payload)} bytes of state where the header says {length}")
        if zlib.crc32(payload) != crc:
            raise damaged(SNAPSHOT_PREFIX, "checksum mismatch")
        return payload
    if data.startswith(GZIP_MAGIC):          # an old snapshot: gzip's own CRC-32 and length
        try:
            gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise damaged(0, f"old-format snapshot fails gzip's check ({exc})") from None
        return data
    raise damaged(0, "not a snapshot (unknown header)" if data else "empty file")


def load_snapshot(path: str) -> Any:
    """The state tuple pysyncobj saved, verified; StorageCorrupt if damaged or unreadable."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise StorageCorrupt(f"{path}: cannot read the snapshot: "
                             f"{describe_os_error(exc)}") from None
    payload = snapshot_payload(path, data)
    try:
        return restricted_loads(gzip.decompress(payload))
    except Exception as exc:  # noqa: BLE001 - checksum fine but not loadable
        raise StorageCorrupt(f"{path}: snapshot passes its checksum but does not load "
                             f"({type(exc).__name__}: {exc})") from None


class CheckedSerializer(Serializer):
    """pysyncobj's Serializer with checksummed, synced, 0600 snapshot files.  Installed per
    instance (class swap) on a SyncObj built with ``fullDumpFile``, ``useFork=False`` and no
    custom serializer, whose behaviour it otherwise keeps (including sending the file's bytes
    to followers, who so check the checksum of what they received)."""

    preloaded: Any = None      # the state loaded at start-up, handed to pysyncobj once

    def _path(self) -> str:
        return self._Serializer__fileName

    def serialize(self, data: Any, id: int) -> None:   # noqa: A002 - pysyncobj's name
        if self._Serializer__pid != 0:
            return
        self._Serializer__currentID = id
        # A failure raises StorageFailure, which stops the node like a journal write would
        # (the journal still holds every entry: it is only cut after a snapshot succeeded).
        try:
            encoded = encode_snapshot(data)
        except Exception:  # noqa: BLE001 - as pysyncobj: the snapshot fails, the node goes on
            log.exception("cannot serialize the state for a snapshot")
            self._Serializer__pid = -2
            return
        replace_file(self._path(), encoded, sync=True)
        self._Serializer__pid = -1

    def deserialize(self) -> Any:
        if self.preloaded is not None:
            data, self.preloaded = self.preloaded, None
            return data
        return load_snapshot(self._path())

    def setTransmissionData(self, data: Any) -> bool:
        """A follower receiving a snapshot: written to a 0600 temp file, checked and synced
        before it replaces the old one (and so before pysyncobj acknowledges it)."""
        if data is None:
            return False
        chunk, is_first, is_last = data
        path = self._path()
        temp = path + ".1.tmp"
        incoming: int | None = self._Serializer__incomingTransmissionFile
        try:
            if is_first:
                if incoming is not None:
                    os.close(incoming)
                incoming = open_private(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                self._Serializer__incomingTransmissionFile = incoming
            elif incoming is None:
                return False
            os.write(incoming, syncobj_pickle.to_bytes(chunk))
            if not is_last:
                return False
            fsync_fd(incoming, temp)
            os.close(incoming)
            self._Serializer__incomingTransmissionFile = None
            with open(temp, "rb") as file:
                snapshot_payload(temp, file.read())
            os.replace(temp, path)
            fsync_directory_of(path)
            return True
        except StorageCorrupt as exc:     # damaged on the way: not acknowledged, sent again
            self._drop_incoming()
            log.error("discarding a snapshot received from the leader: %s", exc.message)
            return False
        except OSError as exc:            # disk full or I/O error: fatal, like the journal's
            self._drop_incoming()
            raise StorageFailure(f"cannot store a snapshot received from the leader in "
                                 f"{temp}: {describe_os_error(exc)}") from exc
        except StorageFailure:
            self._drop_incoming()
            raise

    def _drop_incoming(self) -> None:
        incoming = self._Serializer__incomingTransmissionFile
        self._Serializer__incomingTransmissionFile = None
        if incoming is not None:
            try:
                os.close(incoming)
            except OSError:
                pass


def make_checked(serializer: Serializer) -> CheckedSerializer:
    serializer.__class__ = CheckedSerializer
    assert isinstance(serializer, CheckedSerializer)
    return serializer
