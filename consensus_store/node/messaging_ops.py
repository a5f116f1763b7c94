"""The service's handlers of the messaging ops (``protocol.OPS``: message_*, inbox_poll) and of
``nodes`` (every live member, up or down as the leader sees its peers, and its replicas).

``handlers(service)`` is called from ``KVService._handlers``; each handler finds the node's
``MessageHub`` (``service.messaging``, set by ``server.Node``) when it runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from consensus_store.config import ClientToken
from consensus_store.errors import NotFound, NotLeader, Unavailable
from consensus_store.node.membership_ops import replica_row

if TYPE_CHECKING:
    from consensus_store.node.messaging import MessageHub
    from consensus_store.node.service import KVService

Handler = Callable[..., Awaitable[dict[str, Any]]]


def handlers(service: "KVService") -> dict[str, Handler]:
    def hub() -> "MessageHub":
        messages = getattr(service, "messaging", None)
        if messages is None:
            raise Unavailable("messaging is not running on this node")
        return messages

    async def settled(body: dict[str, Any]) -> None:
        # Receivers and sessions are read from this replica: let it catch up with what the
        # client has seen (a member that just joined through another node is found).
        await service.settle_read({"consistency": "session", "min_index": body.get("min_index",
                                                                                    0)})

    async def confirmed(body: dict[str, Any],
                        run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        # A receiver that joined or registered through another client a moment ago may not be
        # applied here yet: "not found" is answered only once a linearizable read confirms it.
        # Receivers are looked up before anything is delivered, so the second try is safe.
        await settled(body)
        try:
            return await run()
        except NotFound:
            await service.settle_read({"consistency": "linearizable"})
            return await run()

    async def send(body: dict[str, Any], timeout: float | None = None, *,
                   caller: ClientToken | None = None) -> dict[str, Any]:
        return await confirmed(body, lambda: hub().send(body, many=False))

    async def broadcast(body: dict[str, Any], timeout: float | None = None, *,
                        caller: ClientToken | None = None) -> dict[str, Any]:
        return await confirmed(body, lambda: hub().send(body, many=True))

    async def call(body: dict[str, Any], timeout: float | None = None, *,
                   caller: ClientToken | None = None) -> dict[str, Any]:
        return await confirmed(body, lambda: hub().call(body))

    async def reply(body: dict[str, Any], timeout: float | None = None, *,
                    caller: ClientToken | None = None) -> dict[str, Any]:
        await settled(body)          # a session opened through another node is known here
        return await hub().reply(body, caller)

    async def poll(body: dict[str, Any], timeout: float | None = None, *,
                   caller: ClientToken | None = None) -> dict[str, Any]:
        await settled(body)
        return await hub().poll(body, caller)

    async def forward(body: dict[str, Any], timeout: float | None = None, *,
                      caller: ClientToken | None = None) -> dict[str, Any]:
        return await hub().forwarded(body, caller)

    async def nodes(body: dict[str, Any], timeout: float | None = None, *,
                    caller: ClientToken | None = None) -> dict[str, Any]:
        return await nodes_view(service)

    return {"message_send": send, "message_broadcast": broadcast, "message_call": call,
            "message_reply": reply, "inbox_poll": poll, "message_forward": forward,
            "nodes": nodes}


async def nodes_view(service: "KVService") -> dict[str, Any]:
    """The live members (``member add``/``remove`` included: engine/membership.py) with ``up``
    as this node, the leader, sees them, then the read replicas connected to it (``replica``
    true; a replica connected to another voter is not seen here).  NotLeader on any other
    node: the client asks the next one."""
    engine = service.engine
    if not engine.started or not engine.is_leader():
        raise NotLeader("nodes are answered by the leader", leader=engine.leader_id())
    raft = await engine.status()
    own = service.config.id
    rows = [{"id": m["id"], "api_address": m["api_address"], "up": bool(m["connected"]),
             "leader": m["id"] == own, "replica": False}
            for m in engine.membership.report() if m["voter"]]
    rows.extend({"id": row["id"], "api_address": row["api_address"], "up": True,
                 "leader": False, "replica": True}
                for row in map(replica_row, engine.replicas()))
    return {"nodes": rows, "leader": own, "term": raft.term}
