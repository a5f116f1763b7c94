"""Active/passive replicas of a worker (Elixir ProcessHub's redundancy signal).

Every process calling ``client.replicas(name, worker)`` offers a replica.  The oldest
``replication_factor`` candidates (by priority, then age) are replicas; in ``active_passive``
the first is active and the others passive, in ``active_active`` all are active; the rest stand
by.  The worker's ``on_active()`` / ``on_passive()`` (and ``on_standby()`` if it has one) are
called on every transition.  A replica whose session is not CONNECTED demotes itself at once, so
an active replica that lost contact stops before another one can be promoted.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from consensus_store.api.election import Election
from consensus_store.api.requester import Requester
from consensus_store.api.session import Session
from consensus_store.models import ConnectionState

log = logging.getLogger("consensus_store.replicas")
MODELS = ("active_passive", "active_active")


class Replicas:
    def __init__(self, api: Requester, name: str, worker: Any, *, session: Callable[[], Session],
                 member: str, replication_factor: int = 2, model: str = "active_passive",
                 priority: int = 0) -> None:
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}")
        if replication_factor < 1:
            raise ValueError("replication_factor must be >= 1")
        self.worker = worker
        self.member = member
        self.replication_factor = replication_factor
        self.model = model
        self.role: str | None = None     # "active" / "passive" / "standby"
        self._election = Election(api, f"replicas/{name}", session)
        self._priority = priority
        self._stop = threading.Event()
        self._transition_lock = threading.RLock()
        self._thread: threading.Thread | None = None

    def start(self) -> "Replicas":
        self._election.campaign(self.member, priority=self._priority, block=False)
        assert self._election.session is not None
        self._election.session.add_listener(self._on_session)
        self._thread = threading.Thread(target=self._follow, name=f"replicas-{self.member}",
                                        daemon=True)
        self._thread.start()
        return self

    def _role_now(self) -> str:
        session = self._election.session
        if session is None or not session.alive:
            return "standby"
        ranking = [c["member"] for c in self._election.candidates()]
        if self.member not in ranking[: self.replication_factor]:
            return "standby"
        if self.model == "active_active" or ranking[0] == self.member:
            return "active"
        return "passive"

    def _transition(self, role: str) -> None:
        with self._transition_lock:
            session = self._election.session
            if role == "active" and (session is None or not session.alive):
                role = "passive"   # never active on a session we cannot vouch for
            if role == self.role:
                return
            self.role = role
            self._signal(role)

    def _signal(self, role: str) -> None:
        handler = getattr(self.worker, f"on_{role}", None)
        if handler is not None:
            try:
                handler()
            except Exception:  # noqa: BLE001 - the worker's bug must not stop the signal
                log.exception("worker on_%s failed", role)

    def _on_session(self, state: ConnectionState) -> None:
        if state is not ConnectionState.CONNECTED and self.role == "active":
            self._transition("passive" if state is ConnectionState.SUSPENDED else "standby")

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                for _ in self._election.observe_changes(stop=self._stop):
                    self._transition(self._role_now())
            except Exception as exc:  # noqa: BLE001 - keep following through outages
                log.warning("replicas %s: %s", self.member, exc)
                self._transition("standby" if self.role == "active" else self.role or "standby")
                self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        try:
            self._election.resign()
        finally:
            self._transition("standby")
