"""One session's inbox on the node it lives on: a bounded queue of envelopes, with the
per-sender sequence numbers that make delivery at most once and in order.

An envelope is ``{"from": sender id, "seq": n, "to": {...}, "message": value, "call"?: id,
"size": bytes}`` (``size``: the message's JSON size, measured once by the node that took the
send; it bounds the inbox in bytes and is not handed to the receiver).
A sender numbers its messages 1, 2, 3... (one counter per client, across all receivers); an
inbox accepts an envelope only if its ``seq`` is above the last one it took from that sender,
so a retried send is never queued twice and a message overtaken by a later one is dropped,
never delivered out of order.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Any

MAX_INBOX_MESSAGES = 1000      # a full inbox drops (and counts) what arrives
MAX_INBOX_BYTES = 8 * 1024 * 1024   # ... as does one holding this many message bytes
MAX_SENDERS_REMEMBERED = 10000  # per inbox; the oldest sender is forgotten first


class Inbox:
    __slots__ = ("session", "queue", "last_seq", "last_poll", "polling", "bytes", "_ready")

    def __init__(self, session: int, now: float) -> None:
        self.session = session
        self.queue: deque[dict[str, Any]] = deque()
        self.last_seq: OrderedDict[str, int] = OrderedDict()
        self.last_poll = now
        self.polling = 0            # polls waiting right now (an inbox being read is alive)
        self.bytes = 0              # the queued messages' JSON size (the envelopes' "size")
        self._ready = asyncio.Event()

    def offer(self, envelope: dict[str, Any]) -> str:
        """"queued", "duplicate" (this seq or a later one from the sender came already) or
        "full"."""
        sender, seq = envelope["from"], envelope["seq"]
        if self.last_seq.get(sender, 0) >= seq:
            return "duplicate"
        size = envelope.get("size", 0)
        if len(self.queue) >= MAX_INBOX_MESSAGES or self.bytes + size > MAX_INBOX_BYTES:
            return "full"
        self.bytes += size
        self.last_seq[sender] = seq
        self.last_seq.move_to_end(sender)
        if len(self.last_seq) > MAX_SENDERS_REMEMBERED:
            self.last_seq.popitem(last=False)
        self.queue.append(envelope)
        self._ready.set()
        return "queued"

    def take(self, limit: int) -> list[dict[str, Any]]:
        taken = []
        while self.queue and len(taken) < limit:
            envelope = self.queue.popleft()
            self.bytes -= envelope.pop("size", 0)
            taken.append(envelope)
        if not self.queue:
            self._ready.clear()
        return taken

    async def wait(self, seconds: float) -> None:
        if self.queue or seconds <= 0:
            return
        try:
            async with asyncio.timeout(seconds):
                await self._ready.wait()
        except TimeoutError:
            pass

    def idle_for(self, now: float) -> float:
        return 0.0 if self.polling else now - self.last_poll
