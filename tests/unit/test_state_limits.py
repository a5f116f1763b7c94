"""Resource limits of the replicated state machine (issue #10): each gives the same answer on
two replicas fed the same log, and bounds what apply builds or keeps."""
from __future__ import annotations

import json
import pickle
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

from consensus_store.config import Limits
from consensus_store.errors import InvalidRequest, LimitExceeded, error_from_json
from consensus_store.state import StateMachine, commands, encode_command
from consensus_store.state import at_most_once, limits
from consensus_store.state.chunked_copy import copy_in_chunks
from consensus_store.state.keyspace import RangeBudget, prefix_end
from consensus_store.state.sessions import hash_session_key

BIG = "x" * (512 * 1024)


class Replicas:
    """Two state machines fed the same log: every answer must be the same on both."""

    def __init__(self) -> None:
        self.machines = (StateMachine(), StateMachine())
        self.index = 0

    @property
    def sm(self) -> StateMachine:
        return self.machines[0]

    def apply_raw(self, data: bytes) -> dict:
        self.index += 1
        first, second = (m.apply(data, self.index) for m in self.machines)
        assert first == second
        return first

    def __call__(self, **command: Any) -> dict:
        return self.apply_raw(encode_command(command))

    def legacy(self, **command: Any) -> dict:
        """An entry as the code before these limits wrote it (command version 1)."""
        return self.apply_raw(json.dumps({**command, "v": commands.LEGACY_VERSION}).encode())

    def session(self, **stamp: Any) -> dict:
        return self(op="session_open", ttl=5, node="n1", key_hash=hash_session_key("k"), **stamp)

    def converged(self) -> bool:
        return self.machines[0].digest() == self.machines[1].digest()


@pytest.fixture
def log() -> Replicas:
    return Replicas()


def _stamp(**counts: int) -> dict:
    return {"limits": counts}


# ---- txn size -----------------------------------------------------------------------------------
def test_a_txn_of_more_than_128_ops_is_refused_at_the_edge_and_in_apply(log: Replicas) -> None:
    ranges = [{"op": "range", "prefix": ""}] * 1000      # the attack of issue #10
    with pytest.raises(InvalidRequest, match="at most 128"):
        commands.validate_txn({"success": ranges})
    answer = log(op="txn", compare=[], success=ranges, failure=[])
    assert answer["error"] == "invalid_request" and answer["limit"] == "max_txn_ops"
    assert log(op="txn", compare=[], success=ranges[:128], failure=[])["succeeded"] is True
    # An entry written before the limit replays as it was applied then.
    assert log.legacy(op="txn", compare=[], success=ranges[:200], failure=[])["succeeded"]


def test_a_txn_s_reads_share_one_bounded_reply(log: Replicas) -> None:
    for i in range(500):
        log(op="put", key=f"k{i:03d}", value="v" * 100)
    answer = log(op="txn", compare=[], success=[{"op": "range", "prefix": ""}] * 128, failure=[])
    results = answer["results"]
    assert sum(len(r["kvs"]) for r in results) <= limits.TXN_READ_MAX_KEYS
    assert [len(r["kvs"]) for r in results[:20]] == [500] * 20      # 10,000 keys in all
    assert results[19]["more"] is False and results[20] == {
        "op": "range", "kvs": [], "count": 500, "more": True}
    assert len(json.dumps(answer)) < limits.TXN_READ_MAX_BYTES + 1024 * 1024


def test_a_txn_s_reads_stop_at_the_byte_budget(log: Replicas) -> None:
    log(op="put", key="big", value=BIG)
    ops = [{"op": "get", "key": "big"}] * 10 + [{"op": "range", "prefix": "b"}]
    results = log(op="txn", compare=[], success=ops, failure=[])["results"]
    served = [r for r in results[:10] if r["kv"] is not None]
    assert len(served) == 4 * 1024 * 1024 // len(BIG) - 1           # what fits the 4 MiB
    assert results[9] == {"op": "get", "kv": None, "more": True}
    assert results[10]["kvs"] == [] and results[10]["more"] is True


# ---- range replies ------------------------------------------------------------------------------
def test_a_range_is_cut_while_built_and_says_so(log: Replicas) -> None:
    for i in range(50):
        log(op="put", key=f"a/{i:02d}", value="v" * 1000)
    kvs, count = log.sm.range("a/", max_keys=10)
    assert (len(kvs), count) == (10, 50)
    kvs, count = log.sm.range("a/", max_bytes=5000)
    assert (len(kvs), count) == (4, 50)
    kvs, count = log.sm.range("a/", max_bytes=10)          # one key always fits a reply
    assert (len(kvs), count) == (1, 50)
    assert log.sm.range("a/", 3, max_keys=10)[0] == log.sm.range("a/", 3)[0]
    budget = RangeBudget(0, 100)
    assert log.sm.keyspace.range("a/", 0, budget) == ([], 50)


def test_prefix_bounds_include_keys_past_the_largest_character(log: Replicas) -> None:
    top = "\U0010ffff"
    for key in ["a", f"a{top}", f"a{top}b", "b", f"{top}{top}x"]:
        log(op="put", key=key, value=1)
    assert [kv["key"] for kv in log.sm.range("a")[0]] == ["a", f"a{top}", f"a{top}b"]
    assert log.sm.range(f"a{top}")[1] == 2
    assert log.sm.range(top)[1] == 1 and log.sm.range("")[1] == 5
    assert prefix_end("ab") == "ac" and prefix_end(top) is None


# ---- at-most-once answers -----------------------------------------------------------------------
def test_remembered_answers_keep_no_values(log: Replicas) -> None:
    for rid in range(1, 101):                              # 100 puts of 512 KiB to one key
        answer = log(op="put", key="k", value=BIG + str(rid), cid="c", rid=rid)
        assert answer["kv"]["value"] == BIG + str(rid)       # the first answer is whole
    assert log.sm.answers.bytes < 100 * 1024
    assert len(pickle.dumps(log.sm)) < 2 * len(BIG)         # the live value, not 100 of them
    retry = log(op="put", key="k", value=BIG + "50", cid="c", rid=50)
    assert retry["kv"]["value"] == BIG + "50" and retry["kv"]["mod_revision"] == 50
    assert "value" not in retry["prev_kv"] and retry["prev_kv"]["version"] == 49
    assert log.sm.get("k")["version"] == 100                 # not applied again
    assert log.converged()


def test_a_retried_cas_and_txn_get_their_outcome(log: Replicas) -> None:
    log(op="put", key="k", value="old")
    failed = log(op="cas", key="k", value="new", expect_value="other", cid="c", rid=1)
    again = log(op="cas", key="k", value="new", expect_value="other", cid="c", rid=1)
    assert failed["succeeded"] is False and again["succeeded"] is False
    assert failed["kv"]["value"] == "old" and "value" not in again["kv"]
    txn = dict(op="txn", compare=[], failure=[], success=[
        {"op": "put", "key": "t", "value": [1, 2]}, {"op": "get", "key": "k"},
        {"op": "range", "prefix": ""}], cid="c", rid=2)
    first, retried = log(**txn), log(**txn)
    assert retried["results"][0] == first["results"][0]        # the value written comes back
    assert retried["results"][2] == {"op": "range", "kvs": [], "count": 2, "more": True}
    assert log.sm.get("t")["version"] == 1


def test_remembered_answers_are_bounded_in_bytes(log: Replicas,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(at_most_once, "MAX_BYTES_PER_CLIENT", 2000)
    monkeypatch.setattr(at_most_once, "MAX_BYTES", 5000)
    for rid in range(1, 41):
        log(op="put", key="k" * 100, value=rid, cid="c", rid=rid)
    table = log.sm.answers.clients["c"]
    assert table.bytes <= 2000 and 40 in table.results and 1 not in table.results
    assert log(op="put", key="k" * 100, value=1, cid="c", rid=1)["error"] == "invalid_request"
    for client in range(10):
        log(op="put", key="k", value=client, cid=f"other{client}", rid=1)
    assert log.sm.answers.bytes <= 5000 and "other9" in log.sm.answers.clients
    assert sum(t.bytes for t in log.sm.answers.clients.values()) == log.sm.answers.bytes
    restored = pickle.loads(pickle.dumps(log.sm))
    assert restored.answers.bytes == log.sm.answers.bytes and restored.digest() == log.sm.digest()


# ---- counts -------------------------------------------------------------------------------------
def test_sessions_are_counted_with_the_stamped_limit(log: Replicas) -> None:
    assert "session" in log.session(**_stamp(max_sessions=2))
    assert "session" in log.session(**_stamp(max_sessions=2))
    refused = log.session(**_stamp(max_sessions=2))
    assert refused["error"] == "limit_exceeded" and refused["limit"] == "max_sessions"
    assert "session" in log.session(**_stamp(max_sessions=3))   # another node's config
    error = error_from_json(400, refused)
    assert isinstance(error, LimitExceeded) and error.http_status == 429


def test_without_a_stamp_the_ceiling_holds(log: Replicas, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(limits.CEILINGS, "max_groups", 2)
    log(op="group_create", group="a")
    log(op="group_create", group="b", **_stamp(max_groups=10))     # above the ceiling: 2
    assert log(op="group_create", group="c")["error"] == "limit_exceeded"
    assert log(op="group_create", group="a") == {"created": False}  # existing: no new one
    assert log.legacy(op="group_create", group="d") == {"created": True}   # replayed as then


def test_members_names_locks_and_candidates_are_counted(log: Replicas) -> None:
    session = log.session()["session"]["id"]
    me = {"session": session, "admin": True}
    log(op="group_create", group="g")
    log(op="group_create", group="h")
    per_group = _stamp(max_members_per_group=2, max_members=3)
    assert "member" in log(op="group_join", group="g", member="m1", **me, **per_group)
    assert "member" in log(op="group_join", group="g", member="m2", **me, **per_group)
    assert log(op="group_join", group="g", member="m3", **me, **per_group)["limit"] == \
        "max_members_per_group"
    assert "member" in log(op="group_join", group="g", member="m2", meta=1, **me, **per_group)
    assert "member" in log(op="group_join", group="h", member="m1", **me, **per_group)
    assert log(op="group_join", group="h", member="m2", **me, **per_group)["limit"] == \
        "max_members"
    names = _stamp(max_names=1)
    assert log(op="name_register", name="a", **me, **names)["registered"] is True
    assert log(op="name_register", name="a", **me, **names)["registered"] is False
    assert log(op="name_register", name="b", **me, **names)["error"] == "limit_exceeded"
    waits = _stamp(max_lock_waiters_per_lock=2, max_lock_waiters=3)
    assert "token" in log(op="lock_acquire", name="l1", **me, **waits)
    assert "token" in log(op="lock_acquire", name="l1", **me, **waits)
    assert log(op="lock_acquire", name="l1", **me, **waits)["limit"] == "max_lock_waiters_per_lock"
    assert "token" in log(op="lock_acquire", name="l2", **me, **waits)
    assert log(op="lock_acquire", name="l3", **me, **waits)["limit"] == "max_lock_waiters"
    cands = _stamp(max_candidates_per_election=1)
    assert log(op="election_campaign", name="e", member="a", **me, **cands)["leader"]
    assert log(op="election_campaign", name="e", member="a", priority=2, **me, **cands)["leader"]
    assert log(op="election_campaign", name="e", member="b", **me, **cands)["error"] == \
        "limit_exceeded"
    assert log.converged()


def test_the_node_stamps_its_configured_limits() -> None:
    class Configured:
        max_members_per_group, max_members = 5, 7

    assert limits.stamp("group_join", Configured()) == {
        "limits": {"max_members_per_group": 5, "max_members": 7}}
    assert limits.stamp("put", Configured()) == {}
    assert limits.effective({"limits": {"max_sessions": 10**9}}, "max_sessions") == \
        limits.CEILINGS["max_sessions"]
    assert limits.effective({"limits": {"max_sessions": True}}, "max_sessions") == \
        limits.CEILINGS["max_sessions"]


# ---- the digest's copy --------------------------------------------------------------------------
@pytest.mark.parametrize("put_step, delete_step", [(7, 5), (3, 11), (13, 1), (1, 7)])
def test_a_digest_copy_in_chunks_is_the_state_at_its_end(monkeypatch: pytest.MonkeyPatch,
                                                         put_step: int, delete_step: int) -> None:
    """Apply goes on between the chunks; the copy must still be one consistent state."""
    from consensus_store.state import chunked_copy
    monkeypatch.setattr(chunked_copy, "CHUNK_KEYS", 7)
    monkeypatch.setattr(chunked_copy, "CHUNK_ANSWERS", 3)
    log = Replicas()
    for i in range(60):
        log(op="put", key=f"k{i:02d}", value=i, cid=f"c{i % 9}", rid=i)
    lock = threading.Lock()
    holds: list[str] = []       # the state as each hold ended

    @contextmanager
    def hold() -> Iterator[None]:
        with lock:
            yield
            holds.append(json.dumps(log.sm.plain_state(), sort_keys=True))
        i = len(holds)            # between holds, as the raft thread would
        if i % 2:
            log(op="put", key=f"k{(i * put_step) % 80:02d}", value=-i, cid=f"c{i % 13}",
                rid=100 + i)
        else:
            log(op="delete", key=f"k{(i * delete_step) % 60:02d}", cid="c1", rid=100 + i)

    state = copy_in_chunks(hold, lambda: log.sm)
    assert len(holds) > 10
    # The last hold only stops the tracking: the copy is the state as the one before ended.
    assert json.dumps(state, sort_keys=True) == holds[-2]
    assert holds[-2] != holds[0]
    assert not log.sm.keyspace.trackers and not log.sm.answers.trackers


def test_every_stamped_limit_is_a_config_key_with_a_default_under_its_ceiling() -> None:
    configured = Limits()
    for op, names in limits.LIMITS_OF_OP.items():
        stamped = limits.stamp(op, configured)["limits"]
        assert set(stamped) == set(names)
        for name, value in stamped.items():
            assert 0 < value <= limits.CEILINGS[name], name
    assert set(limits.CEILINGS) == {n for names in limits.LIMITS_OF_OP.values() for n in names}
    assert (configured.max_sessions, configured.max_groups, configured.max_members_per_group,
            configured.max_names, configured.max_range_keys) == (
        10_000, 10_000, 10_000, 100_000, limits.TXN_READ_MAX_KEYS)
