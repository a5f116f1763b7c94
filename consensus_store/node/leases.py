"""Session liveness, decided by the leader alone (as in patroni's raft store).

Keepalives never touch the Raft log: the leader notes when it last heard from each session in
memory.  A session silent for longer than its TTL is ended by a replicated ``session_expire``
proposed by the leader.  Whenever this node becomes leader it grants every session a fresh full
TTL, so no follower's or client's clock, and no old leader's memory, ever expires a session.
Followers forward keepalives to the leader's API.  A keepalive needs the session's key (or an
admin caller): the leader hashes the presented key and compares it with the hash the state
machine keeps (``state/sessions.py``), so a guessed session id keeps nothing alive.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import httpx

from consensus_store.errors import Unavailable, error_from_json
from consensus_store.node.engine import Engine
from consensus_store.node.session_keys import authorize_session

log = logging.getLogger("consensus_store.leases")

CHECK_INTERVAL_S = 0.2


class LeaseKeeper:
    def __init__(self, engine: Engine, api_by_node: dict[str, str], token: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: what to call the leader's API with when it is ``https://``."""
        self._engine = engine
        self._api_by_node = api_by_node
        self._token = token
        self._ssl = ssl_context
        self._last_seen: dict[int, float] = {}
        self._expiring: set[int] = set()
        self._leading = False
        self._task: asyncio.Task | None = None
        self._http: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._http is not None:
            await self._http.aclose()

    def _sessions(self) -> dict[int, float]:
        if not self._engine.started:
            return {}
        with self._engine.reading() as machine:
            return {s.id: s.ttl_s for s in machine.sessions.sessions.values()}

    def _is_leader(self) -> bool:
        return self._engine.is_leader()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                self._check(loop.time())
            except Exception:  # noqa: BLE001 - the keeper must outlive one bad round
                log.exception("lease check failed")
            await asyncio.sleep(CHECK_INTERVAL_S)

    def _check(self, now: float) -> None:
        if not self._is_leader():
            self._leading = False
            self._last_seen.clear()
            return
        sessions = self._sessions()
        if not self._leading:
            self._leading = True
            self._last_seen = {sid: now for sid in sessions}   # fresh full TTL for everyone
        for sid in list(self._last_seen):
            if sid not in sessions:
                del self._last_seen[sid]
        for sid, ttl in sessions.items():
            seen = self._last_seen.setdefault(sid, now)
            if now - seen > ttl and sid not in self._expiring:
                self._expiring.add(sid)
                asyncio.get_running_loop().create_task(self._expire(sid))

    async def _expire(self, session_id: int) -> None:
        try:
            await self._engine.write({"op": "session_expire", "session": session_id}, 5.0)
            log.info("session %d expired", session_id)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("could not expire session %d: %s", session_id, exc)
        finally:
            self._expiring.discard(session_id)

    async def keepalive(self, session_id: int, leader_id: str | None, key: str | None, *,
                        admin: bool = False, forwarded: bool = False) -> dict[str, Any]:
        """``key``: the session key the caller presented; ``admin``: the caller may keep any
        session alive without it."""
        if self._is_leader():
            ttl = authorize_session(self._engine, session_id, key, admin).ttl_s
            self._last_seen[session_id] = asyncio.get_running_loop().time()
            return {"session": session_id, "ttl": ttl}
        endpoint = self._api_by_node.get(leader_id or "")
        if endpoint is None or forwarded:   # one hop only: leadership is moving
            raise Unavailable("no leader known to forward the keepalive to")
        body: dict[str, Any] = {"session": session_id, "forwarded": True, "as_admin": admin}
        if key is not None:
            body["session_key"] = key
        return await self._forward(endpoint, body)

    async def _forward(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._http is None:
            self._http = httpx.AsyncClient(
                verify=self._ssl if self._ssl is not None else True,
                headers={"Authorization": f"Bearer {self._token}"}, timeout=2.0)
        try:
            reply = await self._http.post(f"{endpoint}/v1/session/keepalive", json=body)
            body = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"leader at {endpoint} unreachable: {exc.__class__.__name__}") from None
        if reply.status_code >= 400:
            raise error_from_json(reply.status_code, body)
        body.pop("header", None)
        return body
