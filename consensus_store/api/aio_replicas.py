"""``AsyncReplicas``: ``replicas.py``'s active/passive replicas of a worker, for asyncio.

The worker's ``on_active()`` / ``on_passive()`` / ``on_standby()`` may be plain functions or
coroutine functions.  A replica whose session is not CONNECTED demotes itself at once.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from consensus_store.api.aio_election import AsyncElection
from consensus_store.api.aio_lock import SessionFactory
from consensus_store.api.replicas import MODELS
from consensus_store.api.requester import AsyncRequester
from consensus_store.models import ConnectionState

log = logging.getLogger("consensus_store.replicas")


class AsyncReplicas:
    def __init__(self, api: AsyncRequester, name: str, worker: Any, *,
                 session: SessionFactory, member: str, replication_factor: int = 2,
                 model: str = "active_passive", priority: int = 0) -> None:
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}")
        if replication_factor < 1:
            raise ValueError("replication_factor must be >= 1")
        self.worker = worker
        self.member = member
        self.replication_factor = replication_factor
        self.model = model
        self.role: str | None = None     # "active" / "passive" / "standby"
        self._election = AsyncElection(api, f"replicas/{name}", session)
        self._priority = priority
        self._stop = asyncio.Event()
        self._transition_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> "AsyncReplicas":
        await self._election.campaign(self.member, priority=self._priority, block=False)
        assert self._election.session is not None
        self._election.session.add_listener(self._on_session)
        self._task = asyncio.get_running_loop().create_task(
            self._follow(), name=f"replicas-{self.member}")
        return self

    async def _role_now(self) -> str:
        session = self._election.session
        if session is None or not session.alive:
            return "standby"
        ranking = [c["member"] for c in await self._election.candidates()]
        if self.member not in ranking[: self.replication_factor]:
            return "standby"
        if self.model == "active_active" or ranking[0] == self.member:
            return "active"
        return "passive"

    async def _transition(self, role: str) -> None:
        async with self._transition_lock:
            session = self._election.session
            if role == "active" and (session is None or not session.alive):
                role = "passive"   # never active on a session we cannot vouch for
            if role == self.role:
                return
            self.role = role
            await self._signal(role)

    async def _signal(self, role: str) -> None:
        handler = getattr(self.worker, f"on_{role}", None)
        if handler is not None:
            try:
                outcome = handler()
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:  # noqa: BLE001 - the worker's bug must not stop the signal
                log.exception("worker on_%s failed", role)

    def _on_session(self, state: ConnectionState) -> None:
        if state is not ConnectionState.CONNECTED and self.role == "active":
            demoted = "passive" if state is ConnectionState.SUSPENDED else "standby"
            asyncio.get_running_loop().create_task(self._transition(demoted))

    async def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                async for _ in self._election.observe_changes(stop=self._stop):
                    await self._transition(await self._role_now())
            except Exception as exc:  # noqa: BLE001 - keep following through outages
                log.warning("replicas %s: %s", self.member, exc)
                await self._transition("standby" if self.role == "active"
                                       else self.role or "standby")
                try:
                    await asyncio.wait_for(self._stop.wait(), 0.5)
                except TimeoutError:
                    pass

    async def stop(self) -> None:
        self._stop.set()
        try:
            await self._election.resign()
        finally:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            await self._transition("standby")
