"""``wait_for_change`` for asyncio: the async recipes' building block (as ``watching``'s)."""
from __future__ import annotations

from consensus_store.api.requester import AsyncRequester
from consensus_store.errors import ConsensusStoreError


async def wait_for_change(api: AsyncRequester, prefix: str, after_revision: int, wait: float,
                          floor_hint: int = 0) -> int:
    """Return once something under ``prefix`` changed after ``after_revision`` (or ``wait``
    passed): the revision to wait from next time.  A compacted history counts as a change:
    callers re-read the state after every return anyway."""
    body = {"prefix": prefix, "after_revision": after_revision, "wait": wait}
    try:
        result = await api.request("watch", body, wait + 5.0)
    except ConsensusStoreError as exc:
        if exc.code == "compacted":
            return max(after_revision, floor_hint)
        raise
    events = result["events"]
    if not events:
        return max(after_revision, result.get("through", after_revision))
    last = events[-1]
    return last["kv"]["mod_revision"] if last["type"] == "put" else last["revision"]
