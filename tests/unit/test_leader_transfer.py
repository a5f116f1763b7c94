"""Leadership transfer (node/engine/transfer.py) against a fake pysyncobj leader / follower."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from consensus_store.api.cluster import (TRANSFER_OP, AsyncClusterAdminApi, ClusterAdminApi,
                                        LeaderTransfer)
from consensus_store.errors import InvalidRequest, NotLeader, Unavailable
from consensus_store.node.engine import peer_messages, transfer
from consensus_store.node.engine.transfer import TIMEOUT_NOW, LeadershipTransfer


@dataclass(frozen=True)
class FakeNode:
    address: str


SELF, A, B = FakeNode("10.0.0.1:7100"), FakeNode("10.0.0.2:7100"), FakeNode("10.0.0.3:7100")
IDS = {SELF.address: "n1", A.address: "n2", B.address: "n3"}


class FakeStore:
    """Just the pysyncobj surface the transfer uses."""

    def __init__(self) -> None:
        self.selfNode = SELF
        self.leader_node: FakeNode | None = SELF
        self.leading = True
        self.term = 4
        self.writes_held = False
        self.connected = {A, B}
        self._SyncObj__otherNodes = {A, B}
        self._SyncObj__raftMatchIndex = {A: 9, B: 10}
        self._SyncObj__raftLog = [(b"", 10, 4)]
        self._SyncObj__raftElectionDeadline = 123.0

    def _isLeader(self) -> bool:
        return self.leading

    def _getLeader(self) -> FakeNode | None:
        return self.leader_node

    def _getTerm(self) -> int:
        return self.term

    def isNodeConnected(self, node: FakeNode) -> bool:
        return node in self.connected


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[FakeNode, dict[str, Any]]] = []

    def send(self, node: FakeNode, message: dict[str, Any]) -> bool:
        self.sent.append((node, message))
        return True


def make(timeout_s: float = 0.5) -> tuple[LeadershipTransfer, FakeStore, FakeTransport, list]:
    store, transport, pushes = FakeStore(), FakeTransport(), []
    handover = LeadershipTransfer(store, transport, election_timeout_s=timeout_s,
                                  send_append_entries=lambda: pushes.append(1),
                                  request_tick=lambda: None, node_ids=IDS)
    return handover, store, transport, pushes


def test_without_a_target_the_most_caught_up_connected_voter_is_picked() -> None:
    handover, store, _, _ = make()
    assert handover.pick_target(None) is B
    store.connected = {A}
    assert handover.pick_target(None) is A
    store.connected = set()
    with pytest.raises(InvalidRequest, match="no other voter is connected"):
        handover.pick_target(None)


def test_a_named_target_must_be_a_connected_voter() -> None:
    handover, store, _, _ = make()
    assert handover.pick_target(A.address) is A
    with pytest.raises(InvalidRequest, match="not another voter"):
        handover.pick_target("10.0.0.9:7100")
    store.connected = {B}
    with pytest.raises(InvalidRequest, match="not connected"):
        handover.pick_target(A.address)


def test_the_leader_holds_writes_until_the_target_caught_up_then_asks_it_to_campaign() -> None:
    handover, store, transport, pushes = make()

    async def scenario() -> transfer.TransferResult:
        task = asyncio.ensure_future(handover.run(A.address, 5.0))
        await asyncio.sleep(0.02)
        assert store.writes_held and pushes and transport.sent == []   # A lacks entry 10
        store._SyncObj__raftMatchIndex[A] = 10
        await asyncio.sleep(0.02)
        assert transport.sent == [(A, {"type": TIMEOUT_NOW, "term": 4})]
        store.leading, store.term, store.leader_node = False, 5, A    # A won the election
        return await task

    result = asyncio.run(scenario())
    assert result == transfer.TransferResult(A.address, 5)
    assert not store.writes_held


def test_a_target_that_does_not_win_in_time_fails_and_writes_resume() -> None:
    handover, store, transport, _ = make(timeout_s=0.1)
    with pytest.raises(Unavailable, match="did not take over") as caught:
        asyncio.run(handover.run(B.address, 5.0))
    assert caught.value.details["reason"] == "transfer_failed"
    assert transport.sent and not store.writes_held


def test_only_the_leader_transfers() -> None:
    handover, store, _, _ = make()
    store.leading, store.leader_node = False, A
    with pytest.raises(NotLeader):
        asyncio.run(handover.run(None, 1.0))
    assert not store.writes_held


def test_the_target_campaigns_at_once_and_heartbeats_do_not_postpone_it() -> None:
    handover, store, _, _ = make()
    store.leading, store.leader_node = False, A
    handover.on_message(A, {"type": TIMEOUT_NOW, "term": 4})
    assert store._SyncObj__raftElectionDeadline == 0
    store._SyncObj__raftElectionDeadline = 99.0     # pysyncobj took a heartbeat from A
    handover.keep_campaign_due()
    assert store._SyncObj__raftElectionDeadline == 0
    store.term = 5                                  # the campaign started: left alone now
    store._SyncObj__raftElectionDeadline = 99.0
    handover.keep_campaign_due()
    assert store._SyncObj__raftElectionDeadline == 99.0


@pytest.mark.parametrize("sender, term", [(B, 4), (A, 3)])
def test_the_target_ignores_a_request_not_from_its_leader_of_this_term(sender, term) -> None:
    handover, store, _, _ = make()
    store.leading, store.leader_node = False, A
    handover.on_message(sender, {"type": TIMEOUT_NOW, "term": term})
    handover.keep_campaign_due()
    assert store._SyncObj__raftElectionDeadline == 123.0


def test_the_raft_port_accepts_timeout_now_with_a_term_only() -> None:
    peer_messages.check_raft_message({"type": TIMEOUT_NOW, "term": 4}, {0})
    for bad in ({"type": TIMEOUT_NOW}, {"type": TIMEOUT_NOW, "term": -1},
                {"type": TIMEOUT_NOW, "term": 4, "extra": 1}):
        with pytest.raises(peer_messages.UnsafeMessage):
            peer_messages.check_raft_message(bad, {0})


def test_by_node_id_an_unknown_id_is_a_bad_request_and_the_leader_itself_answers_at_once() -> None:
    handover, store, transport, _ = make()
    with pytest.raises(InvalidRequest, match="no voter named 'n9'") as caught:
        asyncio.run(handover.hand_to("n9", 1.0))
    assert caught.value.details["reason"] == "unknown_target"
    assert asyncio.run(handover.hand_to("n1", 1.0)) == {"leader": "n1", "term": 4}
    assert transport.sent == [] and not store.writes_held


def test_by_node_id_the_answer_names_the_new_leader_by_id() -> None:
    handover, store, _, _ = make()
    store._SyncObj__raftMatchIndex[A] = 10

    async def scenario() -> dict[str, Any]:
        task = asyncio.ensure_future(handover.hand_to("n2", 5.0))
        await asyncio.sleep(0.02)
        store.leading, store.term, store.leader_node = False, 5, A
        return await task

    assert asyncio.run(scenario()) == {"leader": "n2", "term": 5}


class Recorder:
    """A requester that answers the transfer op as a node would."""

    default_consistency = "local"

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], float | None]] = []

    def request(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        self.sent.append((op, body, timeout))
        return {"leader": body.get("to", "n3"), "term": 7, "header": {}}


class RecordingAdmin(Recorder, ClusterAdminApi):
    pass


def test_the_client_call_sends_the_target_and_reads_the_new_leader() -> None:
    calls = RecordingAdmin()
    assert calls.transfer_leadership("n2", timeout=3.0) == LeaderTransfer("n2", 7)
    assert calls.transfer_leadership() == LeaderTransfer("n3", 7)
    assert calls.sent == [(TRANSFER_OP, {"to": "n2"}, 3.0), (TRANSFER_OP, {}, None)]
    with pytest.raises(InvalidRequest):
        calls.transfer_leadership("")


def test_the_async_client_call_sends_what_the_blocking_one_sends() -> None:
    recorder = Recorder()

    class AsyncAdmin(AsyncClusterAdminApi):
        async def request(self, op: str, body: dict[str, Any],
                          timeout: float | None) -> dict[str, Any]:
            return recorder.request(op, body, timeout)

    assert asyncio.run(AsyncAdmin().transfer_leadership("n1")) == LeaderTransfer("n1", 7)
    assert recorder.sent == [(TRANSFER_OP, {"to": "n1"}, None)]


def test_the_op_is_an_admin_post_that_the_client_call_names() -> None:
    from consensus_store.config import Role
    from consensus_store.protocol import OPS, REQUIRED_ROLE
    assert REQUIRED_ROLE[TRANSFER_OP] is Role.ADMIN
    assert OPS[TRANSFER_OP].route == ("POST", "/v1/leader/transfer")
