"""``AsyncElection``: ``election.py``'s leader election for asyncio, same semantics.

The leader is the live candidate with the highest priority, the oldest among equals; the
cluster decides it in the log entry of the change that caused it and stamps it with a fencing
token.  ``observe`` is an async iterator of leaders.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from consensus_store.api.aio_lock import SessionFactory
from consensus_store.api.aio_session import AsyncSession
from consensus_store.api.aio_waiting import wait_for_change
from consensus_store.coordination_keys import election_prefix
from consensus_store.api.messaging import DEFAULT_CALL_TIMEOUT_S
from consensus_store.api.messaging_async import call_one
from consensus_store.api.requester import AsyncRequester, level_of
from consensus_store.errors import Timeout
from consensus_store.models import Leader


class AsyncElection:
    def __init__(self, api: AsyncRequester, name: str, session: SessionFactory) -> None:
        self._api = api
        self.name = name
        self._session_factory = session
        self.session: AsyncSession | None = None
        self.member: str | None = None

    async def state(self, consistency: str | None = None) -> dict[str, Any]:
        """Leader and candidates (best first), as the node answers them."""
        body = {"name": self.name, "consistency": level_of(self._api, consistency)}
        return await self._api.request("elections_leader", body, None)

    async def leader(self, *, consistency: str | None = None) -> Leader | None:
        return Leader.maybe((await self.state(consistency))["leader"])

    async def candidates(self, *, consistency: str | None = None) -> list[dict[str, Any]]:
        """Live candidates, best first (highest priority, then oldest)."""
        return (await self.state(consistency))["candidates"]

    async def campaign(self, member: str, meta: Any = None, priority: int = 0, *,
                       timeout: float | None = None, block: bool = True) -> Leader | None:
        """Stand as ``member``.  Returns once elected (the leadership, with its token) unless
        ``block=False``; raises Timeout if not elected within ``timeout``."""
        self.session = await self._session_factory()
        await self.session.require_alive()
        self.member = member
        body = {"name": self.name, "member": member, "meta": meta, "priority": priority,
                **self.session.auth}
        await self._api.request("election_campaign", body, None)
        if not block:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        async for leader in self.observe(deadline=deadline):
            await self.session.require_alive(deadline)
            if leader is not None and leader.member == member:
                return leader
        raise Timeout(f"not elected in {self.name!r} within {timeout}s")

    async def is_leader(self) -> bool:
        leader = await self.leader()
        return (leader is not None and leader.member == self.member
                and self.session is not None and self.session.alive)

    async def observe(self, *, deadline: float | None = None) -> AsyncIterator[Leader | None]:
        """The current leader, then each change of leader (until ``deadline``)."""
        state = await self.state()
        current = Leader.maybe(state["leader"])
        yield current
        revision = state["header"]["applied_index"]
        while deadline is None or time.monotonic() < deadline:
            wait = 10.0 if deadline is None else max(0.0, min(10.0, deadline - time.monotonic()))
            revision = await wait_for_change(self._api, election_prefix(self.name), revision,
                                             wait)
            state = await self.state()
            revision = max(revision, state["header"]["applied_index"])
            leader = Leader.maybe(state["leader"])
            if leader != current:
                current = leader
                yield leader

    async def observe_changes(self, stop: asyncio.Event,
                              poll_s: float = 2.0) -> AsyncIterator[None]:
        """Yield now, then after each change to the candidates (and every ``poll_s``)."""
        revision = (await self.state())["header"]["applied_index"]
        yield
        while not stop.is_set():
            revision = await wait_for_change(self._api, election_prefix(self.name), revision,
                                             poll_s)
            yield

    async def resign(self) -> None:
        if self.member is not None:
            body = {"name": self.name, "member": self.member}
            if self.session is not None:
                body.update(self.session.auth)    # the candidacy is the session's
            await self._api.request("election_resign", body, None)

    async def call_leader(self, request: Any, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> Any:
        """Call the current leader (its client answers with ``msg.reply``); NotFound when
        there is none or it reads no inbox, Timeout when it does not reply in time."""
        return await call_one(self._api, {"election": self.name}, f"the leader of {self.name!r}",
                              request, timeout)
