"""client.watch against real node processes: exactly once across kill -9 of the node it polls,
Compacted with the oldest revision, resume from start_revision, HTTP and native, asyncio."""
from __future__ import annotations

import asyncio
import threading
from typing import Iterator

import pytest

from consensus_store import AsyncClient, Client, Compacted, WatchEvent
from consensus_store.launcher import LocalCluster

from .support import ClusterPool, wait_until

HISTORY_EVENTS = 400        # the module cluster's watch history (so Compacted comes quickly)


@pytest.fixture(scope="module")
def small_history(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3, name="watch", extra_toml=f"""
[limits]
watch_history_events = {HISTORY_EVENTS}
""")


def _collect(watch: Iterator[WatchEvent], out: list[WatchEvent], until: int,
             stop: threading.Event) -> None:
    for event in watch:
        out.append(event)
        if len(out) >= until or stop.is_set():
            return


@pytest.mark.parametrize("scheme", ["http", "tcp"])
def test_every_event_exactly_once_across_kill_of_the_polled_node(cluster_pool: ClusterPool,
                                                                  scheme: str) -> None:
    cluster = cluster_pool.start(3, name=f"watchkill-{scheme}")
    total = 150
    endpoints = {node_id: (node.endpoint if scheme == "http"
                           else f"tcp://{node.config.native_address}")
                 for node_id, node in cluster.nodes.items()}
    with Client(list(endpoints.values()), token=cluster.token, timeout=20.0) as watcher_client, \
            cluster.client(timeout=20.0) as writer:
        watch = watcher_client.watch("w/")
        start = watch.revision
        polled = watcher_client.endpoints[watcher_client._core.preferred]
        events: list[WatchEvent] = []
        stop = threading.Event()
        reader = threading.Thread(target=_collect, args=(watch, events, total, stop), daemon=True)
        reader.start()
        acked: dict[str, int] = {}
        victim = next(cluster.nodes[node_id] for node_id, endpoint in endpoints.items()
                      if endpoint.rstrip("/") == polled.rstrip("/"))
        for i in range(total):
            if i == total // 3:
                victim.kill()                     # kill -9 of the node the watch is polling
            kv = writer.put(f"w/{i:04d}", i)
            acked[kv.key] = kv.mod_revision
        reader.join(60.0)
        stop.set()
        watch.close()
    assert not reader.is_alive(), f"saw {len(events)} of {total} events"
    seen = [(e.key, e.revision) for e in events]
    assert len(seen) == len(set(seen)), "an event was delivered twice"
    assert sorted(seen, key=lambda p: p[1]) == seen, "events out of revision order"
    assert dict(seen) == acked
    assert all(e.type == "put" and e.revision > start for e in events)
    assert watcher_client._core.endpoints[watcher_client._core.preferred] != polled


def test_compacted_carries_the_oldest_revision_and_watching_from_it_works(
        small_history: LocalCluster) -> None:
    with small_history.client() as client:
        first = client.put("c/first", 0).mod_revision
        for i in range(HISTORY_EVENTS + 100):
            client.put(f"c/{i % 7}", i)
        with pytest.raises(Compacted) as caught:
            next(client.watch("c/", first))
        oldest = caught.value.oldest_revision
        assert first < oldest <= client.get("c/0").mod_revision
        watch = client.watch("c/", oldest)
        event = watch.get(10.0)
        assert event is not None and event.revision >= oldest
        watch.close()


@pytest.mark.parametrize("scheme", ["http", "tcp"])
def test_resume_from_start_revision_with_prev_values(small_history: LocalCluster,
                                                      scheme: str) -> None:
    endpoints = (small_history.endpoints if scheme == "http"
                 else [f"tcp://{n.config.native_address}" for n in small_history.nodes.values()])
    with Client(endpoints, token=small_history.token) as client:
        revisions = [client.put(f"r/{scheme}/k", i).mod_revision for i in range(5)]
        client.delete(f"r/{scheme}/k")
        watch = client.watch(f"r/{scheme}/", revisions[2], prev_value=True)
        got = [watch.get(10.0) for _ in range(4)]
        plain = client.watch(f"r/{scheme}/", revisions[4])
        without = plain.get(10.0)
        watch.close()
        plain.close()
    assert [(e.type, e.value, e.prev_value) for e in got] == [
        ("put", 2, 1), ("put", 3, 2), ("put", 4, 3), ("delete", None, 4)]
    assert [e.revision for e in got[:3]] == revisions[2:]
    assert without is not None and (without.value, without.prev_value) == (4, None)


def test_async_watch_sees_puts_and_deletes_in_order(small_history: LocalCluster) -> None:
    async def scenario() -> list[WatchEvent]:
        async with AsyncClient(small_history.endpoints, token=small_history.token) as client:
            watch = await client.watch("a/").start()
            await client.put("a/x", 1)
            await client.put("a/y", 2)
            await client.delete("a/x")
            out = []
            async for event in watch:
                out.append(event)
                if len(out) == 3:
                    break
            return out

    events = asyncio.run(asyncio.wait_for(scenario(), 30.0))
    assert [(e.type, e.key) for e in events] == [("put", "a/x"), ("put", "a/y"),
                                                 ("delete", "a/x")]
    assert events[0].revision < events[1].revision < events[2].revision


def test_a_quiet_prefix_does_not_fall_behind_the_history(small_history: LocalCluster) -> None:
    """While it polls, a watch's cursor moves past entries of other prefixes ('through'), so
    a watch that sees nothing for longer than the history is not Compacted."""
    with small_history.client() as client:
        watch = client.watch("quiet/")
        polling = threading.Event()
        polling.set()
        seen: list[WatchEvent | None] = []

        def poll() -> None:
            while polling.is_set():
                seen.append(watch.get(0.2))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        for i in range(2 * HISTORY_EVENTS):
            client.put("loud", i)
        polling.clear()
        poller.join(10.0)
        loud = client.get("loud").mod_revision
        wait_until(lambda: watch.get(0.2) is None and watch.revision >= loud, 20.0,
                   what="the quiet watch's cursor passes the loud writes")
        client.put("quiet/now", 1)
        event = watch.get(10.0)
        watch.close()
    assert seen and not any(seen)
    assert event is not None and event.key == "quiet/now"


def test_embedded_node_watches_what_a_client_writes(cluster_pool: ClusterPool) -> None:
    from consensus_store.config import load_config
    from consensus_store.node import Node

    paths = cluster_pool.write_configs(3, name="embeddedwatch")
    daemons = cluster_pool.launch(paths[:2], start=False)
    daemons.start()
    node = Node(load_config(paths[2]))
    try:
        node.start()
        wait_until(lambda: node.status()["leader"], 30.0, what="a leader seen by the embedded node")
        watch = node.watch("e/")
        with daemons.client() as client:
            written = client.put("e/1", "one").mod_revision
        event = watch.get(15.0)
        watch.close()
    finally:
        node.stop()
    assert event is not None and (event.key, event.value, event.revision) == ("e/1", "one",
                                                                              written)
