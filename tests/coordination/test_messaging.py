"""Group messaging outside the log (docs/messaging.md) against real node processes: sender and
receiver on different nodes, order per sender, broadcast, multi_call with a member killed -9,
call_name, call_leader, asyncio on both sides, a member's node killed, bad input."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from consensus_store.api.messaging import Message
from consensus_store.client import AsyncClient, Client
from consensus_store.errors import InvalidRequest, NotFound
from consensus_store.launcher import LocalCluster
from consensus_store.testing.workers import WorkerProcess

from .support import REPO, wait_until

WORKER = "tests.coordination.messaging_worker"


def client_on(cluster: LocalCluster, index: int, **options: Any) -> Client:
    """A client that knows one node only: its inbox lives there, its sends go through it."""
    return Client([cluster.endpoints[index]], token=cluster.token, session_ttl=3.0, **options)


class Collector:
    """``client.on_message`` that keeps what arrives and answers calls."""

    def __init__(self, client: Client, name: str) -> None:
        self.name = name
        self.got: list[Message] = []
        self._lock = threading.Lock()
        client.inbox().open()
        self.handler = client.on_message(self._on)

    def _on(self, message: Message) -> None:
        with self._lock:
            self.got.append(message)
        if message.is_call:
            message.reply({"by": self.name, "echo": message.message})

    def messages(self) -> list[Any]:
        with self._lock:
            return [m.message for m in self.got]


@pytest.fixture
def clients(cluster: LocalCluster) -> Iterator[Callable[[int], Client]]:
    made: list[Client] = []

    def make(index: int) -> Client:
        made.append(client_on(cluster, index))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def spawn(cluster: LocalCluster, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(role: str, name: str, ident: str, node: int) -> WorkerProcess:
        worker = WorkerProcess(role, ident, endpoints=[cluster.endpoints[node]],
                               token=cluster.token, name=name, events_dir=tmp_path / "workers",
                               module=WORKER, cwd=REPO)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def test_send_call_and_reply_cross_nodes(cluster: LocalCluster, clients) -> None:
    sender, receiver = clients(0), clients(1)
    receiver.groups.create("chat")
    member = receiver.groups.join("chat", member="bob")
    collector = Collector(receiver, "bob")
    assert sender.groups.send("chat", "bob", {"hello": 1}) is True
    wait_until(lambda: collector.messages() == [{"hello": 1}], 10, "the message to arrive")
    got = collector.got[0]
    assert got.to == {"group": "chat", "member": "bob"} and not got.is_call
    result = sender.groups.multi_call("chat", "ping", timeout=5)
    assert result.replies == {"bob": {"by": "bob", "echo": "ping"}}
    assert result.not_answering == []
    assert member.session == receiver.default_session().id
    with pytest.raises(NotFound):
        sender.groups.send("chat", "nobody", 1)
    collector.handler.stop(0)


def test_order_per_sender(cluster: LocalCluster, clients) -> None:
    sender, receiver = clients(2), clients(0)
    receiver.groups.create("ordered")
    receiver.groups.join("ordered", member="r")
    collector = Collector(receiver, "r")
    for i in range(200):
        assert sender.groups.send("ordered", "r", i)
    wait_until(lambda: len(collector.messages()) >= 200, 20, "200 messages")
    assert collector.messages() == list(range(200))
    seqs = [m.seq for m in collector.got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 200
    collector.handler.stop(0)


def test_broadcast_reaches_every_live_member(cluster: LocalCluster, clients) -> None:
    members = [clients(i % 3) for i in range(6)]
    members[0].groups.create("room")
    collectors = []
    for i, client in enumerate(members):
        client.groups.join("room", member=f"m{i}")
        collectors.append(Collector(client, f"m{i}"))
    silent = clients(1)                  # a member whose client never reads its inbox
    silent.groups.join("room", member="silent")
    result = clients(0).groups.broadcast("room", "all")
    assert sorted(result.delivered) == [f"m{i}" for i in range(6)]
    assert result.undelivered == ["silent"]
    for collector in collectors:
        wait_until(lambda c=collector: c.messages() == ["all"], 10, f"{collector.name}'s copy")
        collector.handler.stop(0)


def test_multi_call_reports_a_killed_member(cluster: LocalCluster, spawn) -> None:
    workers = [spawn("join", "callees", f"w{i}", i % 3) for i in range(3)]
    for worker in workers:
        worker.wait_for("ready")
    with client_on(cluster, 0) as caller:
        wait_until(lambda: len(caller.groups.members("callees")) == 3, 10, "3 members")
        first = caller.groups.multi_call("callees", "q1", timeout=5)
        assert first.replies == {f"w{i}": {"from": f"w{i}", "echo": "q1"} for i in range(3)}
        workers[1].kill()                 # kill -9: its session lives on for a TTL
        second = caller.groups.multi_call("callees", "q2", timeout=2)
        assert set(second.replies) == {"w0", "w2"}
        assert second.not_answering == ["w1"]
    for worker in (workers[0], workers[2]):
        assert [e["message"] for e in worker.seen("got")] == ["q1", "q2"]   # once each


def test_call_name_and_call_leader(cluster: LocalCluster, spawn) -> None:
    named = spawn("register", "the-service", "svc", 2)
    leader = spawn("campaign", "the-election", "boss", 1)
    named.wait_for("ready")
    leader.wait_for("ready")
    with client_on(cluster, 0) as caller:
        assert caller.call_name("the-service", {"n": 1}) == {"from": "svc", "echo": {"n": 1}}
        assert caller.send_name("the-service", "note") is True
        wait_until(lambda: [e["message"] for e in named.seen("got")] == [{"n": 1}, "note"], 10,
                   "the note")
        election = caller.election("the-election")
        wait_until(lambda: election.leader() is not None, 10, "a leader")
        assert election.call_leader("who") == {"from": "boss", "echo": "who"}
        with pytest.raises(NotFound):
            caller.call_name("no-such-name", 1)


def test_bad_input_gets_4xx_json(cluster: LocalCluster, clients) -> None:
    owner = clients(0)
    session = owner.default_session()
    endpoint = cluster.endpoints[0]
    headers = {"Authorization": f"Bearer {cluster.token}"}
    cases = [
        ("/v1/messages/send", {"group": "g", "member": "m", "message": 1}, 400),   # no sender
        ("/v1/messages/send", {"group": "g", "message": 1, "sender": "s", "seq": 1}, 400),
        ("/v1/messages/send", {"name": "n", "group": "g", "message": 1, "sender": "s",
                               "seq": 1}, 400),
        ("/v1/messages/send", {"name": "n", "message": 1, "sender": "s", "seq": 0}, 400),
        ("/v1/messages/send", {"name": "unknown", "message": 1, "sender": "s", "seq": 1}, 404),
        ("/v1/messages/call", {"group": "g", "request": 1, "sender": "s", "seq": 1,
                               "wait": -1}, 400),
        ("/v1/messages/call", {"group": "g", "sender": "s", "seq": 1}, 400),   # no request
        ("/v1/inbox/poll", {"session": "x"}, 400),
        ("/v1/inbox/poll", {"session": 10 ** 9}, 404),
        ("/v1/inbox/poll", {"session": session.id, "wait": 99}, 400),
        ("/v1/inbox/poll", {"session": session.id, "max": 0}, 400),
        ("/v1/messages/reply", {**session.auth, "call": "nothing"}, 400),
        ("/v1/messages/reply", {**session.auth, "call": "x@no-such-node"}, 400),
        ("/v1/messages/forward", {"kind": "locate", "session": 1}, 403),   # nodes only
    ]
    with httpx.Client(headers=headers, timeout=10) as http:
        for path, body, status in cases:
            reply = http.post(endpoint + path, json=body)
            assert reply.status_code == status, (path, body, reply.text)
            assert {"error", "message"} <= set(reply.json()), reply.text
        reply = http.post(endpoint + "/v1/messages/send", content=b"{not json")
        assert reply.status_code == 400 and reply.json()["error"] == "invalid_request"
    # a client token may not act as a node, nor read another session's inbox
    rw = _readwrite_token(cluster)
    if rw is not None:
        with httpx.Client(headers={"Authorization": f"Bearer {rw}"}, timeout=10) as http:
            assert http.post(endpoint + "/v1/messages/forward",
                             json={"kind": "locate", "session": 1}).status_code == 403
            wrong = {"session": session.id, "session_key": "not-the-key"}
            assert http.post(endpoint + "/v1/inbox/poll", json=wrong).status_code == 403
    with pytest.raises(InvalidRequest):
        owner.groups.multi_call("g", 1, timeout=-1)


def _readwrite_token(cluster: LocalCluster) -> str | None:
    config = next(iter(cluster.nodes.values())).config
    return next((t.token for t in config.tokens if t.role.value == "readwrite"), None)


def test_a_member_whose_node_dies_stops_answering_then_answers_from_another(
        cluster: LocalCluster) -> None:
    """kill -9 of the node a member polls on: calls report it as not answering (never twice
    delivered); its client fails over, its inbox opens on another node, calls reach it again."""
    leader = cluster.wait_for_leader(30)
    ids = list(cluster.nodes)
    home = next(i for i, node in enumerate(ids) if node != leader)          # a follower
    other = next(i for i, node in enumerate(ids) if i != home and node != leader)
    caller_node = next(i for i in range(3) if i not in (home, other))
    member = Client([cluster.endpoints[home], cluster.endpoints[other]], token=cluster.token,
                    session_ttl=5.0, timeout=5.0)
    caller = client_on(cluster, caller_node)
    try:
        member.groups.create("moving")
        member.groups.join("moving", member="mover")
        collector = Collector(member, "mover")
        assert caller.groups.multi_call("moving", "before", timeout=5).replies == {
            "mover": {"by": "mover", "echo": "before"}}
        cluster.nodes[ids[home]].kill()
        during = caller.groups.multi_call("moving", "during", timeout=1)
        # not answering, unless its client already moved (a refused connection is quick)
        assert during.not_answering == ["mover"] or "mover" in during.replies

        def answered() -> bool:
            return "mover" in caller.groups.multi_call("moving", "after", timeout=1).replies
        wait_until(answered, 30, "the member to answer from its new node")
        got = collector.messages()
        assert got[0] == "before" and got.count("before") == 1 and got.count("during") <= 1
        assert "after" in got
        collector.handler.stop(0)
    finally:
        caller.close()
        member.close()
        cluster.nodes[ids[home]].start()
        cluster.wait_for_leader(30)


def test_asyncio_member_and_caller(cluster: LocalCluster) -> None:
    """AsyncClient on both sides: the member joins with its own session and reads it with
    ``async for``; the caller uses ``groups`` and ``election().call_leader`` awaited."""
    async def run() -> None:
        async with AsyncClient([cluster.endpoints[1]], token=cluster.token,
                               session_ttl=3.0) as member, \
                AsyncClient([cluster.endpoints[2]], token=cluster.token) as caller:
            await member.groups.create("aio-group")
            await member.groups.join("aio-group", member="a")
            inbox = await member.inbox(wait=1.0).open()
            await member.election("aio-election").campaign("a", block=False)
            got: list[Any] = []

            async def serve() -> None:
                async for message in inbox:
                    got.append(message.message)
                    if message.is_call:
                        await message.reply(f"re:{message.message}")
            server = asyncio.create_task(serve())
            assert await caller.groups.send("aio-group", "a", "one") is True
            called = await caller.groups.multi_call("aio-group", "two", timeout=5)
            assert called.replies == {"a": "re:two"}
            assert await caller.election("aio-election").call_leader("three") == "re:three"
            assert got == ["one", "two", "three"]
            inbox.close()
            await asyncio.wait_for(server, 10)

    asyncio.run(run())


def test_the_callers_node_dies_mid_call_and_the_retry_is_not_delivered_twice(
        cluster: LocalCluster) -> None:
    """kill -9 of the node holding a waiting call: the client retries it on another node with
    the same (sender, seq); the member's inbox refuses the copy, so it handles the request
    once, and the caller reports it in no_reply (its reply went to the dead node)."""
    leader = cluster.wait_for_leader(30)
    ids = list(cluster.nodes)
    doomed = next(i for i, node in enumerate(ids) if node != leader)        # a follower
    backup = next(i for i in range(3) if i != doomed)
    home = next(i for i in range(3) if i not in (doomed, backup))
    member = client_on(cluster, home)
    caller = Client([cluster.endpoints[doomed], cluster.endpoints[backup]], token=cluster.token)
    got: list[Any] = []
    try:
        member.groups.create("slow")
        member.groups.join("slow", member="s")
        member.inbox().open()
        handler = member.on_message(lambda message: got.append(message.message))  # no reply
        outcome: list[Any] = []
        thread = threading.Thread(target=lambda: outcome.append(
            caller.groups.multi_call("slow", "once", timeout=3)), daemon=True)
        thread.start()
        wait_until(lambda: got == ["once"], 10, "the request to reach the member")
        cluster.nodes[ids[doomed]].kill()
        thread.join(20)
        assert outcome and outcome[0].no_reply == ["s"] and outcome[0].replies == {}
        assert got == ["once"]                 # the retry through another node was refused
        handler.stop(0)
    finally:
        caller.close()
        member.close()
        cluster.nodes[ids[doomed]].start()
        cluster.wait_for_leader(30)
