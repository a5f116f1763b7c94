"""``POST /v1/snapshot``: this node's state as a backup file (backup_file.py), streamed.

The copy is ``Engine.plain_state`` (state/chunked_copy.py) on a worker thread: consistent at one
applied index, apply waits a chunk at most.  With ``consistency: "linearizable"`` (the default)
the node first waits for a ReadIndex round, so the copy holds every write acknowledged before
the request; ``"local"`` copies what this node has now (a node cut off from the majority: the
etcd way).  The file is encoded a few hundred records at a time while it is sent, so a large
state is never one string; only the copy's references are held meanwhile.  The native protocol
cannot stream: there the op is refused (``http_only``).
"""
from __future__ import annotations

import asyncio
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Coroutine, Iterator

from consensus_store import backup_file as backup
from consensus_store.config import ClientToken
from consensus_store.errors import InvalidRequest
from consensus_store.node import validate
from consensus_store.node.engine.heap import GcPause
from consensus_store.node.engine.storage import fsync_directory_of, fsync_fd, open_private

if TYPE_CHECKING:
    from consensus_store.node.service import KVService

CONTENT_TYPE = b"application/vnd.consensus-store.backup"
CONSISTENCIES = ("linearizable", "local")
SEND_BYTES = 256 * 1024      # bytes gathered per send


@dataclass
class SnapshotStream:
    header: backup.BackupHeader
    pieces: Iterator[bytes]
    gc_pause: GcPause

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file in sends of about SEND_BYTES; each send lets the loop run."""
        try:
            gathered: list[bytes] = []
            size = 0
            for piece in self.pieces:
                gathered.append(piece)
                size += len(piece)
                if size >= SEND_BYTES:
                    yield b"".join(gathered)
                    gathered, size = [], 0
                    await asyncio.sleep(0)
            if gathered:
                yield b"".join(gathered)
        finally:
            self.gc_pause.release()


async def open_stream(service: "KVService", body: dict[str, Any]) -> SnapshotStream:
    """The backup of this node's state (after a ReadIndex round unless ``local``)."""
    unknown = set(body) - {"consistency", "timeout"}
    if unknown:
        raise InvalidRequest(f"snapshot takes 'consistency' and 'timeout', not "
                             f"{sorted(unknown)[0]!r:.60}")
    consistency = body.get("consistency", "linearizable")
    if consistency not in CONSISTENCIES:
        raise InvalidRequest(f"'consistency' must be one of {', '.join(CONSISTENCIES)}")
    if consistency == "linearizable":
        await service.engine.barrier(service.timeout_s(validate.request_timeout(body)))
    paused = GcPause()
    try:
        state = await asyncio.to_thread(service.engine.plain_state)
    except BaseException:
        paused.release()
        raise
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = backup.header_for(state, created, service.config.id)
    return SnapshotStream(header, backup.encode(state, header), paused)


async def http_only(body: dict[str, Any], timeout: float | None = None, *,
                    caller: ClientToken | None = None) -> dict[str, Any]:
    """The op's handler elsewhere than HTTP (native protocol, embedded calls)."""
    raise InvalidRequest("the snapshot is a stream: POST /v1/snapshot on a node's HTTP API "
                         "(Client.snapshot_save, consensus-store snapshot save)")


async def send_stream(send: Any, chunks: AsyncIterator[bytes]) -> None:
    """An ASGI answer without a length (chunked), stopped if the client leaves (uvicorn's
    ``send`` then drops what it is given: encoding on would waste the copy's work)."""
    cycle = getattr(send, "__self__", None)
    try:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE)]})
        async for chunk in chunks:
            if getattr(cycle, "disconnected", False):
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await chunks.aclose()       # type: ignore[attr-defined] - an async generator


def save_to_file(service: "KVService", path: Path, consistency: str, timeout: float,
                 run: Callable[[Coroutine[Any, Any, SnapshotStream], float], SnapshotStream]
                 ) -> backup.BackupHeader:
    """The embedded Node's save: the copy on the node's loop (``run``), the encoding and the
    writing in the caller's thread; ``path`` appears whole or not at all."""
    stream = run(open_stream(service, {"consistency": consistency, "timeout": timeout}),
                 timeout + 60.0)
    try:
        _write_file(stream, str(path))
    finally:
        stream.gc_pause.release()
    return stream.header


def _write_file(stream: SnapshotStream, path: str) -> None:
    partial = path + ".part"
    fd = open_private(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            for piece in stream.pieces:
                out.write(piece)
        fsync_fd(fd, partial)
        os.replace(partial, path)
    except BaseException:
        try:
            os.unlink(partial)
        except FileNotFoundError:
            pass
        raise
    finally:
        os.close(fd)
    fsync_directory_of(path)
