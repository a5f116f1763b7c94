"""Old import path of the KV calls, now ``consensus_store.api.kv``.

The builders and parsers are re-exported as they are.  ``KVApi`` and ``AsyncKVApi`` here are
for classes written against the old contract, which supply a private ``_request(op, body,
timeout)``: their ``request`` hands over to it.  New code subclasses ``consensus_store.api``'s
classes and supplies ``request``.
"""
from __future__ import annotations

from consensus_store.api import kv as _kv
from consensus_store.api.kv import (Call, cas_call, delete_call, delete_prefix_call, get_call,
                                    parse_cas, parse_deleted, parse_deleted_count, parse_kv,
                                    parse_maybe_kv, parse_range, parse_txn, put_call, range_call,
                                    txn_call)
from consensus_store.api.requester import JsonObject, resolve_level

__all__ = [
    "AsyncKVApi", "Call", "KVApi", "cas_call", "delete_call", "delete_prefix_call", "get_call",
    "parse_cas", "parse_deleted", "parse_deleted_count", "parse_kv", "parse_maybe_kv",
    "parse_range", "parse_txn", "put_call", "range_call", "resolve_level", "txn_call",
]


class KVApi(_kv.KVApi):
    """``consensus_store.api.KVApi`` over a subclass's ``_request``."""

    def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        return self._request(op, body, timeout)

    def _request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        raise NotImplementedError


class AsyncKVApi(_kv.AsyncKVApi):
    """``consensus_store.api.AsyncKVApi`` over a subclass's ``async _request``."""

    async def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        return await self._request(op, body, timeout)

    async def _request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        raise NotImplementedError
