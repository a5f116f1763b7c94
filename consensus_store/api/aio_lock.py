"""``AsyncLock`` and ``trans`` for asyncio: ``lock.py``'s fenced FIFO lock, same semantics.

Each acquire appends a waiter entry; the oldest live waiter holds the lock; the grant's
``token`` strictly increases per lock (fencing).  While the session is SUSPENDED the holder
must assume it may have lost the lock (``is_held`` is False then).
"""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, TypeVar

from consensus_store.api.aio_session import AsyncSession
from consensus_store.api.aio_waiting import wait_for_change
from consensus_store.coordination_keys import lock_prefix
from consensus_store.api.requester import AsyncRequester, level_of
from consensus_store.errors import ConsensusStoreError, Timeout

T = TypeVar("T")
SessionFactory = Callable[[], Awaitable[AsyncSession]]


class AsyncLock:
    def __init__(self, api: AsyncRequester, name: str, session: SessionFactory,
                 owner: Any = None) -> None:
        self._api = api
        self.name = name
        self._session_factory = session
        self.owner = owner
        self.session: AsyncSession | None = None
        self._key: str | None = None
        self.token: int | None = None

    @property
    def is_held(self) -> bool:
        """Held, as far as this process can tell (False while the session is suspended)."""
        return self.token is not None and self.session is not None and self.session.alive

    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> bool:
        """Wait (up to ``timeout``; forever if None) for the lock; True once held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._key is not None:
            await self._give_up()         # an earlier release that failed: finish it first
        self.session = await self._session_factory()
        await self.session.require_alive()
        body = {"name": self.name, "owner": self.owner, **self.session.auth}
        result = await self._api.request("lock_acquire", body, None)
        self._key, token = result["key"], result["token"]
        try:
            return await self._wait_for_turn(token, deadline, blocking)
        except BaseException:
            await self._give_up_quietly()   # else our stale waiter would block the next try
            raise

    async def _wait_for_turn(self, token: int, deadline: float | None, blocking: bool) -> bool:
        assert self._key is not None and self.session is not None
        revision = token
        while True:
            body = {"name": self.name, "consistency": level_of(self._api, None)}
            status = await self._api.request("locks_status", body, None)
            holder = status["holder"]
            if holder is not None and holder["key"] == self._key:
                await self.session.require_alive(deadline)   # granted to a live session
                self.token = token
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if not blocking or (remaining is not None and remaining <= 0):
                await self._give_up()
                return False
            await self.session.require_alive(deadline)
            wait = 10.0 if remaining is None else min(10.0, remaining)
            revision = await wait_for_change(self._api, lock_prefix(self.name),
                                             revision, wait, status["header"]["applied_index"])

    async def _give_up_quietly(self) -> None:
        try:
            await self._give_up()
        except ConsensusStoreError:
            pass   # the entry goes with the session at the latest

    async def _give_up(self) -> None:
        # The key is kept until the cluster confirms: a failed release can be tried again.
        if self._key is not None:
            body = {"name": self.name, "key": self._key}
            if self.session is not None:
                body.update(self.session.auth)    # the waiter entry is the session's
            await self._api.request("lock_release", body, None)
            self._key = None

    async def release(self) -> None:
        """Release the lock (or stop waiting for it)."""
        self.token = None
        await self._give_up()

    async def __aenter__(self) -> int:
        await self.acquire()
        assert self.token is not None
        return self.token

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


async def trans(lock: AsyncLock, function: Callable[[], Awaitable[T]],
                timeout: float | None = None) -> T:
    """Await ``function()`` holding ``lock`` (like :global.trans); Timeout if not granted."""
    if not await lock.acquire(timeout):
        raise Timeout(f"lock {lock.name!r} not granted within {timeout:g}s")
    try:
        return await function()
    finally:
        await lock.release()
