"""A message to a receiver this node has not applied yet: "not found" only once a linearizable
read confirms it (node/messaging_ops.py), without a real cluster."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consensus_store.errors import NotFound
from consensus_store.node import messaging_ops


class LaggingNode:
    """A service whose replica learns of member 'bob' only at a linearizable read."""

    def __init__(self, bob_exists: bool = True) -> None:
        self.settled: list[str] = []
        self.applied_bob = False
        self.bob_exists = bob_exists
        self.messaging = self

    async def settle_read(self, body: dict[str, Any], timeout: float | None = None) -> None:
        self.settled.append(body["consistency"])
        if body["consistency"] == "linearizable" and self.bob_exists:
            self.applied_bob = True

    async def send(self, body: dict[str, Any], *, many: bool) -> dict[str, Any]:
        if not self.applied_bob:
            raise NotFound("no member 'bob' in group 'chat'")
        return {"delivered": True}


def send(node: LaggingNode) -> dict[str, Any]:
    handler = messaging_ops.handlers(node)["message_send"]  # type: ignore[arg-type]
    return asyncio.run(handler({"group": "chat", "member": "bob", "message": 1}))


def test_a_receiver_not_applied_here_yet_is_found_after_a_linearizable_read() -> None:
    node = LaggingNode()
    assert send(node) == {"delivered": True}
    assert node.settled == ["session", "linearizable"]


def test_a_receiver_that_does_not_exist_is_not_found_after_the_confirmation() -> None:
    node = LaggingNode(bob_exists=False)
    with pytest.raises(NotFound):
        send(node)
    assert node.settled == ["session", "linearizable"]
