"""Waiting for changes under a prefix (the recipes' building block)."""
from __future__ import annotations

from consensus_store.api.requester import Requester
from consensus_store.errors import ConsensusStoreError


def wait_for_change(api: Requester, prefix: str, after_revision: int, wait: float,
                    floor_hint: int = 0) -> int:
    """Block until something under ``prefix`` changed after ``after_revision`` (or ``wait``
    passed); returns the revision to wait from next time.  A compacted history counts as a
    change: callers re-read the state after every return anyway."""
    body = {"prefix": prefix, "after_revision": after_revision, "wait": wait}
    try:
        result = api.request("watch", body, wait + 5.0)
    except ConsensusStoreError as exc:
        if exc.code == "compacted":
            return max(after_revision, floor_hint)
        raise
    events = result["events"]
    if not events:
        return after_revision
    last = events[-1]
    return last["kv"]["mod_revision"] if last["type"] == "put" else last["revision"]
