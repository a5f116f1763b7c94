"""The key-value API shared by ``Client`` (over the network) and the embedded ``Node``.

Subclasses supply one method, ``_request(op, body, timeout)``, returning the JSON result of an
op ("put", "get", "delete", "cas", "range", "txn"); everything users see (argument checks, result
types, CompareFailed) is defined once, here.
"""
from __future__ import annotations

from typing import Any, Iterable

from consensus_store.errors import CompareFailed, InvalidRequest
from consensus_store.models import Consistency, KeyValue, RangeResult, TxnResult

_MISSING: Any = object()


class KVApi:
    default_consistency = Consistency.SESSION

    def _request(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        raise NotImplementedError

    def put(self, key: str, value: Any, *, timeout: float | None = None) -> KeyValue:
        """Set ``key`` to ``value`` (any JSON value); returns the new record."""
        return KeyValue.from_json(self._request("put", {"key": key, "value": value}, timeout)["kv"])

    def get(self, key: str, *, consistency: Consistency | str | None = None,
            timeout: float | None = None) -> KeyValue | None:
        """The record of ``key``, or None when it does not exist."""
        body = {"key": key, "consistency": self._level(consistency)}
        return KeyValue.maybe(self._request("get", body, timeout)["kv"])

    def delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Delete ``key``; True if it existed."""
        return bool(self._request("delete", {"key": key}, timeout)["deleted"])

    def delete_prefix(self, prefix: str, *, timeout: float | None = None) -> int:
        """Delete every key starting with ``prefix``; returns how many there were."""
        return int(self._request("delete", {"prefix": prefix}, timeout)["deleted"])

    def cas(self, key: str, value: Any, *, expect_value: Any = _MISSING,
            expect_mod_revision: int | None = None, timeout: float | None = None) -> KeyValue:
        """Set ``key`` only if its value (or mod revision; 0 = absent) is as expected.

        Raises CompareFailed, whose ``current`` attribute holds the record found (or None).
        """
        body: dict[str, Any] = {"key": key, "value": value}
        if expect_mod_revision is not None:
            body["expect_mod_revision"] = expect_mod_revision
        elif expect_value is not _MISSING:
            body["expect_value"] = expect_value
        else:
            raise InvalidRequest("cas needs expect_value or expect_mod_revision")
        result = self._request("cas", body, timeout)
        if not result["succeeded"]:
            error = CompareFailed(f"compare failed on {key!r}")
            error.current = KeyValue.maybe(result["kv"])  # type: ignore[attr-defined]
            raise error
        return KeyValue.from_json(result["kv"])

    def range(self, prefix: str = "", *, limit: int = 0,
              consistency: Consistency | str | None = None,
              timeout: float | None = None) -> RangeResult:
        """Keys starting with ``prefix``, in key order, at most ``limit`` (0: all)."""
        body = {"prefix": prefix, "limit": limit, "consistency": self._level(consistency)}
        result = self._request("range", body, timeout)
        return RangeResult(tuple(KeyValue.from_json(kv) for kv in result["kvs"]), result["count"])

    def txn(self, compare: Iterable[dict[str, Any]] = (), success: Iterable[dict[str, Any]] = (),
            failure: Iterable[dict[str, Any]] = (), *, timeout: float | None = None) -> TxnResult:
        """If every compare holds, apply ``success`` ops, else ``failure`` ops: one log entry.

        compare: ``{"key", "target": value|mod_revision|create_revision|version, "op": ==|!=|<|>,
        "value"}``; ops: ``{"op": "put", "key", "value"}``, ``{"op": "delete", "key"}``,
        ``{"op": "get", "key"}``, ``{"op": "range", "prefix", "limit"}``.
        """
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        result = self._request("txn", body, timeout)
        return TxnResult(result["succeeded"], tuple(result["results"]),
                         result.get("header", {}).get("revision", 0))

    def _level(self, consistency: Consistency | str | None) -> str:
        level = self.default_consistency if consistency is None else consistency
        try:
            return Consistency(level).value
        except ValueError:
            raise InvalidRequest("consistency must be local, session or linearizable") from None
