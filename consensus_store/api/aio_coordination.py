"""The coordination calls for asyncio, ``AsyncCoordinationApi``: what ``CoordinationApi``
gives ``Client``, with the same names and semantics, for ``AsyncClient`` (any
``AsyncRequester``).

The requester's own session (``default_session()``, awaited) is opened on first use and renewed
once lost; ``session(ttl)`` opens an explicit one.  Recipes: ``groups``, ``lock`` / ``trans``,
``election``, ``replicas``; the registry (:global) calls are methods here.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from consensus_store.api.aio_election import AsyncElection
from consensus_store.api.aio_groups import AsyncGroups
from consensus_store.api.aio_lock import AsyncLock, SessionFactory, trans
from consensus_store.api.aio_replicas import AsyncReplicas
from consensus_store.api.aio_session import AsyncSession
from consensus_store.api.coordination import DEFAULT_SESSION_TTL_S
from consensus_store.api.requester import AsyncRequester, JsonObject, level_of
from consensus_store.models import ConnectionState, Consistency

T = TypeVar("T")


class AsyncCoordinationApi:
    """The coordination calls; the class it is mixed into supplies ``request`` and
    ``default_consistency`` (``AsyncRequester``) and calls ``_init_coordination``."""

    if TYPE_CHECKING:
        default_consistency: Consistency | str

        async def request(self, op: str, body: JsonObject,
                          timeout: float | None) -> JsonObject: ...

    def _init_coordination(self, session_ttl: float = DEFAULT_SESSION_TTL_S) -> None:
        self.session_ttl = session_ttl
        self._default_session: AsyncSession | None = None
        self._default_session_lock: asyncio.Lock | None = None   # made on the caller's loop

    async def default_session(self) -> AsyncSession:
        """This client's own session, opened on first use, renewed after it is lost."""
        if self._default_session_lock is None:
            self._default_session_lock = asyncio.Lock()
        async with self._default_session_lock:
            session = self._default_session
            if session is None or session.state is ConnectionState.LOST:
                session = self._default_session = await AsyncSession.open(self,
                                                                           self.session_ttl)
            return session

    async def session(self, ttl: float | None = None) -> AsyncSession:
        """A new explicit session (``async with``: closing it releases all it owns)."""
        return await AsyncSession.open(self, ttl or self.session_ttl)

    async def close_session(self) -> None:
        if self._default_session is not None:
            await self._default_session.close()

    @property
    def groups(self) -> AsyncGroups:
        return AsyncGroups(self, self.default_session)

    # ---- registry (:global) -------------------------------------------------------------------
    async def register_name(self, name: str, value: Any = None, *,
                            timeout: float | None = None) -> bool:
        """Register ``name`` for this client's session; False if taken (never overwritten)."""
        body = {"name": name, "value": value, **(await self.default_session()).auth}
        return (await self.request("name_register", body, timeout))["registered"]

    async def whereis_name(self, name: str, *, consistency: str | None = None,
                           timeout: float | None = None) -> Any:
        """The value registered under ``name``, or None when the name is free."""
        body = {"name": name, "consistency": level_of(self, consistency)}
        owner = (await self.request("names_whereis", body, timeout))["owner"]
        return None if owner is None else owner["value"]

    async def unregister_name(self, name: str, *, timeout: float | None = None) -> bool:
        """Unregister a name this client's session registered (an admin token: any name)."""
        body: dict[str, Any] = {"name": name}
        if self._default_session is not None:
            body.update(self._default_session.auth)
        return (await self.request("name_unregister", body, timeout))["unregistered"]

    async def registered_names(self, *, consistency: str | None = None,
                               timeout: float | None = None) -> list[str]:
        return [n["name"] for n in await self.names(consistency=consistency, timeout=timeout)]

    async def names(self, *, consistency: str | None = None,
                    timeout: float | None = None) -> list[dict[str, Any]]:
        """Every registration: name, value, owning session and its node."""
        body = {"consistency": level_of(self, consistency)}
        return (await self.request("names_list", body, timeout))["names"]

    async def locks(self, *, consistency: str | None = None,
                    timeout: float | None = None) -> list[dict[str, Any]]:
        """Every lock with its holder (session, fencing token) and waiters, oldest first."""
        body = {"consistency": level_of(self, consistency)}
        return (await self.request("locks_list", body, timeout))["locks"]

    # ---- locks, elections, replicas -----------------------------------------------------------
    def lock(self, name: str, *, ttl: float | None = None, owner: Any = None) -> AsyncLock:
        """A fenced FIFO lock (``async with client.lock(name) as token``); ``ttl`` gives it a
        session of its own with that TTL."""
        factory: SessionFactory = self.default_session
        if ttl is not None:
            factory = _OwnSession(self, ttl)
        return AsyncLock(self, name, factory, owner)

    async def trans(self, name: str, function: Callable[[], Awaitable[T]], *,
                    timeout: float | None = None) -> T:
        """Await ``function()`` under lock ``name`` (like :global.trans)."""
        return await trans(self.lock(name), function, timeout)

    def election(self, name: str) -> AsyncElection:
        return AsyncElection(self, name, self.default_session)

    async def replicas(self, name: str, worker: Any, *, replication_factor: int = 2,
                       model: str = "active_passive", member: str | None = None,
                       priority: int = 0) -> AsyncReplicas:
        """Offer a replica of ``worker`` under ``name``; started (see ``AsyncReplicas``)."""
        return await AsyncReplicas(self, name, worker, session=self.default_session,
                                   member=member or uuid.uuid4().hex[:12],
                                   replication_factor=replication_factor, model=model,
                                   priority=priority).start()


class _OwnSession:
    """A session made on first use and reused while alive (for ``lock(ttl=...)``)."""

    def __init__(self, api: AsyncRequester, ttl: float) -> None:
        self._api, self._ttl = api, ttl
        self._session: AsyncSession | None = None

    async def __call__(self) -> AsyncSession:
        if self._session is None or self._session.state is ConnectionState.LOST:
            self._session = await AsyncSession.open(self._api, self._ttl)
        return self._session
