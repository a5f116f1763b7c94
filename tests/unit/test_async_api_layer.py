"""The asyncio recipes (``api/aio_*.py``) over the ``AsyncRequester`` protocol alone: every
call sends an op of the table with fields it declares, the same coordination ops as the
blocking recipes, and the async session keeps itself alive with its own task."""
from __future__ import annotations

import asyncio
from typing import Any

from consensus_store.api import AsyncKVApi, AsyncRequester
from consensus_store.api.aio_coordination import AsyncCoordinationApi
from consensus_store.api.cluster import AsyncClusterAdminApi
from consensus_store.models import ConnectionState, KeyValue, Leader, Member

from test_api_layer import LEADER, MEMBER, Recorder   # tests/unit is on the path (no package)

# The ops the blocking recipes send that the async ones send too (KV, coordination, watch,
# messaging to members and leaders); the rest (inbox, nodes, name messaging) is
# api/messaging_async.py's and api/nodes.py's.
RECIPE_OPS = {
    "put", "get", "session_open", "session_keepalive", "session_close", "group_create",
    "group_delete", "group_join", "group_update", "group_leave", "groups_list",
    "groups_members", "name_register", "name_unregister", "names_whereis", "names_list",
    "locks_list", "lock_acquire", "locks_status", "lock_release", "election_campaign",
    "elections_leader", "election_resign", "watch", "message_send", "message_broadcast",
    "message_call", "sessions"}


class AsyncRecordingApi(AsyncKVApi, AsyncCoordinationApi, AsyncClusterAdminApi):
    """What ``AsyncClient`` is, minus the carrying: the calls over a ``Recorder``."""

    def __init__(self, recorder: Recorder) -> None:
        self._init_coordination(60.0)
        self.recorder = recorder
        self.default_consistency = recorder.default_consistency

    async def request(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        await asyncio.sleep(0)
        if op == "sessions":
            return {"sessions": [{"id": 1, "ttl": 60.0, "node": "n1", "keys": 1}]}
        return self.recorder.request(op, body, timeout)


def test_every_async_recipe_sends_ops_and_fields_the_op_table_declares() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        calls = AsyncRecordingApi(recorder)
        assert isinstance(calls, AsyncRequester)
        session = await calls.default_session()
        assert await calls.put("k", 1, session=session) == KeyValue("k", 1, 2, 3, 1)
        assert ("put", {"key": "k", "value": 1, **session.auth}) in recorder.sent
        assert await calls.get("k") == KeyValue("k", 1, 2, 3, 1)
        groups = calls.groups
        assert await groups.create("g") and await groups.delete("g")
        assert await groups.join("g", meta=1) == Member.from_json(MEMBER)
        assert (await groups.update("g", "m1", 2)).id == "m1" and await groups.leave("g", "m1")
        assert await groups.local_members("g") == [Member.from_json(MEMBER)]
        assert await groups.which_groups() == ["g"]
        assert (await groups.closest("g")).id == "m1"
        assert (await groups.route("g", "key")).id == "m1"
        assert await calls.register_name("n", "v") and await calls.whereis_name("n") == "v"
        assert await calls.unregister_name("n") and await calls.registered_names() == ["n"]
        assert await calls.locks() == []
        assert await calls.trans("L", lambda: _value("done"), timeout=5) == "done"
        async with calls.lock("L", ttl=30.0) as token:
            assert token == 7
        election = calls.election("E")
        assert await election.campaign("m1", timeout=5) == Leader.maybe(LEADER)
        assert await election.is_leader()
        stop = asyncio.Event()
        changes = election.observe_changes(stop, poll_s=0.01)
        await changes.__anext__()
        await changes.__anext__()              # one wait for a change: a "watch"
        await election.resign()
        assert await groups.send("g", "m1", 1)
        assert (await groups.broadcast("g", 1)).delivered == ["m1"]
        assert (await groups.multi_call("g", 1)).replies == {"m1": 2}
        assert await election.call_leader(1) == 2
        assert (await calls.sessions())[0]["id"] == 1
        async with await calls.session(ttl=0.3) as own:   # keepalives every 0.1 s
            await _eventually(lambda: "session_keepalive" in recorder.sent_ops())
            assert own.state is ConnectionState.CONNECTED and own.alive
        assert own.state is ConnectionState.LOST
        await calls.close_session()
        assert session.state is ConnectionState.LOST

    asyncio.run(asyncio.wait_for(scenario(), 20))
    assert recorder.sent_ops() | {"sessions"} == RECIPE_OPS
    reads = [body for op, body in recorder.sent if op in ("get", "groups_list", "locks_list")]
    assert all(body["consistency"] == "local" for body in reads)   # the requester's default


def test_async_replicas_run_on_the_protocol_alone() -> None:
    recorder = Recorder()

    class Worker:
        def __init__(self) -> None:
            self.roles: list[str] = []

        async def on_active(self) -> None:
            self.roles.append("active")

        def on_standby(self) -> None:
            self.roles.append("standby")

    async def scenario() -> list[str]:
        calls = AsyncRecordingApi(recorder)
        worker = Worker()
        replicas = await calls.replicas("R", worker, member="m1", replication_factor=1)
        await _eventually(lambda: replicas.role == "active")
        await replicas.stop()
        await calls.close_session()
        return worker.roles

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == ["active", "standby"]
    assert any(op == "election_resign" and body["name"] == "replicas/R"
               for op, body in recorder.sent)


async def _value(value: Any) -> Any:
    return value


async def _eventually(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
