"""``Client``: the key-value API over the network (HTTP or native protocol), with failover and
safe retries (see ``core`` for the guarantees)."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from consensus_store.api.coordination import DEFAULT_SESSION_TTL_S, CoordinationApi
from consensus_store.api.cluster import ClusterAdminApi
from consensus_store.api.membership import MembershipApi, replica_endpoints, voter_endpoints
from consensus_store.api.messaging import MessagingApi
from consensus_store.api.nodes import NodesApi
from consensus_store.api.kv import KVApi
from consensus_store.api.monitors import MonitorApi
from consensus_store.api.watching import WatchApi
from consensus_store.backup_file import BackupHeader
from consensus_store.client.cluster_status import NodeDirectory
from consensus_store.client.core import DEFAULT_TIMEOUT_S, ClientCore, RetryPolicy
from consensus_store.client.endpoints import scheme_of, tls_context
from consensus_store.client.settings import ClientSettings
from consensus_store.client.snapshot_download import save_snapshot
from consensus_store.client.transport import sync_transport
from consensus_store.errors import RETRYABLE, ConsensusStoreError, Timeout
from consensus_store.models import NodeStatus, Role


class Client(KVApi, CoordinationApi, ClusterAdminApi, MessagingApi, NodesApi,
             WatchApi, MonitorApi, MembershipApi, ClientSettings):
    """Client of a consensus_store cluster; thread-safe (share one between threads).

    >>> client = Client(["tcp://127.0.0.1:7301"], token="...")   # or http://127.0.0.1:7201
    >>> client.put("config/feature", {"enabled": True})
    >>> client.get("config/feature").value

    ``tcp://`` endpoints use the native protocol: one pipelined connection per node for all
    threads.  ``http://`` endpoints use the HTTP/JSON API.  ``tls://`` and ``https://`` are the
    same over TLS: the node's certificate is verified against ``cacert`` (a PEM file; default:
    the system's trust store); ``cert`` and ``key`` present a client certificate.
    """

    def __init__(self, endpoints: Iterable[str], token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S, retry: RetryPolicy = RetryPolicy(),
                 client_id: str | None = None, session_ttl: float = DEFAULT_SESSION_TTL_S,
                 cacert: str | Path | None = None, cert: str | Path | None = None,
                 key: str | Path | None = None) -> None:
        self._init_coordination(session_ttl)
        self._core = ClientCore(endpoints, timeout=timeout, retry=retry, client_id=client_id)
        self._directory = NodeDirectory()
        self._token = token
        self._ssl = tls_context(self._core.endpoints, cacert, cert, key)
        self._transports: dict[str, Any] = {}
        self._transports_lock = threading.Lock()
        for endpoint in self._core.endpoints:
            self._transport(endpoint)

    def close(self) -> None:
        """Close this client's session (releasing what it owns) and its connections."""
        self.close_session()
        with self._transports_lock:
            transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transport(self, endpoint: str) -> Any:
        scheme = scheme_of(endpoint)
        transport = self._transports.get(scheme)
        if transport is None:
            with self._transports_lock:
                transport = self._transports.get(scheme)
                if transport is None:
                    transport = sync_transport(endpoint, self._token, self._core.timeout,
                                               self._ssl)
                    self._transports[scheme] = transport
        return transport

    # ---- the one request path ------------------------------------------------------------------
    def request(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """The JSON result of ``op`` (an op of ``consensus_store.protocol``), with failover and
        safe retries; ``timeout`` None: the client's.  The KV and coordination calls and the
        recipes all come through here (the ``Requester`` protocol of ``consensus_store.api``)."""
        core = self._core
        attempts = core.attempts(op, body, timeout)
        try:
            while (attempt := attempts.next()) is not None:
                try:
                    status, result = self._transport(attempt.endpoint).send(
                        attempt.endpoint, op, attempt.body, attempt.timeout)
                    return core.decode(attempt.endpoint, status, result)
                except RETRYABLE as exc:
                    time.sleep(attempts.failed(attempt, exc))
            raise attempts.give_up()
        finally:
            attempts.close()

    # ---- cluster information -------------------------------------------------------------------
    def status(self, endpoint: str | None = None, *, timeout: float = 2.0) -> NodeStatus:
        """Status of one node (default: the preferred endpoint); raises if it is unreachable."""
        endpoint = (endpoint or self.preferred_endpoint).rstrip("/")
        status, result = self._transport(endpoint).send(endpoint, "status", {}, timeout)
        return NodeStatus.from_json(endpoint, self._core.decode(endpoint, status, result))

    def cluster_status(self, *, timeout: float = 2.0) -> list[NodeStatus]:
        """Status of every endpoint, asked in parallel (one dead node costs at most
        ``timeout``); an unreachable node has role DOWN, its configured id when known (see
        ``cluster_status.NodeDirectory``) and the reason; each live node its lag."""
        def one(endpoint: str) -> NodeStatus | ConsensusStoreError:
            try:
                return self.status(endpoint, timeout=timeout)
            except ConsensusStoreError as exc:
                return exc

        endpoints = self.endpoints
        if len(endpoints) == 1:
            return self._directory.resolve([(endpoints[0], one(endpoints[0]))])
        with ThreadPoolExecutor(max_workers=len(endpoints),
                                thread_name_prefix="cluster-status") as pool:
            answers = list(pool.map(one, endpoints))
        return self._directory.resolve(zip(endpoints, answers))

    def sync_endpoints(self, *, timeout: float | None = None,
                       read_replicas: bool = False) -> list[str]:
        """Use the voters the live membership lists (as etcd's ``Sync``): nodes added since
        this client was built are tried too, removed ones no longer; ``read_replicas``: also
        spread local and session reads over the replicas it lists.  Returns the endpoints."""
        members = self.member_list(timeout=timeout)
        found = voter_endpoints(members, self.endpoints)
        if found:
            self._core.set_voters(found)
        if read_replicas:
            self.use_read_replicas(replica_endpoints(members, self.endpoints))
        return self.endpoints

    def wait_for_leader(self, timeout: float = 15.0) -> NodeStatus:
        """Block until some endpoint reports itself leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for status in self.cluster_status(timeout=1.0):
                if status.role is Role.LEADER:
                    return status
            time.sleep(0.1)
        raise Timeout(f"no leader within {timeout:g}s")

    def snapshot_save(self, path: str | Path, *, consistency: str = "linearizable",
                      timeout: float | None = None) -> BackupHeader:
        """Save the state of the node this client reaches (admin token) as a backup file,
        consistent at one revision and checked (docs/backup.md); its header."""
        endpoints = [self.preferred_endpoint,
                     *(e for e in self.endpoints if e != self.preferred_endpoint)]
        return save_snapshot(endpoints, self._token, self._ssl, Path(path),
                             consistency=consistency, timeout=timeout or self.timeout,
                             status_of=self.status)
