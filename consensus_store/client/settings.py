"""``ClientSettings``: what ``Client`` and ``AsyncClient`` expose of their ``ClientCore``, and
``from_config``, which builds a client from a node config (its endpoints, token and TLS files).

Above ``core`` and ``transport`` (it needs both); nothing in ``client`` imports it but the two
clients.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from consensus_store.client.cluster_status import NodeDirectory
from consensus_store.client.core import ClientCore, RetryPolicy
from consensus_store.client.transport import config_endpoints
from consensus_store.config import NodeConfig, load_config
from consensus_store.models import ClusterMember


def configured_members(config: NodeConfig) -> list[ClusterMember]:
    """The members a node config names (this node first): ids for endpoints nobody answers on."""
    nodes = [(config.id, config.raft_address, config.api_address, config.native_address)]
    nodes += [(p.id, p.raft_address, p.api_address, p.native_address) for p in config.peers]
    return [ClusterMember(id=node_id, raft_address=str(raft), api_address=str(api),
                          native_address=str(native) if native is not None else None)
            for node_id, raft, api, native in nodes]


class ClientSettings:
    """What ``Client`` and ``AsyncClient`` expose of their ``ClientCore`` (read-only)."""

    _core: ClientCore
    _directory: NodeDirectory     # which member each endpoint is (see cluster_status)

    @classmethod
    def from_config(cls, path: "str | Path", *, protocol: str | None = None,
                    **options: Any) -> Any:
        """A client for the cluster a node config describes (its endpoints and token).

        Uses the native protocol when every node of the config has a ``native_address``;
        ``protocol="http"`` forces HTTP, ``protocol="native"`` requires native.  With ``[tls]``
        the endpoints are ``https://``/``tls://``, verified against ``tls.ca_file`` (else the
        system's trust store), and when the nodes require client certificates
        (``tls.client_ca_file``) the client presents the node's own certificate.  ``cacert``,
        ``cert``, ``key`` and ``token`` in ``options`` win over the config's.
        """
        config = load_config(path)
        tls = config.tls
        if tls is not None:
            options.setdefault("cacert", tls.ca_file)
            if tls.client_ca_file is not None and "cert" not in options:
                options["cert"], options["key"] = tls.cert_file, tls.key_file
        options.setdefault("token", config.admin_token)
        endpoints = config_endpoints(config, protocol)
        if config.is_replica:      # its own endpoint serves reads only (docs/replicas.md)
            client = cls(endpoints[1:], **options)
            client.use_read_replicas(endpoints[:1])
        else:
            client = cls(endpoints, **options)
        client._directory.learn_members(configured_members(config))
        return client

    def use_read_replicas(self, endpoints: "list[str]") -> None:
        """Spread ``local`` and ``session`` reads over these read replicas (in turn); writes
        and every other call keep going to the endpoints the client was made with (voters)."""
        self._core.add_read_replicas(endpoints)

    @property
    def members(self) -> list[ClusterMember]:
        """The cluster's members as far as this client knows them (from its config or any
        node's status)."""
        return self._directory.members

    @property
    def endpoints(self) -> list[str]:
        return self._core.endpoints

    @property
    def timeout(self) -> float:
        return self._core.timeout

    @property
    def retry(self) -> RetryPolicy:
        return self._core.retry

    @property
    def client_id(self) -> str:
        return self._core.client_id

    @property
    def preferred_endpoint(self) -> str:
        """Where the next request goes first (moves on after a retryable failure)."""
        return self._core.endpoints[self._core.preferred]

    @property
    def seen_index(self) -> int:
        """Highest applied index seen in any answer (what session reads wait for)."""
        return self._core.seen_index
