"""ReadIndex rounds (node/engine/read_index.py) against a fake pysyncobj leader/follower."""
from __future__ import annotations

from typing import Any

import pytest

from consensus_store.node.engine import read_index
from consensus_store.node.engine.read_index import ReadIndex


class FakeTransport:
    def __init__(self) -> None:
        self.sent_seq: dict[str, int] = {}
        self.acked_seq: dict[str, int] = {}
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.connected = True

    def send(self, node: str, message: dict[str, Any]) -> bool:
        self.messages.append((node, message))
        return self.connected

    def heartbeat(self, nodes: list[str]) -> None:
        for node in nodes:
            self.sent_seq[node] = self.sent_seq.get(node, 0) + 1


class FakeStore:
    """Just the pysyncobj surface ReadIndex uses."""

    def __init__(self, transport: FakeTransport, leader: bool = True) -> None:
        self.transport = transport
        self.leader = leader
        self.leader_node: str | None = "self" if leader else "n1"
        self.term = 3
        self.raftCommitIndex = 10
        self.entry_terms = {i: 3 for i in range(1, 11)}
        self._SyncObj__otherNodes = {"a", "b"}
        self.heartbeats = 0

    def _isLeader(self) -> bool:
        return self.leader

    def _getLeader(self) -> str | None:
        return self.leader_node

    def _getTerm(self) -> int:
        return self.term

    def _SyncObj__getEntries(self, index: int, count: int) -> list[tuple[bytes, int, int]]:
        return [(b"", index, self.entry_terms[index])] if index in self.entry_terms else []

    def _SyncObj__sendAppendEntries(self) -> None:
        self.heartbeats += 1
        self.transport.heartbeat(sorted(self._SyncObj__otherNodes))


@pytest.fixture
def leader() -> tuple[ReadIndex, FakeStore, FakeTransport]:
    transport = FakeTransport()
    transport.sent_seq = {"a": 5, "b": 7}          # AppendEntries already sent before the read
    store = FakeStore(transport)
    return ReadIndex(store, transport, store._SyncObj__sendAppendEntries), store, transport


def ack(reader: ReadIndex, transport: FakeTransport, node: str, seq: int) -> None:
    transport.acked_seq[node] = max(transport.acked_seq.get(node, 0), seq)
    reader.advance()


def test_a_round_needs_one_follower_to_answer_a_heartbeat_sent_after_it_began(leader) -> None:
    reader, store, transport = leader
    got: list[int | None] = []
    reader.request(got.append)
    assert store.heartbeats == 1 and got == []
    ack(reader, transport, "a", 5)               # answers a message sent before the round
    assert got == []
    ack(reader, transport, "b", 8)               # the round's heartbeat to b
    assert got == [10]


def test_reads_arriving_during_a_round_wait_for_the_next_one(leader) -> None:
    reader, store, transport = leader
    first: list[int | None] = []
    second: list[int | None] = []
    reader.request(first.append)
    store.raftCommitIndex = 11                  # a write committed while the round runs
    store.entry_terms[11] = 3
    reader.request(second.append)
    ack(reader, transport, "a", 6)
    assert first == [10] and second == []       # the second read needs a round of its own
    assert store.heartbeats == 2
    ack(reader, transport, "a", 7)
    assert second == [11]


def test_a_round_is_lost_when_the_term_changes(leader) -> None:
    reader, store, transport = leader
    got: list[int | None] = []
    reader.request(got.append)
    store.term = 4
    ack(reader, transport, "a", 6)
    assert got == [None]


def test_a_new_leader_waits_until_an_entry_of_its_term_is_committed(leader) -> None:
    reader, store, transport = leader
    store.term = 4                              # elected; its no-op (index 11) not committed
    got: list[int | None] = []
    reader.request(got.append)
    assert store.heartbeats == 0 and got == []
    store.entry_terms[11] = 4
    store.raftCommitIndex = 11
    reader.tick()
    ack(reader, transport, "b", 8)
    assert got == [11]


def test_a_follower_that_is_not_leader_any_more_answers_none(leader) -> None:
    reader, store, transport = leader
    store.leader = False
    store.leader_node = None
    got: list[int | None] = []
    reader.request(got.append)
    assert got == [None]


def test_a_single_node_confirms_at_once() -> None:
    transport = FakeTransport()
    store = FakeStore(transport)
    store._SyncObj__otherNodes = set()
    got: list[int | None] = []
    ReadIndex(store, transport, store._SyncObj__sendAppendEntries).request(got.append)
    assert got == [10]


def test_a_follower_asks_the_leader_and_passes_its_answer_on() -> None:
    transport = FakeTransport()
    store = FakeStore(transport, leader=False)
    reader = ReadIndex(store, transport, store._SyncObj__sendAppendEntries)
    got: list[int | None] = []
    reader.request(got.append)
    (node, message), = transport.messages
    assert node == "n1" and message["type"] == read_index.REQUEST
    reader.on_message("n1", {"type": read_index.REPLY, "id": message["id"], "index": 42})
    assert got == [42]


def test_a_follower_gives_up_on_questions_to_a_leader_it_no_longer_follows() -> None:
    transport = FakeTransport()
    store = FakeStore(transport, leader=False)
    reader = ReadIndex(store, transport, store._SyncObj__sendAppendEntries)
    got: list[int | None] = []
    reader.request(got.append)
    store.leader_node = "n2"
    reader.tick()
    assert got == [None]


def test_the_leader_answers_a_followers_question_after_its_round(leader) -> None:
    reader, store, transport = leader
    reader.on_message("a", {"type": read_index.REQUEST, "id": 9})
    assert transport.messages == []
    ack(reader, transport, "a", 6)
    assert transport.messages == [("a", {"type": read_index.REPLY, "id": 9, "index": 10})]
