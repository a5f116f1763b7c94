"""Python clients and recipes.  Talk to nodes over the network only: never import ``node`` or
``state``.

``Client`` (blocking, thread-safe) and ``AsyncClient`` (asyncio) pick the transport per endpoint
from its URL: ``tcp://host:port`` is the native protocol (pipelined frames, see ``wire``),
``http://host:port`` the HTTP/JSON API.  ``Client.from_config(path)`` prefers native.
"""
from consensus_store.client.aio import AsyncClient
from consensus_store.client.core import RetryPolicy
from consensus_store.client.sync import Client

__all__ = ["AsyncClient", "Client", "RetryPolicy"]
