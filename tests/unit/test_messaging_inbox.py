"""One inbox's rules (node/messaging_inbox.py) and the client's own check (api/messaging.py):
at most once and in order per sender, bounded, a full inbox drops."""
from __future__ import annotations

import asyncio

from consensus_store.api.messaging import NodeEvent, SeenSenders, node_events
from consensus_store.node.messaging_inbox import MAX_INBOX_BYTES, MAX_INBOX_MESSAGES, Inbox


def envelope(sender: str, seq: int) -> dict[str, object]:
    return {"from": sender, "seq": seq, "to": {"name": "n"}, "message": seq}


def test_at_most_once_and_in_order_per_sender() -> None:
    async def run() -> None:
        inbox = Inbox(1, 0.0)
        assert inbox.offer(envelope("a", 1)) == "queued"
        assert inbox.offer(envelope("a", 1)) == "duplicate"       # a retried send
        assert inbox.offer(envelope("b", 1)) == "queued"          # another sender's own count
        assert inbox.offer(envelope("a", 3)) == "queued"
        assert inbox.offer(envelope("a", 2)) == "duplicate"       # overtaken: never out of order
        assert [(e["from"], e["seq"]) for e in inbox.take(10)] == [("a", 1), ("b", 1), ("a", 3)]
        assert inbox.take(10) == []
    asyncio.run(run())


def test_a_full_inbox_drops() -> None:
    async def run() -> None:
        inbox = Inbox(1, 0.0)
        for seq in range(1, MAX_INBOX_MESSAGES + 1):
            assert inbox.offer(envelope("a", seq)) == "queued"
        assert inbox.offer(envelope("a", MAX_INBOX_MESSAGES + 1)) == "full"
        assert len(inbox.take(MAX_INBOX_MESSAGES + 5)) == MAX_INBOX_MESSAGES
        # the dropped number was never taken: a resend of it is accepted once there is room
        assert inbox.offer(envelope("a", MAX_INBOX_MESSAGES + 1)) == "queued"
    asyncio.run(run())


def test_a_poll_wakes_on_a_message() -> None:
    async def run() -> None:
        inbox = Inbox(1, 0.0)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, inbox.offer, envelope("a", 1))
        started = loop.time()
        await inbox.wait(5.0)
        assert loop.time() - started < 4.0 and len(inbox.take(1)) == 1
    asyncio.run(run())


def test_the_client_checks_too() -> None:
    seen = SeenSenders()
    assert seen.fresh(envelope("a", 1)) and not seen.fresh(envelope("a", 1))
    assert seen.fresh(envelope("a", 5)) and not seen.fresh(envelope("a", 4))
    assert not seen.fresh({"from": 1, "seq": "x"})


def test_node_events() -> None:
    assert node_events({"a": True, "b": True}, {"a": True, "b": False}) == [
        NodeEvent("nodedown", "b")]
    assert node_events({"b": False}, {"b": True}) == [NodeEvent("nodeup", "b")]
    assert node_events({}, {"a": True, "b": False}) == [NodeEvent("nodeup", "a")]


def test_an_inbox_is_bounded_in_bytes_too() -> None:
    async def run() -> None:
        inbox = Inbox(1, 0.0)
        big = {**envelope("a", 1), "size": MAX_INBOX_BYTES - 10}
        assert inbox.offer(big) == "queued"
        assert inbox.offer({**envelope("a", 2), "size": 11}) == "full"
        assert inbox.offer({**envelope("a", 3), "size": 10}) == "queued"
        taken = inbox.take(5)
        assert [e["seq"] for e in taken] == [1, 3] and "size" not in taken[0]
        assert inbox.bytes == 0
    asyncio.run(run())
