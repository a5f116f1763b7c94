"""The engine on the node's loop: the loop-backed poller, the leader's commit rule under a
background fsync, snapshots copied off the loop, and ``Engine`` end to end on one node."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

from pysyncobj import pickle as syncobj_pickle
from pysyncobj.poller import POLL_EVENT_TYPE

from consensus_store.config import load_config
from consensus_store.errors import Timeout, Unavailable
from consensus_store.launcher import write_cluster_configs
from consensus_store.node.engine import Engine, error_for
from consensus_store.node.engine.durability import DurableJournal
from consensus_store.node.engine.failures import FAIL_NAMES
from consensus_store.node.engine.loop_poller import LoopPoller
from consensus_store.node.engine.raft import ReplicatedStore
from consensus_store.node.engine.snapshots import PlainMachine
from consensus_store.state import StateMachine, encode_batch, encode_command


# ---- the poller ---------------------------------------------------------------------------------
def test_poller_delivers_read_and_write_events_through_dispatch_and_unsubscribes() -> None:
    async def main() -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, int]] = []
        got_read = asyncio.Event()

        def dispatch(callback: Any, descr: int, event: int) -> None:
            callback(descr, event)

        poller = LoopPoller(loop, dispatch)
        left, right = socket.socketpair()
        left.setblocking(False)

        def on_event(descr: int, event: int) -> None:
            seen.append(("event", event))
            if event & POLL_EVENT_TYPE.WRITE:     # like pysyncobj: stop asking once written
                poller.subscribe(descr, on_event, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)
            if event & POLL_EVENT_TYPE.READ:
                left.recv(100)
                got_read.set()

        poller.subscribe(left.fileno(), on_event, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE
                         | POLL_EVENT_TYPE.ERROR)
        await asyncio.sleep(0.01)
        right.send(b"x")
        await asyncio.wait_for(got_read.wait(), 2)
        poller.unsubscribe(left.fileno())
        count = len(seen)
        right.send(b"y")
        await asyncio.sleep(0.05)
        assert len(seen) == count, "events after unsubscribe"
        left.close()
        right.close()
        return seen

    seen = asyncio.run(main())
    assert seen[0] == ("event", POLL_EVENT_TYPE.WRITE)
    writes = [s for s in seen if s[1] == POLL_EVENT_TYPE.WRITE]
    assert len(writes) == 1, "the write interest was not dropped"
    assert ("event", POLL_EVENT_TYPE.READ) in seen


# ---- the leader's commit rule -------------------------------------------------------------------
class _Journal:
    def __init__(self, synced: int) -> None:
        self.synced_index = synced


class _Leader:
    """The fields ``ReplicatedStore.durable_commit`` reads, for a leader of 5 nodes."""

    def __init__(self, commit: int, floor: int, synced: int, match: dict[str, int],
                 terms: dict[int, int], term: int = 2) -> None:
        self._SyncObj__raftCommitIndex = commit
        self.commit_floor = floor
        self.durable_journal = _Journal(synced)
        self._SyncObj__raftMatchIndex = match
        self._SyncObj__otherNodes = set(match)
        self._terms = terms
        self._term = term

    def _getTerm(self) -> int:
        return self._term

    def _SyncObj__getEntries(self, index: int, count: int) -> list[tuple[bytes, int, int]]:
        return [(b"", index, self._terms[index])] if index in self._terms else []


def _durable_commit(leader: _Leader) -> int:
    return ReplicatedStore.durable_commit(leader)   # type: ignore[arg-type]


def test_the_leader_counts_itself_only_up_to_its_synced_index() -> None:
    terms = {i: 2 for i in range(1, 21)}
    # pysyncobj says 20 (leader + 2 of 4 followers); on disk: followers a, b up to 20, the
    # leader only up to 15 -> 15 has a, b and the leader: a majority of 5.
    leader = _Leader(20, 10, 15, {"a": 20, "b": 20, "c": 5, "d": 5}, terms)
    assert _durable_commit(leader) == 15
    # Synced beyond the commit: pysyncobj's answer stands.
    assert _durable_commit(_Leader(20, 10, 20, {"a": 20, "b": 20, "c": 5, "d": 5}, terms)) == 20
    # Three followers hold 20 on disk: the leader's own copy is not needed.
    assert _durable_commit(_Leader(20, 10, 0, {"a": 20, "b": 20, "c": 20, "d": 5}, terms)) == 20
    # Nothing held by a majority above the floor: the commit stays where it was.
    assert _durable_commit(_Leader(20, 10, 8, {"a": 20, "b": 20, "c": 5, "d": 5}, terms)) == 10


def test_entries_of_an_earlier_term_do_not_commit_by_counting() -> None:
    terms = {**{i: 1 for i in range(1, 16)}, **{i: 2 for i in range(16, 21)}}
    # 15 (term 1) is on a majority's disks, 16+ (term 2) is not: 15 must not commit by count.
    leader = _Leader(20, 10, 15, {"a": 15, "b": 15, "c": 5, "d": 5}, terms)
    assert _durable_commit(leader) == 10


def test_a_background_fsync_reports_its_index_and_a_truncation_voids_it(tmp_path: Path) -> None:
    journal = DurableJournal(str(tmp_path / "journal"), str(tmp_path / "meta"))
    calls: list[Any] = []
    synced: list[int] = []
    journal.post_from_thread = lambda function, *args: calls.append((function, args))
    journal.on_synced = lambda: synced.append(journal.synced_index)
    for index in range(1, 6):
        journal.add(b"x", index, 1)
    journal.sync_in_background()
    journal.sync_in_background()           # one at a time
    assert _wait_for(lambda: len(calls) == 1)
    function, args = calls.pop()
    function(*args)
    assert journal.synced_index == 5 and synced == [5] and not journal.unsynced

    journal.add(b"y", 6, 1)
    journal.sync_in_background()
    assert _wait_for(lambda: len(calls) == 1)
    journal.deleteEntriesFrom(4)           # a position: indexes 5 and 6 go before the report
    function, args = calls.pop()
    function(*args)                        # a stale generation: proves nothing, syncs again
    assert journal.synced_index == 4
    assert _wait_for(lambda: len(calls) == 1)
    function, args = calls.pop()
    function(*args)
    assert journal.synced_index == 4 and not journal.unsynced
    journal.stop_background()
    journal._destroy()


def _wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


# ---- snapshots off the loop ------------------------------------------------------------------
def test_a_plain_copy_pickles_exactly_like_the_machine() -> None:
    machine = StateMachine()
    machine.apply(encode_batch([{"op": "put", "key": "a", "value": 1},
                                {"op": "put", "key": "b", "value": [1, {"c": 2}]}]), 5)
    real = syncobj_pickle.dumps(({"machine": machine}, 1))
    copy = syncobj_pickle.dumps(({"machine": PlainMachine(machine.plain_state())}, 1))
    assert real == copy


KEYS = 20_000       # 40 chunks of copy_in_chunks


class _SnapshotStore:
    """What ``ReplicatedStore.snapshot_copy`` reads: the machine, its lock, the log (and the
    membership: the live member table, the voters, itself)."""

    copy_lock = ReplicatedStore.copy_lock
    members = None
    _SyncObj__otherNodes: frozenset[object] = frozenset()
    selfNode = None

    def __init__(self) -> None:
        self.state_lock = threading.Lock()
        self.apply_waiting = False
        self.machine = StateMachine()
        self.log: dict[int, tuple[bytes, int, int]] = {}
        self.longest_wait = 0.0

    def apply(self, index: int) -> None:
        self.log[index] = (b"cmd", index, 1)      # in the log before it is applied
        self.apply_waiting = True
        asked = time.monotonic()
        with self.state_lock:
            self.apply_waiting = False
            self.longest_wait = max(self.longest_wait, time.monotonic() - asked)
            self.machine.apply(encode_command({"op": "put", "key": f"k{index % KEYS}",
                                               "value": index}), index)

    def _SyncObj__getEntries(self, index: int, count: int) -> list[tuple[bytes, int, int]]:
        return [self.log[i] for i in range(index, index + count) if i in self.log]


def test_a_snapshot_copy_taken_while_apply_goes_on_names_the_entries_it_covers() -> None:
    store = _SnapshotStore()
    for index in range(1, KEYS + 1):
        store.apply(index)
    asked_last, asked_previous = store.log[KEYS], store.log[KEYS - 1]
    stop = threading.Event()

    def apply_more() -> None:
        index = KEYS + 1
        while not stop.is_set() and index < 200_000:
            store.apply(index)
            index += 1

    applier = threading.Thread(target=apply_more)
    applier.start()
    try:
        data, cut = ReplicatedStore.snapshot_copy(   # type: ignore[arg-type]
            store, ({"machine": store.machine}, asked_last, asked_previous, set()))
    finally:
        stop.set()
        applier.join()
    self_data, last, previous, _ = data
    state = self_data["machine"].state
    assert last[1] == state["applied_index"] >= KEYS
    assert previous[1] == last[1] - 1 == cut
    # The copy is the machine as it was at that index: replay the log up to it and compare.
    replay = StateMachine()
    for index in range(1, last[1] + 1):
        replay.apply(encode_command({"op": "put", "key": f"k{index % KEYS}", "value": index}),
                     index)
    assert state == replay.plain_state()
    # Apply got the lock between chunks, not after the whole copy (an unfair lock starved it).
    assert store.longest_wait < 0.5, f"apply waited {store.longest_wait:.2f} s for the lock"


# ---- the façade on three nodes in this process (each on its own loop thread) ----------------
def test_engine_writes_reads_and_status_through_the_facade(tmp_path: Path) -> None:
    configs = [load_config(p) for p in write_cluster_configs(tmp_path, size=3)]
    loops = [asyncio.new_event_loop() for _ in configs]
    threads = [threading.Thread(target=loop.run_forever, daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    engines = [Engine(config, loop) for config, loop in zip(configs, loops)]

    def run(engine: Engine, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, engine._loop).result(15)

    try:
        for engine in engines:
            engine.start()
        assert _wait_for(lambda: any(e.is_leader() for e in engines), 15), "no leader"
        leader = next(e for e in engines if e.is_leader())
        follower = next(e for e in engines if e is not leader)

        async def on_leader() -> tuple[Any, Any]:
            index, answer = await leader.write({"op": "put", "key": "a", "value": 1}, 5)
            raw = await leader.propose(encode_command({"op": "put", "key": "b", "value": 2}))
            return (index, answer), raw

        (index, answer), raw = run(leader, on_leader())
        assert answer["kv"]["key"] == "a" and raw[0] > index
        barrier = run(follower, follower.barrier(5))     # ReadIndex asked of the leader
        assert barrier >= raw[0] and follower.applied_index >= raw[0]
        with follower.reading() as machine:
            assert machine.get_value("b") == 2
        assert follower.leader_id() == leader.config.id and not follower.is_leader()
        status = run(leader, leader.status())
        assert status.role == "leader" and status.applied_index >= raw[0]
        assert len(status.connected_peers) == 2
    finally:
        for engine, loop, thread in zip(engines, loops, threads):
            engine.stop()
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
    for engine in engines:
        store = engine.runner.store
        assert store is not None and store.journal is not None
        assert store.journal._fd == -1, "stop did not close the journal"


def test_every_failure_reason_maps_to_a_typed_error() -> None:
    for reason, name in FAIL_NAMES.items():
        if name == "SUCCESS":
            continue
        error = error_for(reason)
        assert isinstance(error, (Timeout, Unavailable)) and name in error.message
    assert isinstance(error_for(5), Timeout)          # LEADER_CHANGED: outcome unknown
    assert error_for(5).details.get("outcome") == "unknown"
