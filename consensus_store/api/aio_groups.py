"""``AsyncGroups``: pg2-style process groups for asyncio (``groups.py``'s calls, awaited)."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from consensus_store.api.aio_lock import SessionFactory
from consensus_store.api.groups import rendezvous
from consensus_store.api.messaging import DEFAULT_CALL_TIMEOUT_S, Broadcast, MultiCall
from consensus_store.api.messaging_async import broadcast, multi_call, send
from consensus_store.api.requester import AsyncRequester, level_of
from consensus_store.models import Member

if TYPE_CHECKING:
    from consensus_store.api.monitors import AsyncGroupMonitor


class AsyncGroups:
    """``async_client.groups``: create / delete / join / leave / members / local_members /
    which_groups / closest / route / update / monitor, and messages to members: send /
    broadcast / multi_call (docs/messaging.md)."""

    def __init__(self, api: AsyncRequester, session: SessionFactory) -> None:
        self._api = api
        self._session = session

    async def create(self, group: str, *, timeout: float | None = None) -> bool:
        """Create ``group`` (idempotent); True if it did not exist."""
        return (await self._api.request("group_create", {"group": group}, timeout))["created"]

    async def delete(self, group: str, *, timeout: float | None = None) -> bool:
        return (await self._api.request("group_delete", {"group": group}, timeout))["deleted"]

    async def join(self, group: str, member: str | None = None, meta: Any = None, *,
                   timeout: float | None = None) -> Member:
        """Join as a new member (or update ``member`` if that id exists); owned by the session."""
        body = {"group": group, "meta": meta, **(await self._session()).auth}
        if member is not None:
            body["member"] = member
        return Member.from_json((await self._api.request("group_join", body, timeout))["member"])

    async def update(self, group: str, member: str, meta: Any, *,
                     timeout: float | None = None) -> Member:
        """Change the meta of a member this client's session owns."""
        body = {"group": group, "member": member, "meta": meta, **(await self._session()).auth}
        return Member.from_json((await self._api.request("group_update", body,
                                                         timeout))["member"])

    async def leave(self, group: str, member: str | Member, *,
                    timeout: float | None = None) -> bool:
        member_id = member.id if isinstance(member, Member) else member
        body = {"group": group, "member": member_id, **(await self._session()).auth}
        return (await self._api.request("group_leave", body, timeout))["left"]

    async def _members(self, group: str, consistency: str | None,
                       timeout: float | None) -> tuple[list[Member], str]:
        body = {"group": group, "consistency": level_of(self._api, consistency)}
        result = await self._api.request("groups_members", body, timeout)
        return [Member.from_json(m) for m in result["members"]], result["header"]["node"]

    async def members(self, group: str, *, consistency: str | None = None,
                      timeout: float | None = None) -> list[Member]:
        return (await self._members(group, consistency, timeout))[0]

    async def local_members(self, group: str, *, consistency: str | None = None,
                            timeout: float | None = None) -> list[Member]:
        """Members that joined through the store node answering this call."""
        members, node = await self._members(group, consistency, timeout)
        return [m for m in members if m.node == node]

    async def which_groups(self, *, consistency: str | None = None,
                           timeout: float | None = None) -> list[str]:
        body = {"consistency": level_of(self._api, consistency)}
        return (await self._api.request("groups_list", body, timeout))["groups"]

    async def closest(self, group: str, *, timeout: float | None = None) -> Member | None:
        """A local member if there is one, else a random member (pg2's get_closest_pid)."""
        members, node = await self._members(group, None, timeout)
        local = [m for m in members if m.node == node]
        return random.choice(local or members) if members else None

    async def monitor(self, group: str) -> "AsyncGroupMonitor":
        """OTP pg's monitor: ``.members`` now, then ``async for`` every join and leave."""
        from consensus_store.api.monitors import AsyncGroupMonitor   # monitors import watching
        return await AsyncGroupMonitor(self._api, group).start()

    async def route(self, group: str, key: str, *, timeout: float | None = None) -> Member | None:
        """The member responsible for ``key``: rendezvous (highest random weight) hashing."""
        return rendezvous(await self.members(group, timeout=timeout), key)

    # ---- messages to members, outside the log (api/messaging_async.py) ---------------------------
    async def send(self, group: str, member: str | Member, message: Any, *,
                   timeout: float | None = None) -> bool:
        """Deliver ``message`` to one member's inbox (True once it took it)."""
        member_id = member.id if isinstance(member, Member) else member
        return await send(self._api, {"group": group, "member": member_id}, message, timeout)

    async def broadcast(self, group: str, message: Any, *,
                        timeout: float | None = None) -> Broadcast:
        """Deliver ``message`` to every member whose client reads its inbox."""
        return await broadcast(self._api, group, message, timeout)

    async def multi_call(self, group: str, request: Any,
                         timeout: float = DEFAULT_CALL_TIMEOUT_S) -> MultiCall:
        """pg2's multi_call: every member's reply within ``timeout``, and who did not answer."""
        return await multi_call(self._api, {"group": group}, request, timeout)
