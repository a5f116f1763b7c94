"""The one thing the shared API layer needs from whoever carries its requests: ``Requester``.

A requester sends one op of the client API (an op of ``consensus_store.protocol``: "put",
"lock_acquire", "watch"...) with its JSON body and returns the JSON result, or raises the typed
error (``errors``).  The network ``Client`` does it with retries and failover over HTTP or the
native protocol; the embedded ``Node`` hands the op to its own service.  The KV calls, the
coordination calls and every recipe (session, lock, groups, election, replicas, watching) use
this protocol only, never a requester's private methods.

``default_consistency`` is how reads wait when a call does not say (``Consistency``):
``resolve_level`` turns a call's ``consistency=`` argument into the word the op carries.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from consensus_store.errors import InvalidRequest
from consensus_store.models import Consistency

JsonObject = dict[str, Any]


@runtime_checkable
class Requester(Protocol):
    """Carries the blocking API's ops (``Client``, the embedded ``Node``)."""

    default_consistency: Consistency | str

    def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        """The JSON result of ``op`` (``timeout`` None: the requester's default)."""
        ...


@runtime_checkable
class AsyncRequester(Protocol):
    """Carries the asyncio API's ops (``AsyncClient``)."""

    default_consistency: Consistency | str

    async def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        ...


def resolve_level(consistency: Consistency | str | None, default: Consistency | str) -> str:
    """The consistency word a read carries: ``consistency``, or ``default`` when None."""
    level = default if consistency is None else consistency
    try:
        return Consistency(level).value
    except ValueError:
        raise InvalidRequest("consistency must be local, session or linearizable") from None


def level_of(requester: Requester | AsyncRequester, consistency: Consistency | str | None) -> str:
    """``resolve_level`` with the requester's default."""
    return resolve_level(consistency, requester.default_consistency)
