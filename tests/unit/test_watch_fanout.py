"""The watch hub's fan-out (node/watch.py): one match per prefix per wake-up however many
watchers wait, answers complete to the end of a revision, 'through', the watcher cap."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consensus_store.errors import Unavailable
from consensus_store.node import watch
from consensus_store.node.watch import WatchHub, without_prev


def _put(key: str, revision: int, prev: Any = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "put", "kv": {"key": key, "value": revision,
                                                   "create_revision": 1,
                                                   "mod_revision": revision, "version": 1}}
    if prev is not None:
        event["prev_kv"] = {"key": key, "value": prev}
    return event


def test_one_match_per_prefix_however_many_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = watch._matches

    def counting(event: dict[str, Any], prefix: str) -> bool:
        calls.append(prefix)
        return original(event, prefix)

    async def scenario() -> list[str]:
        hub = WatchHub(asyncio.get_running_loop().call_soon)
        waiting = [asyncio.create_task(hub.watch("a/", 0, 5.0)) for _ in range(500)]
        others = [asyncio.create_task(hub.watch("b/", 0, 0.5)) for _ in range(500)]
        await asyncio.sleep(0)
        monkeypatch.setattr(watch, "_matches", counting)
        hub.on_events(1, [_put("a/x", 1)])
        hub.on_events(2, [_put("a/y", 2)])           # one wake-up for both entries
        await asyncio.sleep(0)                         # the wake-up runs
        woken_matches = list(calls)
        answers = await asyncio.gather(*waiting)
        assert all(answer == [] for answer in await asyncio.gather(*others))
        assert {len(a) for a in answers} <= {1, 2}
        return sorted(woken_matches)

    # One pass over the two new events per prefix (a/ stops at its first match), not one per
    # each of the 1000 waiting watchers.
    assert asyncio.run(scenario()) == ["a/", "b/", "b/"]


def test_an_answer_is_cut_only_at_a_revision_boundary_and_says_through() -> None:
    async def scenario() -> None:
        hub = WatchHub(asyncio.get_running_loop().call_soon)
        big = [_put(f"k/{i}", 5) for i in range(watch.MAX_EVENTS_PER_ANSWER + 10)]
        hub.on_events(3, [_put("k/first", 3)])
        hub.on_events(5, big)                         # one entry, more events than an answer
        hub.on_events(6, [_put("k/last", 6)])
        hub.on_events(9, [_put("other", 9)])
        events, through = await hub.watch_through("k/", 0, 0)
        assert len(events) == 1 + len(big) and through == 5
        events, through = await hub.watch_through("k/", through, 0)
        assert [e["kv"]["key"] for e in events] == ["k/last"] and through == 9
        assert await hub.watch_through("k/", 9, 0.01) == ([], 9)

    asyncio.run(scenario())


def test_prev_values_only_when_asked_and_the_watcher_cap() -> None:
    events = [_put("a", 2, prev=1), _put("b", 3)]
    assert without_prev(events) == [_put("a", 2), _put("b", 3)]
    hub = WatchHub(lambda *a: None, max_watchers=2)
    with hub.attach(), hub.attach():
        assert hub.watcher_count == 2
        with pytest.raises(Unavailable):
            hub.attach()
    assert hub.watcher_count == 0


def test_expired_and_cancelled_waits_leave_no_waiter_behind() -> None:
    async def scenario() -> None:
        hub = WatchHub(asyncio.get_running_loop().call_soon)
        assert await hub.watch("a/", 0, 0.01) == []
        task = asyncio.create_task(hub.watch("b/", 0, 5.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert hub._waiters == {}

    asyncio.run(scenario())


def test_a_scan_looks_at_a_bounded_number_of_events_and_says_through() -> None:
    async def scenario() -> None:
        hub = WatchHub(asyncio.get_running_loop().call_soon)
        for revision in range(1, 3 * watch.MAX_SCANNED_PER_TURN + 1):
            hub.on_events(revision, [_put("cold/k", revision)])
        hub.on_events(3 * watch.MAX_SCANNED_PER_TURN + 1, [_put("hot/k", 0)])
        # wait 0: one scan, complete through the last revision it looked at
        assert await hub.watch_through("hot/", 0, 0) == ([], watch.MAX_SCANNED_PER_TURN)
        # a wait: the scan goes on in later turns up to the change
        events, through = await hub.watch_through("hot/", 0, 5.0)
        assert [e["kv"]["key"] for e in events] == ["hot/k"]
        assert through == 3 * watch.MAX_SCANNED_PER_TURN + 1

    asyncio.run(scenario())


def test_woken_watchers_skip_the_other_prefixes_events_since_they_waited(
        monkeypatch: pytest.MonkeyPatch) -> None:
    looked_at: list[int] = []
    original = watch._scan

    def counting(segments: Any, last_length: int, prefix: str, after: int,
                 *args: Any) -> Any:
        looked_at.append(after)
        return original(segments, last_length, prefix, after, *args)

    async def scenario() -> None:
        hub = WatchHub(asyncio.get_running_loop().call_soon)
        hub.on_events(1, [_put("hot/a", 1)])
        waiting = [asyncio.create_task(hub.watch_through("hot/", 1, 5.0)) for _ in range(100)]
        await asyncio.sleep(0)
        for revision in range(2, 2002):              # no wake-up: nobody waits for cold/
            hub.on_events(revision, [_put("cold/k", revision)])
        await asyncio.sleep(0)
        monkeypatch.setattr(watch, "_scan", counting)
        hub.on_events(2002, [_put("hot/b", 2002)])
        answers = await asyncio.gather(*waiting)
        assert {(len(events), through) for events, through in answers} == {(1, 2002)}
        # each woken watcher scans from just before hot/b, not over the 2000 cold/ events
        assert looked_at == [2001] * 100

    asyncio.run(scenario())
