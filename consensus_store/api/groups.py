"""pg2-style process groups (see README, "Coordination")."""
from __future__ import annotations

import hashlib
import random
from typing import Any, Callable

from consensus_store.api.requester import Requester, level_of
from consensus_store.api.messaging import Broadcast, MultiCall, broadcast, multi_call, send
from consensus_store.api.session import Session
from consensus_store.models import Member


class Groups:
    """``client.groups``: create / delete / join / leave / members / local_members /
    which_groups / closest / route / update."""

    def __init__(self, api: Requester, session: Callable[[], Session]) -> None:
        self._api = api
        self._session = session

    def create(self, group: str, *, timeout: float | None = None) -> bool:
        """Create ``group`` (idempotent); True if it did not exist."""
        return self._api.request("group_create", {"group": group}, timeout)["created"]

    def delete(self, group: str, *, timeout: float | None = None) -> bool:
        return self._api.request("group_delete", {"group": group}, timeout)["deleted"]

    def join(self, group: str, member: str | None = None, meta: Any = None, *,
             timeout: float | None = None) -> Member:
        """Join as a new member (or update ``member`` if that id exists); owned by the session."""
        body = {"group": group, "meta": meta, **self._session().auth}
        if member is not None:
            body["member"] = member
        return Member.from_json(self._api.request("group_join", body, timeout)["member"])

    def update(self, group: str, member: str, meta: Any, *, timeout: float | None = None) -> Member:
        """Change the meta of a member this client's session owns."""
        body = {"group": group, "member": member, "meta": meta, **self._session().auth}
        return Member.from_json(self._api.request("group_update", body, timeout)["member"])

    def leave(self, group: str, member: str | Member, *, timeout: float | None = None) -> bool:
        member_id = member.id if isinstance(member, Member) else member
        body = {"group": group, "member": member_id, **self._session().auth}
        return self._api.request("group_leave", body, timeout)["left"]

    def _members(self, group: str, consistency: str | None,
                 timeout: float | None) -> tuple[list[Member], str]:
        body = {"group": group, "consistency": level_of(self._api, consistency)}
        result = self._api.request("groups_members", body, timeout)
        return [Member.from_json(m) for m in result["members"]], result["header"]["node"]

    def members(self, group: str, *, consistency: str | None = None,
                timeout: float | None = None) -> list[Member]:
        return self._members(group, consistency, timeout)[0]

    def local_members(self, group: str, *, consistency: str | None = None,
                      timeout: float | None = None) -> list[Member]:
        """Members that joined through the store node answering this call."""
        members, node = self._members(group, consistency, timeout)
        return [m for m in members if m.node == node]

    def which_groups(self, *, consistency: str | None = None,
                     timeout: float | None = None) -> list[str]:
        body = {"consistency": level_of(self._api, consistency)}
        return self._api.request("groups_list", body, timeout)["groups"]

    def closest(self, group: str, *, timeout: float | None = None) -> Member | None:
        """A local member if there is one, else a random member (pg2's get_closest_pid)."""
        members, node = self._members(group, None, timeout)
        local = [m for m in members if m.node == node]
        return random.choice(local or members) if members else None

    def monitor(self, group: str) -> "GroupMonitor":
        """OTP pg's monitor: ``.members`` now, then iterate for every join and leave after."""
        from consensus_store.api.monitors import GroupMonitor   # monitors import watching
        return GroupMonitor(self._api, group)

    def route(self, group: str, key: str, *, timeout: float | None = None) -> Member | None:
        """The member responsible for ``key``: rendezvous (highest random weight) hashing."""
        return rendezvous(self.members(group, timeout=timeout), key)

    # ---- messages to members, outside the log (api/messaging.py, docs/messaging.md) -------------
    def send(self, group: str, member: str | Member, message: Any, *,
             timeout: float | None = None) -> bool:
        """Deliver ``message`` to one member's inbox (True once it took it)."""
        member_id = member.id if isinstance(member, Member) else member
        return send(self._api, {"group": group, "member": member_id}, message, timeout)

    def broadcast(self, group: str, message: Any, *, timeout: float | None = None) -> Broadcast:
        """Deliver ``message`` to every member whose client reads its inbox."""
        return broadcast(self._api, group, message, timeout)

    def multi_call(self, group: str, request: Any, timeout: float = 5.0) -> MultiCall:
        """pg2's multi_call: every member's reply within ``timeout``, and who did not answer."""
        return multi_call(self._api, {"group": group}, request, timeout)


def rendezvous(members: list[Member], key: str) -> Member | None:
    """Highest-random-weight choice: a member joining or leaving moves only ~1/N of keys."""
    def weight(member: Member) -> int:
        digest = hashlib.blake2b(f"{member.id}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")
    return max(members, key=weight, default=None)
