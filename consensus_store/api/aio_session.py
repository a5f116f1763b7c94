"""``AsyncSession``: ``Session`` for asyncio (``AsyncClient``), with the same rules.

Opened by ``await AsyncSession.open(api, ttl)`` (a constructor cannot await); a keepalive task
on the running loop sends ``session_keepalive`` every TTL/3, and again soon after one fails.
States, ``alive``, listeners, the session key and ``auth`` are as in ``session.py``: LOST once
the cluster says the session is gone, or a whole TTL after the sending of the last answered
keepalive; a holder stops trusting its lock or leadership before anyone else can be given it.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, Callable

from consensus_store.api.requester import AsyncRequester
from consensus_store.api.session import RETRY_PAUSE_S
from consensus_store.errors import ConsensusStoreError, NotFound, Unavailable
from consensus_store.models import ConnectionState

log = logging.getLogger("consensus_store.session")
Listener = Callable[[ConnectionState], None]


class AsyncSession:
    """Use ``await AsyncSession.open(...)`` (or ``await client.session()``); ``async with``
    closes it."""

    def __init__(self, api: AsyncRequester, key: str, result: dict[str, Any]) -> None:
        self._api = api
        self._key = key
        self.id: int = result["session"]["id"]
        self.ttl: float = result["session"]["ttl"]
        self.node: str = result["session"]["node"]
        self._state = ConnectionState.CONNECTED
        self._last_answered_send = time.monotonic()
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()      # set on every state change, then cleared
        self._closed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._keep_alive(),
                                                             name=f"session-{self.id}")

    @classmethod
    async def open(cls, api: AsyncRequester, ttl: float = 10.0, *,
                   timeout: float | None = None) -> "AsyncSession":
        key = secrets.token_urlsafe(32)
        result = await api.request("session_open", {"ttl": ttl, "session_key": key}, timeout)
        return cls(api, key, result)

    @property
    def auth(self) -> dict[str, Any]:
        """The fields of a request acting for this session: its id and its key."""
        return {"session": self.id, "session_key": self._key}

    def __repr__(self) -> str:
        return (f"AsyncSession(id={self.id}, ttl={self.ttl:g}, node={self.node!r}, "
                f"{self._state.value})")

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def alive(self) -> bool:
        """CONNECTED, and a keepalive sent less than a TTL ago was answered."""
        return (self._state is ConnectionState.CONNECTED
                and time.monotonic() - self._last_answered_send < self.ttl)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state or self._state is ConnectionState.LOST:
            return
        self._state = state
        self._changed.set()
        self._changed.clear()
        log.info("session %d: %s", self.id, state.value)
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:  # noqa: BLE001 - one listener must not stop the others
                log.exception("session listener failed")

    async def _keep_alive(self) -> None:
        interval = self.ttl / 3
        pause = interval
        while True:
            try:
                await asyncio.wait_for(self._closed.wait(), pause)
                return
            except TimeoutError:
                pass
            sent = time.monotonic()
            pause = min(RETRY_PAUSE_S, interval)    # unless this one is answered
            try:
                await self._api.request("session_keepalive", self.auth, interval)
                self._last_answered_send = sent
                pause = interval
                self._set_state(ConnectionState.CONNECTED)
            except NotFound:
                self._set_state(ConnectionState.LOST)
                return
            except ConsensusStoreError as exc:
                if time.monotonic() - self._last_answered_send >= self.ttl:
                    self._set_state(ConnectionState.LOST)
                    self._closed.set()
                    await self._close_quietly()
                    return
                log.warning("session %d keepalive failed: %s", self.id, exc)
                self._set_state(ConnectionState.SUSPENDED)

    async def require_alive(self, deadline: float | None = None) -> None:
        """Return once the session can be trusted (``alive``); wait while it cannot yet
        (until the monotonic ``deadline``); Unavailable when LOST or past the deadline."""
        while not self.alive and self._state is not ConnectionState.LOST:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            # A stale CONNECTED state (after a pause) changes with the next answer: bounded.
            try:
                await asyncio.wait_for(self._changed.wait(),
                                       0.05 if remaining is None else min(0.05, remaining))
            except TimeoutError:
                pass
        if not self.alive:
            raise Unavailable(f"session {self.id} is {self._state.value}")

    async def close(self, timeout: float | None = 5.0) -> None:
        """End the session now: everything it owns is released at once.  Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._state is not ConnectionState.LOST:
            await self._close_quietly(timeout)
        self._set_state(ConnectionState.LOST)
        if self._task is not asyncio.current_task():
            await asyncio.gather(self._task, return_exceptions=True)

    async def _close_quietly(self, timeout: float | None = 5.0) -> None:
        try:
            await self._api.request("session_close", self.auth, timeout)
        except ConsensusStoreError as exc:
            log.info("session %d close: %s (it will expire)", self.id, exc)

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
