"""``AsyncClient``'s coordination recipes against a real 3-node cluster: the same names and
semantics as ``Client``'s (session with keepalive task, lock and trans, groups, registry,
election, replicas), plus ephemeral puts and the sessions listing from asyncio."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import pytest

from consensus_store import AsyncClient
from consensus_store.errors import Timeout
from consensus_store.launcher import LocalCluster
from consensus_store.models import ConnectionState

TTL_S = 1.5


def run(scenario: Callable[[], Awaitable[Any]], bound_s: float = 40.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(scenario(), bound_s)
    return asyncio.run(bounded())


def client_of(cluster: LocalCluster, **options: Any) -> AsyncClient:
    return AsyncClient(cluster.endpoints, token=cluster.token, session_ttl=TTL_S, **options)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


def test_session_keeps_alive_is_listed_and_closing_drops_its_ephemeral_key(
        cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with client_of(cluster) as client:
            session = await client.session(ttl=1.0)
            states: list[ConnectionState] = []
            session.add_listener(states.append)
            await client.put("async/eph", "mine", session=session)
            await asyncio.sleep(2.5)        # 2.5 TTLs: only the keepalive task keeps it
            assert session.alive and session.state is ConnectionState.CONNECTED
            listed = {s["id"]: s for s in await client.sessions()}
            assert listed[session.id]["keys"] == 1 and listed[session.id]["ttl"] == 1.0
            assert (await client.get("async/eph")).value == "mine"
            await session.close()
            assert session.state is ConnectionState.LOST and states[-1] is ConnectionState.LOST
            assert await client.get("async/eph", consistency="linearizable") is None
            assert session.id not in {s["id"] for s in await client.sessions()}
    run(scenario)


def test_lock_is_exclusive_fifo_and_fenced(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with client_of(cluster) as a, client_of(cluster) as b:
            first = a.lock("async-L", owner="a")
            assert await first.acquire(timeout=10)
            assert first.is_held and first.token is not None
            first_token = first.token
            second = b.lock("async-L", owner="b")
            assert not await second.acquire(blocking=False)
            waiting = asyncio.create_task(second.acquire(timeout=20))
            await asyncio.sleep(0.5)
            assert not waiting.done()                       # a holds it
            holder = [lock for lock in await a.locks() if lock["name"] == "async-L"][0]
            assert holder["holder"]["owner"] == "a"
            assert [waiter["owner"] for waiter in holder["waiters"]] == ["b"]
            await first.release()
            assert await waiting
            second_token = second.token
            assert second_token is not None and second_token > first_token
            await second.release()
            assert await a.trans("async-L", lambda: _value("done"), timeout=10) == "done"
            async with b.lock("async-L") as token:
                assert token > second_token
            held = b.lock("async-L")
            await held.acquire()
            with pytest.raises(Timeout):
                await a.trans("async-L", lambda: _value(None), timeout=0.5)
            await held.release()
    run(scenario)


async def _value(value: Any) -> Any:
    return value


def test_groups(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with client_of(cluster) as a, client_of(cluster) as b:
            assert await a.groups.create("async-g")
            assert not await b.groups.create("async-g")
            monitor = await a.groups.monitor("async-g")
            assert monitor.members == []
            m1 = await a.groups.join("async-g", "m1", meta={"port": 1})
            await b.groups.join("async-g", "m2")
            assert m1.id == "m1" and m1.meta == {"port": 1}
            members = await a.groups.members("async-g", consistency="linearizable")
            assert sorted(m.id for m in members) == ["m1", "m2"]
            assert "async-g" in await b.groups.which_groups()
            assert (await a.groups.closest("async-g")).id in ("m1", "m2")
            routed = {(await a.groups.route("async-g", f"k{i}")).id for i in range(20)}
            assert routed <= {"m1", "m2"}
            local = await a.groups.local_members("async-g")
            assert all(m.node == local[0].node for m in local)
            assert (await a.groups.update("async-g", "m1", {"port": 2})).meta == {"port": 2}
            assert await a.groups.leave("async-g", "m1")
            events = [await monitor.get(5.0) for _ in range(4)]
            assert [(e.type, e.member.id) for e in events if e is not None] == [
                ("join", "m1"), ("join", "m2"), ("update", "m1"), ("leave", "m1")]
            monitor.close()
        async with client_of(cluster) as c:       # b closed: its member went with it
            assert await c.groups.members("async-g", consistency="linearizable") == []
            assert await c.groups.delete("async-g")
    run(scenario)


def test_registry(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with client_of(cluster) as a, client_of(cluster) as b:
            assert await a.register_name("async-svc", {"port": 7})
            assert not await b.register_name("async-svc", "other")     # never overwritten
            assert await b.whereis_name("async-svc", consistency="linearizable") == {"port": 7}
            assert "async-svc" in await b.registered_names()
            entry = [n for n in await b.names() if n["name"] == "async-svc"][0]
            assert entry["session"] == (await a.default_session()).id
            assert await a.unregister_name("async-svc")
            assert await b.whereis_name("async-svc", consistency="linearizable") is None
            assert await a.register_name("async-svc2")
        async with client_of(cluster) as c:        # a closed: its name is free
            assert await c.whereis_name("async-svc2", consistency="linearizable") is None
    run(scenario)


def test_election_hands_over_when_the_leader_goes(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        a, b = client_of(cluster), client_of(cluster)
        try:
            first = await a.election("async-E").campaign("a", timeout=10)
            assert first is not None and first.member == "a"
            assert await a.election("async-E").is_leader() is False   # another handle
            election_b = b.election("async-E")
            assert await election_b.campaign("b", block=False) is None
            assert [c["member"] for c in await election_b.candidates()] == ["a", "b"]
            changes = election_b.observe()
            assert (await changes.__anext__()).member == "a"
            await a.aclose()                       # the leader's session ends
            second = await changes.__anext__()
            assert second is not None and second.member == "b" and second.token > first.token
            assert await election_b.is_leader()
            await election_b.resign()
            assert await election_b.leader(consistency="linearizable") is None
        finally:
            await a.aclose()
            await b.aclose()
    run(scenario)


class Worker:
    def __init__(self) -> None:
        self.roles: list[str] = []

    async def on_active(self) -> None:
        self.roles.append("active")

    def on_passive(self) -> None:
        self.roles.append("passive")

    def on_standby(self) -> None:
        self.roles.append("standby")


def test_replicas_one_active_and_failover(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        clients = [client_of(cluster) for _ in range(3)]
        workers = [Worker() for _ in clients]
        try:
            replicas = []
            for i, (client, worker) in enumerate(zip(clients, workers)):
                replicas.append(await client.replicas("async-svc", worker, member=f"p{i}"))
                await eventually(lambda r=replicas[-1]: _true(r.role is not None), 10,
                                 f"p{i} takes a role")
            await eventually(lambda: _true([r.role for r in replicas]
                                           == ["active", "passive", "standby"]), 10,
                             "p0 active, p1 passive, p2 standby")
            assert workers[0].roles == ["active"]
            await clients[0].aclose()              # the active one's session ends
            await eventually(lambda: _true([r.role for r in replicas[1:]]
                                           == ["active", "passive"]), 10,
                             "p1 promoted, p2 passive")
            assert workers[1].roles[-1] == "active" and workers[2].roles[-1] == "passive"
            for replica in replicas[1:]:
                await replica.stop()
            assert [r.role for r in replicas[1:]] == ["standby", "standby"]
        finally:
            for client in clients:
                await client.aclose()
    run(scenario)


async def _true(value: bool) -> bool:
    return value


def test_group_messages_and_call_leader(cluster: LocalCluster) -> None:
    """The messaging calls of the async recipes: groups.send / broadcast / multi_call and
    election.call_leader, with the same names as ``Client``'s."""
    async def scenario() -> None:
        async with client_of(cluster) as a, client_of(cluster) as b:
            received: list[Any] = []

            async def serve(message: Any) -> None:
                received.append(message.message)
                if message.call_id is not None:
                    await message.reply({"echo": message.message})

            await a.groups.create("async-msg")
            await b.groups.join("async-msg", "r1")
            await b.election("async-msg-E").campaign("b1", timeout=10)
            handler = b.on_message(serve)
            try:
                await eventually(lambda: a.groups.send("async-msg", "r1", "hi"), 10,
                                 "r1's inbox to take a message")
                assert (await a.groups.broadcast("async-msg", "all")).delivered == ["r1"]
                called = await a.groups.multi_call("async-msg", "ping", timeout=5)
                assert called.replies == {"r1": {"echo": "ping"}} and called.not_answering == []
                leader_reply = await a.election("async-msg-E").call_leader("who", timeout=5)
                assert leader_reply == {"echo": "who"}
                assert received[-3:] == ["all", "ping", "who"]
            finally:
                handler.cancel()
                await asyncio.gather(handler, return_exceptions=True)
    run(scenario)
