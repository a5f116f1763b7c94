"""``Session``: a lease the cluster keeps while this process keeps it alive.

Keepalives go every TTL/3 to any node (followers forward them to the leader), and again soon
after one fails (a new leader grants every session a fresh TTL, and the session must reach it
within that TTL).  A failed keepalive makes the session SUSPENDED; LOST when the cluster says
it is gone, or when a whole TTL has passed since the *sending* of the last answered keepalive:
by then the leader, whose clock starts no earlier than that send, may have expired it.  So a
holder stops trusting its lock or leadership before anyone else can be granted it.

A session's id can be guessed (it is a Raft index); its key cannot.  The key is made here, sent
with the open (so a retried open finds the same session) and with every request acting for the
session (``auth``): keepalives, close, and the recipes' joins, registrations, locks and
candidacies.  The cluster keeps only its hash; it is not in ``repr``.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Callable

from consensus_store.api.requester import Requester
from consensus_store.errors import ConsensusStoreError, NotFound, Unavailable
from consensus_store.models import ConnectionState

log = logging.getLogger("consensus_store.session")
Listener = Callable[[ConnectionState], None]

RETRY_PAUSE_S = 0.1     # after a failed keepalive: an election ends within a second or two


class Session:
    def __init__(self, api: Requester, ttl: float = 10.0, *, timeout: float | None = None) -> None:
        self._api = api
        self._key = secrets.token_urlsafe(32)
        result = api.request("session_open", {"ttl": ttl, "session_key": self._key}, timeout)
        self.id: int = result["session"]["id"]
        self.ttl: float = result["session"]["ttl"]
        self.node: str = result["session"]["node"]
        self._state = ConnectionState.CONNECTED
        self._last_answered_send = time.monotonic()
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name=f"session-{self.id}",
                                        daemon=True)
        self._thread.start()

    @property
    def auth(self) -> dict[str, Any]:
        """The fields of a request acting for this session: its id and its key."""
        return {"session": self.id, "session_key": self._key}

    def __repr__(self) -> str:
        return f"Session(id={self.id}, ttl={self.ttl:g}, node={self.node!r}, {self._state.value})"

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def alive(self) -> bool:
        """True while the session can be trusted: CONNECTED, and a keepalive sent less than a
        TTL ago was answered (a process that was paused may not have noticed yet)."""
        return (self._state is ConnectionState.CONNECTED
                and time.monotonic() - self._last_answered_send < self.ttl)

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _set_state(self, state: ConnectionState) -> None:
        with self._lock:
            if state is self._state or self._state is ConnectionState.LOST:
                return
            self._state = state
            self._changed.notify_all()
            listeners = list(self._listeners)
        log.info("session %d: %s", self.id, state.value)
        for listener in listeners:
            try:
                listener(state)
            except Exception:  # noqa: BLE001 - one listener must not stop the others
                log.exception("session listener failed")

    def _keep_alive(self) -> None:
        interval = self.ttl / 3
        pause = interval
        while not self._closed.wait(pause):
            sent = time.monotonic()
            pause = min(RETRY_PAUSE_S, interval)    # unless this one is answered
            try:
                self._api.request("session_keepalive", self.auth, interval)
                self._last_answered_send = sent
                pause = interval
                self._set_state(ConnectionState.CONNECTED)
            except NotFound:
                self._set_state(ConnectionState.LOST)
                return
            except ConsensusStoreError as exc:
                if time.monotonic() - self._last_answered_send >= self.ttl:
                    self._set_state(ConnectionState.LOST)
                    self._close_quietly()
                    return
                log.warning("session %d keepalive failed: %s", self.id, exc)
                self._set_state(ConnectionState.SUSPENDED)

    def require_alive(self, deadline: float | None = None) -> None:
        """Return once the session can be trusted (``alive``); while it cannot yet, wait
        (until the monotonic ``deadline``, if given); raise Unavailable when LOST or when the
        deadline passes."""
        with self._changed:
            while not self.alive and self._state is not ConnectionState.LOST:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                # The keepalive thread notifies on a state change; a stale CONNECTED state
                # (after a pause) changes with its next answer, hence the bounded wait.
                self._changed.wait(0.05 if remaining is None else min(0.05, remaining))
            if not self.alive:
                raise Unavailable(f"session {self.id} is {self._state.value}")

    def close(self, timeout: float | None = 5.0) -> None:
        """End the session now: everything it owns is released at once.  Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._state is not ConnectionState.LOST:
            self._close_quietly(timeout)
        self._set_state(ConnectionState.LOST)

    def _close_quietly(self, timeout: float | None = 5.0) -> None:
        self._closed.set()
        try:
            self._api.request("session_close", self.auth, timeout)
        except ConsensusStoreError as exc:
            log.info("session %d close: %s (it will expire)", self.id, exc)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
