"""The service's handlers of the membership ops (``protocol.OPS``: member_list, member_add,
member_remove); the rules and the log entries are the engine's (engine/membership.py).

``handlers(service)`` is called from ``KVService._handlers``.  ``member_list`` is answered by
any node from its own view; a change is made by the leader (NotLeader elsewhere: the client
asks another node).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from consensus_store.config import ClientToken
from consensus_store.errors import NotLeader, Unavailable
from consensus_store.node import validate

if TYPE_CHECKING:
    from consensus_store.node.engine import Engine
    from consensus_store.node.service import KVService

Handler = Callable[..., Awaitable[dict[str, Any]]]
# The member's id travels as "member": the native protocol's frames use "id" themselves.
ADDRESS_FIELDS = ("raft_address", "api_address", "native_address")


def replica_row(replica: dict[str, Any]) -> dict[str, Any]:
    """A read replica connected to this voter (engine/replica.py) as a member-list row: not a
    voter, no raft address (it never listens)."""
    endpoint = replica.get("endpoint") or ""
    return {"id": replica["id"], "raft_address": "",
            "api_address": endpoint.split("://", 1)[-1], "native_address":
            replica.get("native_address"), "membership": "replica", "voter": False,
            "connected": True, "match_index": replica.get("match_index")}


def handlers(service: "KVService") -> dict[str, Handler]:
    def started() -> "Engine":
        engine = service.engine
        if not engine.started:
            raise Unavailable("node is not running")
        return engine

    def seconds(body: dict[str, Any], timeout: float | None) -> float:
        return service.timeout_s(validate.request_timeout(body) if timeout is None else timeout)

    async def member_list(body: dict[str, Any], timeout: float | None = None, *,
                          caller: ClientToken | None = None) -> dict[str, Any]:
        engine = started()
        if body.get("from_leader") is True and not engine.is_leader():
            raise NotLeader("the member list is asked of the leader (from_leader)",
                            leader=engine.leader_id())
        rows = engine.membership.report() + [replica_row(r) for r in engine.replicas()]
        return {"members": rows, "leader": engine.leader_id()}

    async def member_add(body: dict[str, Any], timeout: float | None = None, *,
                         caller: ClientToken | None = None) -> dict[str, Any]:
        engine = started()
        fields = {"id": body.get("member"), **{name: body.get(name) for name in ADDRESS_FIELDS}}
        return await engine.membership.add(fields, seconds(body, timeout))

    async def member_remove(body: dict[str, Any], timeout: float | None = None, *,
                            caller: ClientToken | None = None) -> dict[str, Any]:
        engine = started()
        return await engine.membership.remove(body.get("member"), seconds(body, timeout))

    return {"member_list": member_list, "member_add": member_add,
            "member_remove": member_remove}
