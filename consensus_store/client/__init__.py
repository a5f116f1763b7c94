"""Python clients: the shared API layer (``consensus_store.api``: KV calls, coordination calls,
recipes) carried over the network.  Never imports ``node`` or ``state``.

``Client`` (blocking, thread-safe) and ``AsyncClient`` (asyncio) pick the transport per endpoint
from its URL: ``tcp://host:port`` is the native protocol (pipelined frames, see ``wire``),
``http://host:port`` the HTTP/JSON API.  ``Client.from_config(path)`` prefers native.

Modules, each importing only those before it: ``endpoints`` (URL schemes); ``cluster_status``
(names each endpoint's node, down ones too, and its lag; no I/O); ``core`` (retries, write ids,
session index; no I/O); the transports: ``http``, and ``native_common`` and ``native_tls`` under
``native_async`` and ``native``; ``transport`` (which one serves an endpoint); ``settings``
(``from_config``); ``sync`` (``Client``) and ``aio`` (``AsyncClient``).
``coordination``, ``session``, ``lock``, ``groups``, ``election``, ``replicas`` and ``watching``
are the old import paths of what now lives in ``consensus_store.api``.
"""
from consensus_store.client.aio import AsyncClient
from consensus_store.client.core import RetryPolicy
from consensus_store.client.sync import Client

__all__ = ["AsyncClient", "Client", "RetryPolicy"]
