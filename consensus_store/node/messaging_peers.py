"""Calls from this node to the other nodes' ``message_forward`` route (httpx, node token), as
``leases.py`` forwards keepalives.  A peer that does not answer in ``PEER_TIMEOUT_S`` counts
as not holding anything: messaging never waits long on a dead node."""
from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import httpx

log = logging.getLogger("consensus_store.messaging")

PEER_TIMEOUT_S = 1.0
FORWARD_PATH = "/v1/messages/forward"


class Peers:
    def __init__(self, api_by_node: dict[str, str], token: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._api_by_node = api_by_node
        self._token = token
        self._ssl = ssl_context
        self._http: httpx.AsyncClient | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def knows(self, node: str) -> bool:
        return node in self._api_by_node

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                verify=self._ssl if self._ssl is not None else True,
                headers={"Authorization": f"Bearer {self._token}"}, timeout=PEER_TIMEOUT_S,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        return self._http

    async def ask(self, node: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The peer's answer, or None when it is unknown, unreachable or refused."""
        endpoint = self._api_by_node.get(node)
        if endpoint is None:
            return None
        try:
            reply = await self._client().post(endpoint + FORWARD_PATH, json=body)
            answer = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("peer %s: %s", node, exc.__class__.__name__)
            return None
        if reply.status_code >= 400 or not isinstance(answer, dict):
            log.debug("peer %s refused %s: %s", node, body.get("kind"), answer)
            return None
        return answer

    async def ask_all(self, body: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
        nodes = list(self._api_by_node)
        answers = await asyncio.gather(*(self.ask(node, body) for node in nodes))
        return dict(zip(nodes, answers))

    def spawn_all(self, body: dict[str, Any]) -> None:
        """Tell every peer, without waiting for the answers."""
        task = asyncio.get_running_loop().create_task(self.ask_all(body))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()
