"""The watch history (node/watch.py): bounded in events and bytes, scanned without its lock."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consensus_store.node import watch
from consensus_store.node.watch import Compacted, WatchHub


def _no_post(*args: Any) -> None:
    pass


def _put(key: str, value: Any, revision: int) -> dict[str, Any]:
    return {"type": "put", "kv": {"key": key, "value": value, "create_revision": revision,
                                  "mod_revision": revision, "version": 1}}


def _watch(hub: WatchHub, prefix: str, after: int) -> list[dict[str, Any]]:
    return asyncio.run(hub.watch(prefix, after, 0))


def test_big_values_are_dropped_by_bytes_not_only_by_count() -> None:
    hub = WatchHub(_no_post, max_events=100_000, max_bytes=4 * 1024 * 1024)
    big = "x" * (512 * 1024)
    for revision in range(1, 101):                    # 100 puts of 512 KiB to one key
        hub.on_events(revision, [_put("k", big + str(revision), revision)])
    events, size = hub.history
    assert size <= 4 * 1024 * 1024 + 600 * 1024 and events < 10
    assert hub.floor >= 90 and hub.latest == 100
    assert [e["kv"]["mod_revision"] for e in _watch(hub, "k", hub.floor)] == list(
        range(hub.floor + 1, 101))
    with pytest.raises(Compacted):
        _watch(hub, "k", 10)


def test_count_bound_and_answers_in_order_across_segments() -> None:
    hub = WatchHub(_no_post, max_events=1000, max_bytes=1 << 30)
    for revision in range(1, 5001):
        hub.on_events(revision, [_put(f"a/{revision}", 1, revision),
                                 _put(f"b/{revision}", 2, revision)])
    events, _ = hub.history
    assert 1000 <= events <= 1000 + 1000 // 8 + 2 and hub.floor >= 4400
    found = _watch(hub, "b/", 4600)
    assert [e["kv"]["key"] for e in found] == [f"b/{r}" for r in range(4601, 5001)]
    assert len(_watch(hub, "", hub.floor)) == watch.MAX_EVENTS_PER_ANSWER
    assert _watch(hub, "c/", hub.floor) == []


def test_a_scan_runs_without_the_lock_the_raft_thread_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = WatchHub(_no_post)
    for revision in range(1, 2001):
        hub.on_events(revision, [_put(f"k/{revision}", revision, revision)])
    held_during_scan = []
    original = watch._matches

    def matches(event: dict[str, Any], prefix: str) -> bool:
        held_during_scan.append(hub._lock.locked())
        return original(event, prefix)

    monkeypatch.setattr(watch, "_matches", matches)
    assert _watch(hub, "nothing/", 0) == []
    assert len(held_during_scan) == 2000 and not any(held_during_scan)


def test_a_waiting_watch_sees_what_arrives_while_it_scanned() -> None:
    async def scenario() -> list[dict[str, Any]]:
        hub = WatchHub(asyncio.get_running_loop().call_soon)
        hub.on_events(1, [_put("x/1", 1, 1)])
        waiting = asyncio.create_task(hub.watch("y/", 0, 5.0))
        await asyncio.sleep(0)            # it scanned, found nothing, and waits
        hub.on_events(2, [_put("y/2", 2, 2)])
        return await asyncio.wait_for(waiting, 5.0)

    assert [e["kv"]["key"] for e in asyncio.run(scenario())] == ["y/2"]
