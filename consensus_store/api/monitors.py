"""Monitors on top of watches: a process group's joins and leaves (OTP pg's ``monitor``) and
the end of a registered name (a ``DOWN``).

Group and name records are keys under ``_cs/`` (``state/coordination.py``), so a monitor is a
read at revision R and a watch of the same keys from R + 1: nothing between the two is missed
or seen twice.  A member removed because its session ended (expiry after its process died,
or a close) is a delete like a leave, so it shows as a leave.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

from consensus_store.api.requester import AsyncRequester, Requester
from consensus_store.api.watching import AsyncWatch, Watch
from consensus_store.coordination_keys import members_prefix, name_key
from consensus_store.errors import ConsensusStoreError
from consensus_store.models import Member, WatchEvent


@dataclass(frozen=True)
class GroupEvent:
    """``type``: "join", "leave" or "update" (a member's meta changed, or it joined again);
    ``revision``: the Raft index of the change."""

    type: str
    group: str
    member: Member
    revision: int


@dataclass(frozen=True)
class NameDown:
    """A registered name's owner went: ``reason`` "gone" (unregistered, or its session ended)
    or "noproc" (the name was not registered when the monitor started); ``owner``: the
    registration as it was (None for noproc)."""

    name: str
    reason: str
    owner: dict[str, Any] | None
    revision: int


def _member(value: dict[str, Any], create_revision: int) -> Member:
    return Member(value["id"], value["node"], value.get("meta"), create_revision,
                  value["session"])


def _initial_read(prefix: str) -> dict[str, Any]:
    return {"prefix": prefix, "consistency": "linearizable"}


class _GroupState:
    """The members known and the event each change makes (free of I/O)."""

    def __init__(self, group: str, read: dict[str, Any]) -> None:
        if read.get("more"):
            raise ConsensusStoreError(f"group {group!r} has more members than one read returns")
        self.group = group
        self.revision: int = read["read_index"]
        self.known: dict[str, Member] = {
            kv["key"]: _member(kv["value"], kv["create_revision"]) for kv in read["kvs"]}
        self.members: list[Member] = list(self.known.values())

    def event(self, change: WatchEvent) -> GroupEvent | None:
        if change.type == "delete":
            member = self.known.pop(change.key, None)
            return None if member is None else GroupEvent("leave", self.group, member,
                                                          change.revision)
        known = self.known.get(change.key)
        joined = change.revision if known is None or change.version == 1 else known.revision
        member = _member(change.value, joined)
        self.known[change.key] = member
        kind = "join" if known is None else "update"
        return GroupEvent(kind, self.group, member, change.revision)


class GroupMonitor(Iterator[GroupEvent]):
    """``client.groups.monitor(group)``: ``members`` (as of ``revision``), then iterate for
    every join and leave after it, in order.  ``get(timeout)`` waits for one; ``close()``."""

    def __init__(self, api: Requester, group: str) -> None:
        prefix = members_prefix(group)
        self._state = _GroupState(group, api.request("range", _initial_read(prefix), None))
        self.members, self.revision = self._state.members, self._state.revision
        self._watch = Watch(api, prefix, self.revision + 1)

    def __iter__(self) -> "GroupMonitor":
        return self

    def __next__(self) -> GroupEvent:
        event = self.get()
        if event is None:
            raise StopIteration
        return event

    def get(self, timeout: float | None = None) -> GroupEvent | None:
        while True:
            change = self._watch.get(timeout)
            if change is None:
                return None
            event = self._state.event(change)
            if event is not None:
                return event

    def close(self) -> None:
        self._watch.close()


class AsyncGroupMonitor(AsyncIterator[GroupEvent]):
    """``GroupMonitor`` for asyncio: ``monitor = await client.groups.monitor(group)``."""

    def __init__(self, api: AsyncRequester, group: str) -> None:
        self._api, self.group = api, group
        self.members: list[Member] = []
        self.revision = 0

    async def start(self) -> "AsyncGroupMonitor":
        prefix = members_prefix(self.group)
        self._state = _GroupState(self.group,
                                  await self._api.request("range", _initial_read(prefix), None))
        self.members, self.revision = self._state.members, self._state.revision
        self._watch = AsyncWatch(self._api, prefix, self.revision + 1)
        return self

    def __aiter__(self) -> "AsyncGroupMonitor":
        return self

    async def __anext__(self) -> GroupEvent:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def get(self, timeout: float | None = None) -> GroupEvent | None:
        while True:
            change = await self._watch.get(timeout)
            if change is None:
                return None
            event = self._state.event(change)
            if event is not None:
                return event

    def close(self) -> None:
        self._watch.close()


class _NameState:
    def __init__(self, name: str, read: dict[str, Any]) -> None:
        self.name, self.key = name, name_key(name)
        self.revision: int = read["read_index"]
        owners = [kv["value"] for kv in read["kvs"] if kv["key"] == self.key]
        self.owner: dict[str, Any] | None = owners[0] if owners else None

    def down(self, change: WatchEvent | None) -> NameDown | None:
        if self.owner is None:
            return NameDown(self.name, "noproc", None, self.revision)
        if change is not None and change.key == self.key and change.type == "delete":
            return NameDown(self.name, "gone", self.owner, change.revision)
        return None


class NameMonitor:
    """``client.monitor_name(name)``: ``wait(timeout)`` returns the ``NameDown`` once the
    name's current owner goes (at once, reason "noproc", if it is not registered)."""

    def __init__(self, api: Requester, name: str) -> None:
        self._state = _NameState(name, api.request("range", _initial_read(name_key(name)), None))
        self.owner = self._state.owner
        self._watch = Watch(api, self._state.key, self._state.revision + 1)
        self._down: NameDown | None = self._state.down(None)

    def wait(self, timeout: float | None = None) -> NameDown | None:
        """The DOWN event, or None if ``timeout`` passed first."""
        while self._down is None:
            change = self._watch.get(timeout)
            if change is None:
                return None
            self._down = self._state.down(change)
        return self._down

    def close(self) -> None:
        self._watch.close()


class AsyncNameMonitor:
    def __init__(self, api: AsyncRequester, name: str) -> None:
        self._api, self.name = api, name
        self.owner: dict[str, Any] | None = None
        self._down: NameDown | None = None

    async def start(self) -> "AsyncNameMonitor":
        key = name_key(self.name)
        self._state = _NameState(self.name,
                                 await self._api.request("range", _initial_read(key), None))
        self.owner = self._state.owner
        self._watch = AsyncWatch(self._api, key, self._state.revision + 1)
        self._down = self._state.down(None)
        return self

    async def wait(self, timeout: float | None = None) -> NameDown | None:
        while self._down is None:
            change = await self._watch.get(timeout)
            if change is None:
                return None
            self._down = self._state.down(change)
        return self._down

    def close(self) -> None:
        self._watch.close()


class MonitorApi:
    """``monitor_name`` for blocking requesters (``client.groups.monitor`` is on ``Groups``)."""

    def monitor_name(self: Requester, name: str) -> NameMonitor:
        """A monitor of registered ``name``: ``.wait()`` returns its DOWN event."""
        return NameMonitor(self, name)


class AsyncMonitorApi:
    """``monitor_name`` for ``AsyncClient`` (``client.groups.monitor`` is on ``AsyncGroups``)."""

    async def monitor_name(self: AsyncRequester, name: str) -> AsyncNameMonitor:
        return await AsyncNameMonitor(self, name).start()
