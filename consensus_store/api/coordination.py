"""The coordination calls (sessions, groups, registry, locks, elections, replicas) as a mixin,
``CoordinationApi``, for any ``Requester``: the network ``Client`` and the embedded ``Node``.

It keeps the requester's own session (opened on first use, renewed once lost) and hands the
recipes the requester and a session factory; it calls nothing but ``request`` and
``default_consistency``.  Imports ``models``, ``errors`` and this package only.
"""
from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from consensus_store.api.election import Election
from consensus_store.api.groups import Groups
from consensus_store.api.lock import Lock, trans
from consensus_store.api.replicas import Replicas
from consensus_store.api.requester import JsonObject, Requester, level_of
from consensus_store.api.session import Session
from consensus_store.models import ConnectionState, Consistency

T = TypeVar("T")
DEFAULT_SESSION_TTL_S = 10.0


class CoordinationApi:
    """The coordination calls; the class it is mixed into supplies ``request`` and
    ``default_consistency`` (the ``Requester`` protocol), and calls ``_init_coordination``."""

    if TYPE_CHECKING:
        default_consistency: Consistency | str

        def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject: ...

    def _init_coordination(self, session_ttl: float = DEFAULT_SESSION_TTL_S) -> None:
        self.session_ttl = session_ttl
        self._default_session: Session | None = None
        self._default_session_lock = threading.Lock()

    def default_session(self) -> Session:
        """This client's own session, opened on first use, renewed after it is lost."""
        with self._default_session_lock:
            session = self._default_session
            if session is None or session.state is ConnectionState.LOST:
                session = self._default_session = Session(self, self.session_ttl)
            return session

    def session(self, ttl: float | None = None) -> Session:
        """A new explicit session (a context manager: closing it releases all it owns)."""
        return Session(self, ttl or self.session_ttl)

    def close_session(self) -> None:
        if self._default_session is not None:
            self._default_session.close()

    @property
    def groups(self) -> Groups:
        return Groups(self, self.default_session)

    # ---- registry (:global) -------------------------------------------------------------------
    def register_name(self, name: str, value: Any = None, *, timeout: float | None = None) -> bool:
        """Register ``name`` for this client's session; False if taken (never overwritten)."""
        body = {"name": name, "value": value, **self.default_session().auth}
        return self.request("name_register", body, timeout)["registered"]

    def whereis_name(self, name: str, *, consistency: str | None = None,
                     timeout: float | None = None) -> Any:
        """The value registered under ``name``, or None when the name is free."""
        body = {"name": name, "consistency": level_of(self, consistency)}
        owner = self.request("names_whereis", body, timeout)["owner"]
        return None if owner is None else owner["value"]

    def unregister_name(self, name: str, *, timeout: float | None = None) -> bool:
        """Unregister a name this client's session registered (an admin token: any name)."""
        body: dict[str, Any] = {"name": name}
        session = self._default_session
        if session is not None:
            body.update(session.auth)
        return self.request("name_unregister", body, timeout)["unregistered"]

    def registered_names(self, *, consistency: str | None = None,
                         timeout: float | None = None) -> list[str]:
        return [n["name"] for n in self.names(consistency=consistency, timeout=timeout)]

    def names(self, *, consistency: str | None = None,
              timeout: float | None = None) -> list[dict[str, Any]]:
        """Every registration: name, value, owning session and its node."""
        body = {"consistency": level_of(self, consistency)}
        return self.request("names_list", body, timeout)["names"]

    def locks(self, *, consistency: str | None = None,
              timeout: float | None = None) -> list[dict[str, Any]]:
        """Every lock with its holder (session, fencing token) and waiters, oldest first."""
        body = {"consistency": level_of(self, consistency)}
        return self.request("locks_list", body, timeout)["locks"]

    # ---- locks, elections, replicas -----------------------------------------------------------
    def lock(self, name: str, *, ttl: float | None = None, owner: Any = None) -> Lock:
        """A fenced FIFO lock; ``ttl`` gives it a session of its own with that TTL."""
        factory: Callable[[], Session] = self.default_session
        if ttl is not None:
            factory = _OwnSession(self, ttl)
        return Lock(self, name, factory, owner)

    def trans(self, name: str, function: Callable[[], T], *, timeout: float | None = None) -> T:
        """Run ``function`` under lock ``name`` (like :global.trans)."""
        return trans(self.lock(name), function, timeout)

    def election(self, name: str) -> Election:
        return Election(self, name, self.default_session)

    def replicas(self, name: str, worker: Any, *, replication_factor: int = 2,
                 model: str = "active_passive", member: str | None = None,
                 priority: int = 0) -> Replicas:
        """Offer a replica of ``worker`` under ``name``; started (see ``Replicas``)."""
        return Replicas(self, name, worker, session=self.default_session,
                        member=member or uuid.uuid4().hex[:12],
                        replication_factor=replication_factor, model=model,
                        priority=priority).start()


class _OwnSession:
    """A session made on first use and reused while alive (for ``lock(ttl=...)``)."""

    def __init__(self, api: Requester, ttl: float) -> None:
        self._api, self._ttl = api, ttl
        self._session: Session | None = None

    def __call__(self) -> Session:
        if self._session is None or self._session.state is ConnectionState.LOST:
            self._session = Session(self._api, self._ttl)
        return self._session
