"""Fenced FIFO locks (``client.lock(name)``) and ``trans`` (:global.trans).

Each acquire appends a waiter entry; the oldest live waiter holds the lock.  The grant's
``token`` (the Raft index of its entry) strictly increases per lock: pass it to the resource
you protect and have it reject tokens lower than one it has seen (fencing).  A lock belongs to a
session: if its holder dies, the lock passes on after the session's TTL; while the session is
SUSPENDED the holder must assume it may have lost the lock.
"""
from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from consensus_store.api.requester import Requester, level_of
from consensus_store.api.session import Session
from consensus_store.api.watching import wait_for_change
from consensus_store.coordination_keys import lock_prefix
from consensus_store.errors import ConsensusStoreError, Timeout

T = TypeVar("T")


class Lock:
    def __init__(self, api: Requester, name: str, session: Callable[[], Session],
                 owner: Any = None) -> None:
        self._api = api
        self.name = name
        self._session_factory = session
        self.owner = owner
        self.session: Session | None = None
        self._key: str | None = None
        self.token: int | None = None

    @property
    def is_held(self) -> bool:
        """Held, as far as this process can tell (False while the session is suspended)."""
        return self.token is not None and self.session is not None and self.session.alive

    def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> bool:
        """Wait (up to ``timeout``; forever if None) for the lock; True once held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._key is not None:
            self._give_up()          # an earlier release that failed: finish it first
        self.session = self._session_factory()
        self.session.require_alive()
        body = {"name": self.name, "owner": self.owner, **self.session.auth}
        result = self._api.request("lock_acquire", body, None)
        self._key, token = result["key"], result["token"]
        try:
            return self._wait_for_turn(token, deadline, blocking)
        except BaseException:
            self._give_up_quietly()   # else our stale waiter entry would block the next try
            raise

    def _wait_for_turn(self, token: int, deadline: float | None, blocking: bool) -> bool:
        assert self._key is not None and self.session is not None
        revision = token
        while True:
            body = {"name": self.name, "consistency": level_of(self._api, None)}
            status = self._api.request("locks_status", body, None)
            holder = status["holder"]
            if holder is not None and holder["key"] == self._key:
                self.session.require_alive(deadline)   # granted to a session we still hold
                self.token = token
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if not blocking or (remaining is not None and remaining <= 0):
                self._give_up()
                return False
            self.session.require_alive(deadline)
            wait = 10.0 if remaining is None else min(10.0, remaining)
            revision = wait_for_change(self._api, lock_prefix(self.name), revision,
                                       wait, status["header"]["applied_index"])

    def _give_up_quietly(self) -> None:
        try:
            self._give_up()
        except ConsensusStoreError:
            pass   # the entry goes with the session at the latest

    def _give_up(self) -> None:
        # The key is kept until the cluster confirms: a failed release can be tried again.
        if self._key is not None:
            body = {"name": self.name, "key": self._key}
            if self.session is not None:
                body.update(self.session.auth)    # the waiter entry is the session's
            self._api.request("lock_release", body, None)
            self._key = None

    def release(self) -> None:
        """Release the lock (or stop waiting for it)."""
        self.token = None
        self._give_up()

    def __enter__(self) -> int:
        self.acquire()
        assert self.token is not None
        return self.token

    def __exit__(self, *exc: object) -> None:
        self.release()


def trans(lock: Lock, function: Callable[[], T], timeout: float | None = None) -> T:
    """Run ``function`` holding ``lock`` (like :global.trans); Timeout if not granted in time."""
    if not lock.acquire(timeout):
        raise Timeout(f"lock {lock.name!r} not granted within {timeout:g}s")
    try:
        return function()
    finally:
        lock.release()
