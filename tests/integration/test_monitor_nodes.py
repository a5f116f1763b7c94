"""``client.nodes()`` and ``client.monitor_nodes()`` (the leader's view of its peers), blocking
and asyncio, across kill -9 and restart of a node; the asyncio messaging calls on the way."""
from __future__ import annotations

import asyncio
import queue
import threading
import time

from consensus_store.api.messaging import NodeEvent
from consensus_store.client import AsyncClient
from consensus_store.launcher import LocalCluster, write_cluster_configs
from consensus_store.testing.polling import wait_until

from .support import ClusterPool


def _follower(cluster: LocalCluster, leader: str, skip: str = "") -> str:
    return next(n for n in cluster.nodes if n not in (leader, skip))


def _next_event(events: "queue.Queue[NodeEvent]", wanted: NodeEvent, timeout: float) -> float:
    """Seconds until ``wanted`` arrived (other events before it are skipped)."""
    start = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - start)
        assert left > 0, f"no {wanted} within {timeout:g}s"
        try:
            if events.get(timeout=left) == wanted:
                return time.monotonic() - start
        except queue.Empty:
            pass


def test_nodedown_and_nodeup_after_kill_9_and_restart(cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(3)
    leader = cluster.wait_for_leader(30)
    victim = _follower(cluster, leader)
    with cluster.client() as client:
        wait_until(lambda: all(n.up for n in client.nodes()), 15, "every node up")
        nodes = client.nodes()
        assert sorted(n.id for n in nodes) == sorted(cluster.nodes)
        assert [n.id for n in nodes if n.leader] == [leader]
        events: queue.Queue[NodeEvent] = queue.Queue()
        monitor = client.monitor_nodes(interval=0.2, initial=True, timeout=60)

        def watch() -> None:
            for event in monitor:
                events.put(event)

        threading.Thread(target=watch, daemon=True).start()
        first = {events.get(timeout=10) for _ in cluster.nodes}      # the first view
        assert first == {NodeEvent("nodeup", node) for node in cluster.nodes}
        cluster.nodes[victim].kill()
        down_after = _next_event(events, NodeEvent("nodedown", victim), 20)
        assert not {n.id: n.up for n in client.nodes()}[victim]
        cluster.nodes[victim].start()
        up_after = _next_event(events, NodeEvent("nodeup", victim), 30)
        print(f"nodedown {down_after:.2f}s after kill -9, nodeup {up_after:.2f}s after restart")


def test_async_nodes_monitor_and_messaging(cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(3)
    leader = cluster.wait_for_leader(30)
    victim = _follower(cluster, leader)

    async def run() -> None:
        async with AsyncClient(cluster.endpoints, token=cluster.token) as client:
            await wait_async(lambda: client.nodes(), lambda nodes: all(n.up for n in nodes))
            events: list[NodeEvent] = []

            async def watch() -> None:
                async for event in client.monitor_nodes(interval=0.2, initial=True,
                                                        timeout=60):
                    events.append(event)
                    if event == NodeEvent("nodeup", victim) and len(events) > 3:
                        return
            task = asyncio.create_task(watch())
            await wait_async(lambda: asyncio.sleep(0), lambda _: len(events) >= 3)
            assert sorted(e.node for e in events) == sorted(cluster.nodes)   # the first view
            cluster.nodes[victim].kill()
            await wait_async(lambda: asyncio.sleep(0), lambda _: NodeEvent("nodedown", victim)
                             in events, timeout=20)
            cluster.nodes[victim].start()
            await asyncio.wait_for(task, 30)
            assert events[-1] == NodeEvent("nodeup", victim)
            await _async_round_trip(cluster, client)

    asyncio.run(run())


async def _async_round_trip(cluster: LocalCluster, client: AsyncClient) -> None:
    """An asyncio sender and an asyncio inbox (the member's session is a blocking client's)."""
    with cluster.client(session_ttl=3.0) as owner:
        owner.groups.create("aio")
        owner.groups.join("aio", member="a1")
        owner.register_name("aio-name", "a1")
        session = owner.default_session()
        async with AsyncClient([cluster.endpoints[0]], token=cluster.token) as member:
            inbox = await member.inbox(session, wait=1.0).open()
            answered: list[object] = []

            async def serve() -> None:
                async for message in inbox:
                    answered.append(message.message)
                    if message.is_call:
                        assert await message.reply(["pong", message.message]) is True
            server = asyncio.create_task(serve())
            assert await client.groups.send("aio", "a1", "hi") is True
            assert await client.send_name("aio-name", "there") is True
            result = await client.groups.multi_call("aio", "ping", timeout=5)
            assert result.replies == {"a1": ["pong", "ping"]} and result.not_answering == []
            assert await client.call_name("aio-name", 7) == ["pong", 7]
            assert (await client.groups.broadcast("aio", "all")).delivered == ["a1"]
            await wait_async(lambda: asyncio.sleep(0), lambda _: len(answered) == 5)
            assert answered == ["hi", "there", "ping", 7, "all"]
            inbox.close()
            await asyncio.wait_for(server, 10)


async def wait_async(make, check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check(await make()):
                return
        except Exception:  # noqa: BLE001 - not yet: no leader, a node restarting
            pass
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def test_nodes_lists_a_read_replica_marked_as_such(cluster_pool: ClusterPool) -> None:
    paths = write_cluster_configs(cluster_pool.root / "replica-view" / "configs", 3, replicas=1)
    cluster = cluster_pool.launch(paths)
    leader = cluster.wait_for_leader(30)
    with cluster.client() as client:
        wait_until(lambda: {n.id for n in client.nodes()} == {"n1", "n2", "n3", "r1"}, 20,
                   "the leader lists the replica connected to it")
        rows = {n.id: n for n in client.nodes()}
        assert rows["r1"].replica and rows["r1"].up and not rows["r1"].leader
        assert rows["r1"].api_address == str(cluster.nodes["r1"].config.api_address)
        assert not any(rows[n].replica for n in ("n1", "n2", "n3"))
        assert [n for n, row in rows.items() if row.leader] == [leader]
