"""``ClientSettings``: what ``Client`` and ``AsyncClient`` expose of their ``ClientCore``, and
``from_config``, which builds a client from a node config (its endpoints, token and TLS files).

Above ``core`` and ``transport`` (it needs both); nothing in ``client`` imports it but the two
clients.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from consensus_store.client.core import ClientCore, RetryPolicy
from consensus_store.client.transport import config_endpoints
from consensus_store.config import load_config


class ClientSettings:
    """What ``Client`` and ``AsyncClient`` expose of their ``ClientCore`` (read-only)."""

    _core: ClientCore

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
        return cls(config_endpoints(config, protocol), **options)

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
