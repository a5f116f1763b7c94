"""Monitors against real node processes: a group monitor sees the members, then joins, leaves
and a kill -9'd worker's removal (its session's TTL) in order; monitor_name's DOWN."""
from __future__ import annotations

import asyncio

from consensus_store import AsyncClient
from consensus_store.api.monitors import GroupEvent
from consensus_store.launcher import LocalCluster

from .support import wait_until


def _next(monitor, timeout: float = 20.0) -> GroupEvent:
    event = monitor.get(timeout)
    assert event is not None, "no group event in time"
    return event


def test_group_monitor_sees_joins_leaves_and_a_killed_member(cluster: LocalCluster,
                                                             workers) -> None:
    with cluster.client(session_ttl=5) as client:
        client.groups.create("mon")
        early = client.groups.join("mon", member="early")
        monitor = client.groups.monitor("mon")
        assert [m.id for m in monitor.members] == ["early"]
        assert monitor.revision >= early.revision
        worker = workers("join", "mon", "worker")             # a process with its own session
        joined = _next(monitor)
        assert (joined.type, joined.member.id) == ("join", "worker")
        worker_session = worker.wait_for("joined")["session"]
        assert joined.member.session == worker_session
        late = client.groups.join("mon", member="late", meta={"n": 1})
        assert _next(monitor) == GroupEvent("join", "mon", late, late.revision)
        client.groups.update("mon", "late", {"n": 2})
        update = _next(monitor)
        assert (update.type, update.member.meta) == ("update", {"n": 2})
        assert client.groups.leave("mon", "early") is True
        left = _next(monitor)
        assert (left.type, left.member.id, left.member.revision) == ("leave", "early",
                                                                      early.revision)
        worker.kill()                                         # kill -9: its session expires
        removed = _next(monitor, timeout=30.0)
        assert (removed.type, removed.member.id) == ("leave", "worker")
        revisions = [joined.revision, late.revision, update.revision, left.revision,
                     removed.revision]
        assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
        assert monitor.get(0.5) is None
        monitor.close()


def test_async_group_monitor_in_order(cluster: LocalCluster) -> None:
    async def scenario() -> list[tuple[str, str]]:
        async with AsyncClient(cluster.endpoints, token=cluster.token) as client:
            await client.request("group_create", {"group": "amon"}, None)
            monitor = await client.groups.monitor("amon")
            assert monitor.members == []
            with cluster.client(session_ttl=5) as joiner:      # joins come from another client
                joiner.groups.join("amon", member="a")
                joiner.groups.join("amon", member="b")
                joiner.groups.leave("amon", "a")
                out = []
                async for event in monitor:
                    out.append((event.type, event.member.id))
                    if len(out) == 3:
                        break
            return out

    assert asyncio.run(asyncio.wait_for(scenario(), 30.0)) == [
        ("join", "a"), ("join", "b"), ("leave", "a")]


def test_monitor_name_down_on_unregister_and_on_kill(cluster: LocalCluster, workers) -> None:
    with cluster.client(session_ttl=5) as client:
        assert client.register_name("svc", {"port": 1}) is True
        monitor = client.monitor_name("svc")
        assert monitor.owner is not None and monitor.owner["value"] == {"port": 1}
        assert monitor.wait(0.3) is None
        client.unregister_name("svc")
        down = monitor.wait(10.0)
        assert down is not None and (down.name, down.reason) == ("svc", "gone")
        assert monitor.wait(0) == down                         # it stays down

        assert client.monitor_name("nobody").wait(0).reason == "noproc"

        worker = workers("register", "wsvc", "owner")
        worker.wait_for("registered")
        wait_until(lambda: client.monitor_name("wsvc").owner is not None, 10.0)
        watched = client.monitor_name("wsvc")
        assert watched.owner["session"] > 0
        worker.kill()                                          # its session ends by TTL
        down = watched.wait(30.0)
        assert down is not None and down.reason == "gone" and down.owner == watched.owner


def test_async_monitor_name(cluster: LocalCluster) -> None:
    async def scenario() -> str:
        async with AsyncClient(cluster.endpoints, token=cluster.token) as client:
            with cluster.client(session_ttl=5) as owner:
                owner.register_name("asvc", 1)
                monitor = await client.monitor_name("asvc")
                assert monitor.owner is not None
                owner.unregister_name("asvc")
                down = await monitor.wait(10.0)
                return down.reason if down else "none"

    assert asyncio.run(asyncio.wait_for(scenario(), 30.0)) == "gone"
