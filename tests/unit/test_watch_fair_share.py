"""Many streams behind on a busy prefix must not hold the node's loop: the write path (here a
writer applying entries at a fixed offered rate, as Raft does on the same loop) runs in every
loop pass, and the streams still get every event once the writes stop.

The streams are watch_stream's own send loop over a uvicorn-like send (it does not wait while
the reader takes the bytes), against a real WatchHub.  Before the hub gave turns, a woken
stream sent its whole backlog in one go: each pass took the streams x the entries applied in
the last one, so the passes grew without bound (seconds here, 32 puts timed out in the bench).
"""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from consensus_store.node.watch import WatchHub
from consensus_store.node.watch_stream import _stream

STREAMS = 1000
WRITE_RATE = 10_000          # events per second offered, whatever the passes take
WRITE_SECONDS = 1.5
LONGEST_PASS_S = 0.2         # asserted; measured ~0.01 s, and 3.5-3.9 s before turns
CATCH_UP_S = 40.0            # generous: 2 shared cores


class _Flow:
    write_paused = False


class _Reader:
    """The request cycle as ``_stream`` sees it: ``send`` returns at once (the socket takes it)."""

    def __init__(self) -> None:
        self.flow = _Flow()
        self.events = 0

    async def send(self, message: dict[str, Any]) -> None:
        self.events += message.get("body", b"").count(b'"mod_revision"')


def _put(revision: int) -> dict[str, Any]:
    return {"type": "put", "kv": {"key": f"hot/{revision % 16}", "value": "v" * 40,
                                  "create_revision": 1, "mod_revision": revision,
                                  "version": revision}}


async def _scenario() -> tuple[float, int, int, list[int]]:
    loop = asyncio.get_running_loop()
    hub = WatchHub(loop.call_soon)
    service = SimpleNamespace(watches=hub)
    query = SimpleNamespace(prefix="hot/", prev_kv=False, heartbeat=30.0, after=0)
    left = loop.create_future()                  # the readers never leave
    readers = [_Reader() for _ in range(STREAMS)]
    streams = [asyncio.create_task(_stream(service, query, reader.send, left, [], 0))
               for reader in readers]
    while len(hub._waiters.get("hot/", ())) < STREAMS:      # all caught up and waiting
        await asyncio.sleep(0.01)
    # The writer: once per loop pass, the entries due at the offered rate (a slow pass means
    # more entries next time, as puts pile up at a busy node).
    applied = passes = 0
    longest = 0.0
    started = last = time.perf_counter()
    while True:
        await asyncio.sleep(0)                   # one loop pass
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
        passes += 1
        if now - started > WRITE_SECONDS or longest > 1.0:
            break
        due = int((now - started) * WRITE_RATE)
        while applied < due:
            applied += 1
            hub.on_events(applied, [_put(applied)])
    deadline = time.monotonic() + CATCH_UP_S
    while time.monotonic() < deadline and any(r.events < applied for r in readers):
        await asyncio.sleep(0.05)
    left.set_result(None)
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    return longest, passes, applied, sorted({r.events for r in readers})


def test_streams_behind_on_a_busy_prefix_leave_every_loop_pass_to_the_writes() -> None:
    longest, passes, applied, received = asyncio.run(_scenario())
    assert longest < LONGEST_PASS_S, f"a loop pass took {longest:.3f} s ({passes} passes)"
    assert applied > WRITE_RATE * WRITE_SECONDS * 0.9, (applied, passes)
    assert received == [applied], "every stream gets every event once the writes stop"
