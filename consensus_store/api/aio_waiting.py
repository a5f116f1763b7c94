"""``wait_for_change`` for asyncio: the async recipes' building block (as ``watching``'s)."""
from __future__ import annotations

from consensus_store.api.requester import AsyncRequester
from consensus_store.api.watching import change_poll, wait_from
from consensus_store.errors import Compacted


async def wait_for_change(api: AsyncRequester, prefix: str, after_revision: int, wait: float,
                          floor_hint: int = 0) -> int:
    """Return once something under ``prefix`` changed after ``after_revision`` (or ``wait``
    passed): the revision to wait from next time.  A compacted history counts as a change:
    callers re-read the state after every return anyway."""
    try:
        result = await api.request("watch", change_poll(prefix, after_revision, wait),
                                   wait + 5.0)
    except Compacted:
        return max(after_revision, floor_hint)
    return wait_from(result, after_revision)
