"""Leader election for a pool of services (``client.election(name)``).

The leader is the live candidate with the highest priority, the oldest among equals; a newcomer
with a higher priority takes over.  The cluster decides it in the same log entry as the change
that caused it, and stamps each leadership with a fencing token (that entry's index).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

from consensus_store.api.requester import Requester, level_of
from consensus_store.api.messaging import call_one
from consensus_store.api.session import Session
from consensus_store.api.watching import wait_for_change
from consensus_store.coordination_keys import election_prefix
from consensus_store.errors import Timeout
from consensus_store.models import Leader


class Election:
    def __init__(self, api: Requester, name: str, session: Callable[[], Session]) -> None:
        self._api = api
        self.name = name
        self._session_factory = session
        self.session: Session | None = None
        self.member: str | None = None

    def state(self, consistency: str | None = None) -> dict[str, Any]:
        """Leader and candidates (best first), as the node answers them."""
        body = {"name": self.name, "consistency": level_of(self._api, consistency)}
        return self._api.request("elections_leader", body, None)

    def leader(self, *, consistency: str | None = None) -> Leader | None:
        return Leader.maybe(self.state(consistency)["leader"])

    def candidates(self, *, consistency: str | None = None) -> list[dict[str, Any]]:
        """Live candidates, best first (highest priority, then oldest)."""
        return self.state(consistency)["candidates"]

    def campaign(self, member: str, meta: Any = None, priority: int = 0, *,
                 timeout: float | None = None, block: bool = True) -> Leader | None:
        """Stand as ``member``.  Blocks until elected (returns the leadership, with its token)
        unless ``block=False``; raises Timeout if not elected within ``timeout``."""
        self.session = self._session_factory()
        self.session.require_alive()
        self.member = member
        body = {"name": self.name, "member": member, "meta": meta, "priority": priority,
                **self.session.auth}
        self._api.request("election_campaign", body, None)
        if not block:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        for leader in self.observe(deadline=deadline):
            if leader is not None and leader.member == member:
                self.session.require_alive(deadline)
                return leader
            self.session.require_alive(deadline)
        raise Timeout(f"not elected in {self.name!r} within {timeout}s")

    def is_leader(self) -> bool:
        leader = self.leader()
        return (leader is not None and leader.member == self.member
                and self.session is not None and self.session.alive)

    def observe(self, *, deadline: float | None = None) -> Iterator[Leader | None]:
        """Yield the current leader, then each change of leader (until ``deadline``)."""
        state = self.state()
        current = Leader.maybe(state["leader"])
        yield current
        revision = state["header"]["applied_index"]
        prefix = election_prefix(self.name)
        while deadline is None or time.monotonic() < deadline:
            wait = 10.0 if deadline is None else max(0.0, min(10.0, deadline - time.monotonic()))
            revision = wait_for_change(self._api, prefix, revision, wait)
            state = self.state()
            revision = max(revision, state["header"]["applied_index"])
            leader = Leader.maybe(state["leader"])
            if leader != current:
                current = leader
                yield leader

    def observe_changes(self, stop: threading.Event, poll_s: float = 2.0) -> Iterator[None]:
        """Yield now, then after each change to the candidates (and every ``poll_s``)."""
        revision = self.state()["header"]["applied_index"]
        yield
        prefix = election_prefix(self.name)
        while not stop.is_set():
            revision = wait_for_change(self._api, prefix, revision, poll_s)
            yield

    def resign(self) -> None:
        if self.member is not None:
            body = {"name": self.name, "member": self.member}
            if self.session is not None:
                body.update(self.session.auth)    # the candidacy is the session's
            self._api.request("election_resign", body, None)

    def call_leader(self, request: Any, timeout: float = 5.0) -> Any:
        """Call the current leader (its client answers with ``msg.reply``); NotFound when
        there is none or it reads no inbox, Timeout when it does not reply in time."""
        return call_one(self._api, {"election": self.name}, f"the leader of {self.name!r}",
                        request, timeout)
