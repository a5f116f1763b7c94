"""``AsyncClient``: ``Client`` for asyncio, over the native protocol or HTTP.

The same methods as ``Client`` (``put``, ``get``, ``delete``, ``delete_prefix``, ``cas``,
``range``, ``txn``, ``status``...) as coroutines, with the same failover, at-most-once writes and
session reads (the policy lives in ``core``).  Concurrent calls share one pipelined connection per
node (``tcp://``) or httpx's keep-alive pool (``http://``):

    async with AsyncClient(["tcp://127.0.0.1:7301"], token=...) as client:
        await asyncio.gather(*(client.put(f"k{i}", i) for i in range(64)))
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Iterable

from consensus_store.api.aio_coordination import AsyncCoordinationApi
from consensus_store.api.coordination import DEFAULT_SESSION_TTL_S
from consensus_store.api.kv import AsyncKVApi
from consensus_store.api.messaging_async import AsyncMessagingApi
from consensus_store.api.nodes import AsyncNodesApi
from consensus_store.api.cluster import AsyncClusterAdminApi
from consensus_store.api.membership import AsyncMembershipApi, replica_endpoints, voter_endpoints
from consensus_store.api.monitors import AsyncMonitorApi
from consensus_store.api.watching import AsyncWatchApi
from consensus_store.backup_file import BackupHeader
from consensus_store.client.cluster_status import NodeDirectory
from consensus_store.client.core import DEFAULT_TIMEOUT_S, ClientCore, RetryPolicy
from consensus_store.client.endpoints import scheme_of, tls_context
from consensus_store.client.settings import ClientSettings
from consensus_store.client.snapshot_download import save_snapshot
from consensus_store.client.transport import async_transport
from consensus_store.errors import RETRYABLE, ConsensusStoreError, Timeout
from consensus_store.models import NodeStatus, Role


class AsyncClient(AsyncKVApi, AsyncMessagingApi, AsyncNodesApi,
                  AsyncCoordinationApi, AsyncClusterAdminApi, AsyncWatchApi, AsyncMonitorApi,
                  AsyncMembershipApi, ClientSettings):
    """asyncio client of a consensus_store cluster (use it from one event loop at a time)."""

    def __init__(self, endpoints: Iterable[str], token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S, retry: RetryPolicy = RetryPolicy(),
                 client_id: str | None = None, session_ttl: float = DEFAULT_SESSION_TTL_S,
                 cacert: str | Path | None = None,
                 cert: str | Path | None = None, key: str | Path | None = None) -> None:
        """``cacert``, ``cert``, ``key``: TLS, as for ``Client``."""
        self._init_coordination(session_ttl)
        self._core = ClientCore(endpoints, timeout=timeout, retry=retry, client_id=client_id)
        self._directory = NodeDirectory()
        self._token = token
        self._ssl = tls_context(self._core.endpoints, cacert, cert, key)
        self._transports: dict[str, Any] = {}
        for endpoint in self._core.endpoints:
            self._transport(endpoint)

    async def aclose(self) -> None:
        """Close this client's session (releasing what it owns) and its connections."""
        await self.close_session()
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _transport(self, endpoint: str) -> Any:
        scheme = scheme_of(endpoint)
        transport = self._transports.get(scheme)
        if transport is None:
            transport = async_transport(endpoint, self._token, self._core.timeout, self._ssl)
            self._transports[scheme] = transport
        return transport

    # ---- the one request path (same loop as Client.request) ------------------------------------
    async def request(self, op: str, body: dict[str, Any],
                      timeout: float | None) -> dict[str, Any]:
        """The JSON result of ``op``, with failover and safe retries (``AsyncRequester``)."""
        core = self._core
        attempts = core.attempts(op, body, timeout)
        try:
            while (attempt := attempts.next()) is not None:
                try:
                    status, result = await self._transport(attempt.endpoint).send(
                        attempt.endpoint, op, attempt.body, attempt.timeout)
                    return core.decode(attempt.endpoint, status, result)
                except RETRYABLE as exc:
                    await asyncio.sleep(attempts.failed(attempt, exc))
            raise attempts.give_up()
        finally:
            attempts.close()

    # ---- cluster information -------------------------------------------------------------------
    async def status(self, endpoint: str | None = None, *, timeout: float = 2.0) -> NodeStatus:
        """Status of one node (default: the preferred endpoint); raises if it is unreachable."""
        endpoint = (endpoint or self.preferred_endpoint).rstrip("/")
        status, result = await self._transport(endpoint).send(endpoint, "status", {}, timeout)
        return NodeStatus.from_json(endpoint, self._core.decode(endpoint, status, result))

    async def cluster_status(self, *, timeout: float = 2.0) -> list[NodeStatus]:
        """Status of every endpoint (asked concurrently); as ``Client.cluster_status``."""
        async def one(endpoint: str) -> NodeStatus | ConsensusStoreError:
            try:
                return await self.status(endpoint, timeout=timeout)
            except ConsensusStoreError as exc:
                return exc
        endpoints = self.endpoints
        answers = await asyncio.gather(*(one(e) for e in endpoints))
        return self._directory.resolve(zip(endpoints, answers))

    async def sync_endpoints(self, *, timeout: float | None = None,
                             read_replicas: bool = False) -> list[str]:
        """``Client.sync_endpoints`` for asyncio."""
        members = await self.member_list(timeout=timeout)
        found = voter_endpoints(members, self.endpoints)
        if found:
            self._core.set_voters(found)
        if read_replicas:
            self.use_read_replicas(replica_endpoints(members, self.endpoints))
        return self.endpoints

    async def wait_for_leader(self, timeout: float = 15.0) -> NodeStatus:
        """Wait until some endpoint reports itself leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for status in await self.cluster_status(timeout=1.0):
                if status.role is Role.LEADER:
                    return status
            await asyncio.sleep(0.1)
        raise Timeout(f"no leader within {timeout:g}s")

    async def snapshot_save(self, path: str | Path, *, consistency: str = "linearizable",
                            timeout: float | None = None) -> BackupHeader:
        """``Client.snapshot_save``: the download runs on a worker thread."""
        loop = asyncio.get_running_loop()
        endpoints = [self.preferred_endpoint,
                     *(e for e in self.endpoints if e != self.preferred_endpoint)]
        return await asyncio.to_thread(
            save_snapshot, endpoints, self._token, self._ssl, Path(path),
            consistency=consistency, timeout=timeout or self.timeout,
            status_of=lambda e: asyncio.run_coroutine_threadsafe(self.status(e), loop).result())
