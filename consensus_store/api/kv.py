"""The key-value calls shared by ``Client``, ``AsyncClient`` (over the network) and the embedded
``Node``.

Every operation is described once, by a pure function that checks the arguments and returns a
``Call``: the op name, the JSON body to send and the function that turns the JSON result into
what users see (``KeyValue``, ``RangeResult``, ``CompareFailed``...).  ``KVApi`` (blocking) and
``AsyncKVApi`` (asyncio) are thin shells over those functions for any ``Requester``: a subclass
supplies one public method, ``request(op, body, timeout)``, returning the JSON result of an op
("put", "get", "delete", "cas", "range", "txn").

Imports ``models``, ``errors`` and ``requester`` only.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable, NamedTuple

from consensus_store.api.requester import JsonObject, resolve_level
from consensus_store.errors import CompareFailed, InvalidRequest
from consensus_store.models import Consistency, KeyValue, RangeResult, TxnResult

_MISSING: Any = object()


class Call(NamedTuple):
    """One API operation, before it is sent: what to send and how to read the answer."""

    op: str
    body: dict[str, Any]
    parse: Callable[[dict[str, Any]], Any]


# ---- request building (pure) -------------------------------------------------------------------
def put_call(key: str, value: Any, session: Any = None) -> Call:
    """``session``: a ``Session`` (sync or async: anything with its ``auth`` fields) that
    will own the key, deleted when the session ends or expires (etcd's lease, ZooKeeper's
    ephemeral node); None: the key stays."""
    body: dict[str, Any] = {"key": key, "value": value}
    if session is not None:
        auth = getattr(session, "auth", None)
        if not isinstance(auth, dict):
            raise InvalidRequest("session must be a Session (client.session()) or None")
        body.update(auth)
    return Call("put", body, parse_kv)


def get_call(key: str, level: str) -> Call:
    return Call("get", {"key": key, "consistency": level}, parse_maybe_kv)


def delete_call(key: str) -> Call:
    return Call("delete", {"key": key}, parse_deleted)


def delete_prefix_call(prefix: str) -> Call:
    return Call("delete", {"prefix": prefix}, parse_deleted_count)


def cas_call(key: str, value: Any, expect_value: Any = _MISSING,
             expect_mod_revision: int | None = None) -> Call:
    body: dict[str, Any] = {"key": key, "value": value}
    if expect_mod_revision is not None:
        body["expect_mod_revision"] = expect_mod_revision
    elif expect_value is not _MISSING:
        body["expect_value"] = expect_value
    else:
        raise InvalidRequest("cas needs expect_value or expect_mod_revision")
    return Call("cas", body, partial(parse_cas, key))


def range_call(prefix: str, limit: int, level: str) -> Call:
    return Call("range", {"prefix": prefix, "limit": limit, "consistency": level}, parse_range)


def txn_call(compare: Iterable[dict[str, Any]], success: Iterable[dict[str, Any]],
             failure: Iterable[dict[str, Any]]) -> Call:
    body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
    return Call("txn", body, parse_txn)


# ---- result parsing (pure) ---------------------------------------------------------------------
def parse_kv(result: dict[str, Any]) -> KeyValue:
    return KeyValue.from_json(result["kv"])


def parse_maybe_kv(result: dict[str, Any]) -> KeyValue | None:
    return KeyValue.maybe(result["kv"])


def parse_deleted(result: dict[str, Any]) -> bool:
    return bool(result["deleted"])


def parse_deleted_count(result: dict[str, Any]) -> int:
    return int(result["deleted"])


def parse_cas(key: str, result: dict[str, Any]) -> KeyValue:
    if not result["succeeded"]:
        error = CompareFailed(f"compare failed on {key!r}")
        error.current = KeyValue.maybe(result["kv"])  # type: ignore[attr-defined]
        raise error
    return KeyValue.from_json(result["kv"])


def parse_range(result: dict[str, Any]) -> RangeResult:
    return RangeResult(tuple(KeyValue.from_json(kv) for kv in result["kvs"]), result["count"])


def parse_txn(result: dict[str, Any]) -> TxnResult:
    return TxnResult(result["succeeded"], tuple(result["results"]),
                     result.get("header", {}).get("revision", 0))


_TXN_DOC = """If every compare holds, apply ``success`` ops, else ``failure`` ops: one log entry.

        compare: ``{"key", "target": value|mod_revision|create_revision|version, "op": ==|!=|<|>,
        "value"}``; ops: ``{"op": "put", "key", "value"}``, ``{"op": "delete", "key"}``,
        ``{"op": "get", "key"}``, ``{"op": "range", "prefix", "limit"}``.
        """


class KVApi:
    """The KV calls over ``request`` (the ``Requester`` protocol), blocking."""

    default_consistency: Consistency | str = Consistency.SESSION

    def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        """The JSON result of ``op``; what a subclass supplies."""
        raise NotImplementedError

    def _request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        # The name ``request`` had before it was public; callers outside the package use it.
        return self.request(op, body, timeout)

    def _kv_call(self, call: Call, timeout: float | None) -> Any:
        return call.parse(self.request(call.op, call.body, timeout))

    def put(self, key: str, value: Any, *, session: Any = None,
            timeout: float | None = None) -> KeyValue:
        """Set ``key`` to ``value`` (any JSON value); returns the new record.  With
        ``session`` the key is ephemeral: it goes when that session ends or expires."""
        return self._kv_call(put_call(key, value, session), timeout)

    def get(self, key: str, *, consistency: Consistency | str | None = None,
            timeout: float | None = None) -> KeyValue | None:
        """The record of ``key``, or None when it does not exist."""
        return self._kv_call(get_call(key, self._level(consistency)), timeout)

    def delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Delete ``key``; True if it existed."""
        return self._kv_call(delete_call(key), timeout)

    def delete_prefix(self, prefix: str, *, timeout: float | None = None) -> int:
        """Delete every key starting with ``prefix``; returns how many there were."""
        return self._kv_call(delete_prefix_call(prefix), timeout)

    def cas(self, key: str, value: Any, *, expect_value: Any = _MISSING,
            expect_mod_revision: int | None = None, timeout: float | None = None) -> KeyValue:
        """Set ``key`` only if its value (or mod revision; 0 = absent) is as expected.

        Raises CompareFailed, whose ``current`` attribute holds the record found (or None).
        """
        return self._kv_call(cas_call(key, value, expect_value, expect_mod_revision), timeout)

    def range(self, prefix: str = "", *, limit: int = 0,
              consistency: Consistency | str | None = None,
              timeout: float | None = None) -> RangeResult:
        """Keys starting with ``prefix``, in key order, at most ``limit`` (0: all)."""
        return self._kv_call(range_call(prefix, limit, self._level(consistency)), timeout)

    def txn(self, compare: Iterable[dict[str, Any]] = (), success: Iterable[dict[str, Any]] = (),
            failure: Iterable[dict[str, Any]] = (), *, timeout: float | None = None) -> TxnResult:
        return self._kv_call(txn_call(compare, success, failure), timeout)

    txn.__doc__ = _TXN_DOC

    def _level(self, consistency: Consistency | str | None) -> str:
        return resolve_level(consistency, self.default_consistency)


class AsyncKVApi:
    """``KVApi`` for asyncio: the same methods, as coroutines, over ``async request`` (the
    ``AsyncRequester`` protocol)."""

    default_consistency: Consistency | str = Consistency.SESSION

    async def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        """The JSON result of ``op``; what a subclass supplies."""
        raise NotImplementedError

    async def _request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        # The name ``request`` had before it was public.
        return await self.request(op, body, timeout)

    async def _kv_call(self, call: Call, timeout: float | None) -> Any:
        return call.parse(await self.request(call.op, call.body, timeout))

    async def put(self, key: str, value: Any, *, session: Any = None,
                  timeout: float | None = None) -> KeyValue:
        """Set ``key`` to ``value`` (any JSON value); returns the new record.  With
        ``session`` the key is ephemeral: it goes when that session ends or expires."""
        return await self._kv_call(put_call(key, value, session), timeout)

    async def get(self, key: str, *, consistency: Consistency | str | None = None,
                  timeout: float | None = None) -> KeyValue | None:
        """The record of ``key``, or None when it does not exist."""
        return await self._kv_call(get_call(key, self._level(consistency)), timeout)

    async def delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Delete ``key``; True if it existed."""
        return await self._kv_call(delete_call(key), timeout)

    async def delete_prefix(self, prefix: str, *, timeout: float | None = None) -> int:
        """Delete every key starting with ``prefix``; returns how many there were."""
        return await self._kv_call(delete_prefix_call(prefix), timeout)

    async def cas(self, key: str, value: Any, *, expect_value: Any = _MISSING,
                  expect_mod_revision: int | None = None,
                  timeout: float | None = None) -> KeyValue:
        """Set ``key`` only if its value (or mod revision; 0 = absent) is as expected.

        Raises CompareFailed, whose ``current`` attribute holds the record found (or None).
        """
        return await self._kv_call(cas_call(key, value, expect_value, expect_mod_revision), timeout)

    async def range(self, prefix: str = "", *, limit: int = 0,
                    consistency: Consistency | str | None = None,
                    timeout: float | None = None) -> RangeResult:
        """Keys starting with ``prefix``, in key order, at most ``limit`` (0: all)."""
        return await self._kv_call(range_call(prefix, limit, self._level(consistency)), timeout)

    async def txn(self, compare: Iterable[dict[str, Any]] = (),
                  success: Iterable[dict[str, Any]] = (),
                  failure: Iterable[dict[str, Any]] = (), *,
                  timeout: float | None = None) -> TxnResult:
        return await self._kv_call(txn_call(compare, success, failure), timeout)

    txn.__doc__ = _TXN_DOC

    def _level(self, consistency: Consistency | str | None) -> str:
        return resolve_level(consistency, self.default_consistency)
