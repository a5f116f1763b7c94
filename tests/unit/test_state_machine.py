"""The replicated state machine, pure: no pysyncobj, no network, no clock."""
from __future__ import annotations

import json
import pickle

import pytest

from consensus_store.state import StateMachine, encode_batch, encode_command
from consensus_store.state import at_most_once
from consensus_store.state import machine as machine_module
from consensus_store.state.sessions import hash_session_key


def apply(sm: StateMachine, index: int, **command: object) -> dict:
    return sm.apply(encode_command(command), index)


@pytest.fixture
def sm() -> StateMachine:
    return StateMachine()


def test_put_sets_etcd_style_revisions(sm: StateMachine) -> None:
    first = apply(sm, 5, op="put", key="a", value=1)
    assert first["kv"] == {"key": "a", "value": 1, "create_revision": 5, "mod_revision": 5,
                           "version": 1}
    assert first["prev_kv"] is None
    second = apply(sm, 9, op="put", key="a", value={"x": [1, 2]})
    assert second["kv"]["create_revision"] == 5
    assert second["kv"]["mod_revision"] == 9
    assert second["kv"]["version"] == 2
    assert second["prev_kv"]["value"] == 1
    assert sm.revision == 9


def test_delete_then_recreate_resets_version(sm: StateMachine) -> None:
    apply(sm, 1, op="put", key="a", value=1)
    assert apply(sm, 2, op="delete", key="a")["deleted"] == 1
    assert apply(sm, 3, op="delete", key="a")["deleted"] == 0
    assert sm.get("a") is None
    assert apply(sm, 4, op="put", key="a", value=2)["kv"]["version"] == 1
    assert sm.get("a")["create_revision"] == 4


def test_delete_prefix_only_touches_that_prefix(sm: StateMachine) -> None:
    for index, key in enumerate(["a/1", "a/2", "ab", "b"], start=1):
        apply(sm, index, op="put", key=key, value=index)
    assert apply(sm, 10, op="delete", prefix="a/")["deleted"] == 2
    assert [kv["key"] for kv in sm.range("")[0]] == ["ab", "b"]


@pytest.mark.parametrize("guard, current, succeeds", [
    ({"expect_value": 1}, 1, True),
    ({"expect_value": 2}, 1, False),
    ({"expect_mod_revision": 1}, 1, True),
    ({"expect_mod_revision": 7}, 1, False),
    ({"expect_mod_revision": 0}, None, True),   # 0 = key absent: create-if-absent
    ({"expect_mod_revision": 0}, 1, False),
    ({"expect_value": None}, None, False),      # an absent key has no value, not null
])
def test_cas_guards(sm: StateMachine, guard: dict, current: object, succeeds: bool) -> None:
    if current is not None:
        apply(sm, 1, op="put", key="k", value=current)
    result = apply(sm, 2, op="cas", key="k", value="new", **guard)
    assert result["succeeded"] is succeeds
    assert (sm.get_value("k") == "new") is succeeds


def test_txn_applies_success_or_failure_branch_atomically(sm: StateMachine) -> None:
    apply(sm, 1, op="put", key="balance", value=10)
    txn = dict(op="txn",
               compare=[{"key": "balance", "target": "value", "op": "==", "value": 10}],
               success=[{"op": "put", "key": "balance", "value": 5},
                        {"op": "put", "key": "log", "value": "paid"},
                        {"op": "get", "key": "balance"}],
               failure=[{"op": "get", "key": "balance"}])
    result = apply(sm, 2, **txn)
    assert result["succeeded"] is True
    assert result["results"][2]["kv"]["value"] == 5
    again = apply(sm, 3, **txn)
    assert again["succeeded"] is False
    assert again["results"] == [{"op": "get", "kv": sm.get("balance")}]


@pytest.mark.parametrize("compare, holds", [
    ({"key": "k", "target": "version", "op": "==", "value": 2}, True),
    ({"key": "k", "target": "version", "op": ">", "value": 2}, False),
    ({"key": "k", "target": "mod_revision", "op": "<", "value": 3}, True),
    ({"key": "k", "target": "create_revision", "op": "==", "value": 1}, True),
    ({"key": "missing", "target": "version", "op": "==", "value": 0}, True),
    ({"key": "missing", "target": "value", "op": "!=", "value": 1}, True),
    ({"key": "k", "target": "value", "op": "!=", "value": "b"}, False),
])
def test_txn_compares(sm: StateMachine, compare: dict, holds: bool) -> None:
    apply(sm, 1, op="put", key="k", value="a")
    apply(sm, 2, op="put", key="k", value="b")
    assert apply(sm, 3, op="txn", compare=[compare])["succeeded"] is holds


def test_invalid_txn_changes_nothing(sm: StateMachine) -> None:
    result = apply(sm, 1, op="txn", compare=[], success=[{"op": "put", "key": "a", "value": 1},
                                                        {"op": "explode"}])
    assert result["error"] == "invalid_request"
    assert len(sm) == 0


@pytest.mark.parametrize("data", [
    b"not json", b"[1,2]", json.dumps({"v": 99, "op": "put"}).encode(),
    json.dumps({"v": 1, "op": "nope"}).encode(),
    json.dumps({"v": 1, "op": "put", "key": 5, "value": 1}).encode(),
    json.dumps({"v": 1, "op": "put", "key": "k"}).encode(),
    json.dumps({"v": 1, "op": "cas", "key": "k", "value": 1}).encode(),
    json.dumps({"v": 1, "op": "txn", "compare": "x"}).encode(),
])
def test_apply_never_raises_on_bad_commands(sm: StateMachine, data: bytes) -> None:
    result = sm.apply(data, 1)
    assert result["error"] == "invalid_request"
    assert sm.applied_index == 1


def test_apply_turns_internal_errors_into_results(sm: StateMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(command: dict, index: int) -> dict:
        raise KeyError("boom")
    monkeypatch.setitem(sm._ops, "put", broken)
    assert apply(sm, 1, op="put", key="k", value=1)["error"] == "internal"


def test_duplicate_request_returns_first_result_without_reapplying(sm: StateMachine) -> None:
    first = apply(sm, 1, op="put", key="k", value="v1", cid="c", rid=1)
    retry = apply(sm, 2, op="put", key="k", value="v1", cid="c", rid=1)
    assert retry == first
    assert sm.get("k")["version"] == 1
    assert sm.get("k")["mod_revision"] == 1


def test_done_mark_forgets_results_and_rejects_very_late_retries(sm: StateMachine) -> None:
    apply(sm, 1, op="put", key="k", value=1, cid="c", rid=1)
    apply(sm, 2, op="put", key="k", value=2, cid="c", rid=2, done=2)
    assert 1 not in sm.answers.clients["c"].results
    late = apply(sm, 3, op="put", key="k", value=1, cid="c", rid=1)
    assert late["error"] == "invalid_request"
    assert sm.get_value("k") == 2


def test_done_mark_forgets_from_the_oldest_and_keeps_late_arrivals_answerable(sm: StateMachine) -> None:
    # Concurrent requests of one client reach the log out of order.
    for index, rid in enumerate([1, 2, 4, 3], start=1):
        apply(sm, index, op="put", key=f"k{rid}", value=rid, cid="c", rid=rid)
    apply(sm, 5, op="put", key="k5", value=5, cid="c", rid=5, done=4)
    assert list(sm.answers.clients["c"].results) == [4, 3, 5]      # 3 sits behind 4: kept a while
    retry = apply(sm, 6, op="put", key="k3", value=3, cid="c", rid=3)
    assert retry["kv"]["mod_revision"] == 4 and sm.get("k3")["version"] == 1   # first answer
    apply(sm, 7, op="put", key="k6", value=6, cid="c", rid=6, done=6)
    assert list(sm.answers.clients["c"].results) == [6]


def test_client_tables_are_bounded(sm: StateMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(at_most_once, "MAX_CLIENTS", 3)
    monkeypatch.setattr(at_most_once, "MAX_RESULTS_PER_CLIENT", 2)
    for index in range(1, 6):
        apply(sm, index, op="put", key="k", value=index, cid=f"c{index}", rid=1)
    for rid in range(2, 6):
        apply(sm, 10 + rid, op="put", key="k", value=rid, cid="c5", rid=rid)
    assert list(sm.answers.clients) == ["c3", "c4", "c5"]
    assert list(sm.answers.clients["c5"].results) == [4, 5]
    # An answer a bound dropped is not applied again on retry: it is refused.
    assert apply(sm, 20, op="put", key="k", value=3, cid="c5", rid=3)["error"] == "invalid_request"
    assert sm.get("k")["mod_revision"] == 15


def test_range_is_ordered_limited_and_counted(sm: StateMachine) -> None:
    for index, key in enumerate(["b/2", "b/1", "a", "b/3", "c"], start=1):
        apply(sm, index, op="put", key=key, value=key)
    kvs, count = sm.range("b/", limit=2)
    assert [kv["key"] for kv in kvs] == ["b/1", "b/2"]
    assert count == 3
    assert [kv["key"] for kv in sm.range("")[0]] == ["a", "b/1", "b/2", "b/3", "c"]


def test_unicode_keys_and_prefixes(sm: StateMachine) -> None:
    apply(sm, 1, op="put", key="ключ/☃", value="snow")
    apply(sm, 2, op="put", key="ключ/\U0001F600", value="smile")
    assert [kv["key"] for kv in sm.range("ключ/")[0]] == ["ключ/☃", "ключ/\U0001F600"]


def test_snapshot_round_trip_keeps_state_and_digest(sm: StateMachine) -> None:
    apply(sm, 1, op="put", key="a", value=[1, {"b": None}], cid="c", rid=1)
    apply(sm, 2, op="delete", key="zzz")
    restored = pickle.loads(pickle.dumps(sm))
    assert restored.digest() == sm.digest()
    assert restored.get("a") == sm.get("a")
    again = apply(restored, 3, op="put", key="a", value=[1, {"b": None}], cid="c", rid=1)
    assert again["kv"]["mod_revision"] == 1 and restored.get("a")["version"] == 1   # remembered


def test_same_log_gives_same_digest_different_log_does_not() -> None:
    log = [dict(op="put", key=f"k{i % 7}", value=i, cid="c", rid=i) for i in range(1, 50)]
    one, two, three = StateMachine(), StateMachine(), StateMachine()
    for index, command in enumerate(log, start=1):
        apply(one, index, **command)
        apply(two, index, **command)
        apply(three, index, **(command if index != 49 else {**command, "value": -1}))
    assert one.digest() == two.digest()
    assert one.digest() != three.digest()


def test_noop_changes_no_revision(sm: StateMachine) -> None:
    apply(sm, 1, op="put", key="a", value=1)
    assert apply(sm, 2, op="noop") == {}
    assert sm.revision == 1
    assert sm.applied_index == 2


# ---- sessions and ephemeral keys ------------------------------------------------------------
KEY_HASH = hash_session_key("the session key of these tests")


def open_session(sm: StateMachine, index: int, ttl: float = 5.0, node: str = "n1") -> int:
    result = apply(sm, index, op="session_open", ttl=ttl, node=node, key_hash=KEY_HASH)
    return result["session"]["id"]


def test_session_id_is_its_index_and_ending_it_deletes_its_keys(sm: StateMachine) -> None:
    session = open_session(sm, 3)
    assert session == 3
    apply(sm, 4, op="put", key="eph/a", value=1, session=session, key_hash=KEY_HASH)
    apply(sm, 5, op="cas", key="eph/b", value=2, expect_mod_revision=0, session=session,
          key_hash=KEY_HASH)
    apply(sm, 6, op="txn", success=[{"op": "put", "key": "eph/c", "value": 3, "session": session,
                                     "key_hash": KEY_HASH}])
    apply(sm, 7, op="put", key="durable", value=0)
    sm.drain_events()
    result = apply(sm, 8, op="session_expire", session=session)
    assert result == {"ended": True, "deleted": 3}
    assert [kv["key"] for kv in sm.range("")[0]] == ["durable"]
    assert [e["key"] for e in sm.drain_events()] == ["eph/a", "eph/b", "eph/c"]
    assert sm.revision == 8
    assert apply(sm, 9, op="session_close", session=session,
                 key_hash=KEY_HASH) == {"ended": False, "deleted": 0}


def test_put_without_session_detaches_and_delete_unbinds(sm: StateMachine) -> None:
    session = open_session(sm, 1)
    apply(sm, 2, op="put", key="a", value=1, session=session, key_hash=KEY_HASH)
    apply(sm, 3, op="put", key="a", value=2)                 # now durable
    apply(sm, 4, op="put", key="b", value=1, session=session, key_hash=KEY_HASH)
    apply(sm, 5, op="delete", key="b")
    apply(sm, 6, op="put", key="b", value=2)
    assert apply(sm, 7, op="session_close", session=session, key_hash=KEY_HASH)["deleted"] == 0
    assert sm.get_value("a") == 2 and sm.get_value("b") == 2


def test_unknown_session_rejects_the_write_entirely(sm: StateMachine) -> None:
    result = apply(sm, 1, op="put", key="a", value=1, session=42)
    assert result["error"] == "not_found"
    txn = apply(sm, 2, op="txn", success=[{"op": "put", "key": "x", "value": 1},
                                          {"op": "put", "key": "y", "value": 1, "session": 42}])
    assert txn["error"] == "not_found"
    assert len(sm) == 0


@pytest.mark.parametrize("ttl", [0, -1, "5", True, 10_000])
def test_session_ttl_is_validated(sm: StateMachine, ttl: object) -> None:
    assert apply(sm, 1, op="session_open", ttl=ttl, node="n",
                 key_hash=KEY_HASH)["error"] == "invalid_request"


def test_sessions_survive_snapshots(sm: StateMachine) -> None:
    session = open_session(sm, 1)
    apply(sm, 2, op="put", key="a", value=1, session=session, key_hash=KEY_HASH)
    restored = pickle.loads(pickle.dumps(sm))
    assert restored.digest() == sm.digest()
    assert restored.session_ids() == [session]
    assert apply(restored, 3, op="session_expire", session=session)["deleted"] == 1


# ---- batches (group commit: several clients' writes in one entry) ------------------------------
def test_a_batch_applies_each_write_as_if_alone_at_the_entry_revision(sm: StateMachine) -> None:
    apply(sm, 1, op="put", key="c", value="old")
    result = sm.apply(encode_batch([
        {"op": "put", "key": "a", "value": 1, "cid": "x", "rid": 1},
        {"op": "cas", "key": "c", "value": "new", "expect_value": "other", "cid": "y", "rid": 1},
        {"op": "delete", "key": "c", "cid": "z", "rid": 1},
    ]), 7)
    put, cas, delete = result["results"]
    assert put["kv"]["mod_revision"] == 7 and put["kv"]["version"] == 1
    assert cas["succeeded"] is False                     # fails alone, the others still apply
    assert delete["deleted"] == 1
    assert sm.get("a")["mod_revision"] == 7 and sm.get("c") is None
    assert sm.revision == 7


def test_a_write_retried_alone_after_its_batch_gets_the_batch_answer(sm: StateMachine) -> None:
    first = sm.apply(encode_batch([{"op": "put", "key": "a", "value": 1, "cid": "x", "rid": 4}]),
                     3)["results"][0]
    again = apply(sm, 5, op="put", key="a", value=1, cid="x", rid=4)
    assert again == first
    assert sm.get("a")["version"] == 1 and sm.get("a")["mod_revision"] == 3


@pytest.mark.parametrize("op", [
    {"op": "txn", "compare": [], "success": [], "failure": []},
    {"op": "batch", "ops": []},
    {"op": "lock_acquire", "name": "l", "session": 1},
    "not an object",
])
def test_a_batch_refuses_what_it_may_not_carry_and_applies_the_rest(sm: StateMachine,
                                                                     op: object) -> None:
    data = json.dumps({"v": 1, "op": "batch", "ops": [
        op, {"v": 1, "op": "put", "key": "a", "value": 1}]}).encode()
    refused, put = sm.apply(data, 2)["results"]
    assert refused["error"] == "invalid_request"
    assert put["kv"]["value"] == 1


def test_a_batch_without_a_list_of_ops_is_refused(sm: StateMachine) -> None:
    assert apply(sm, 1, op="batch", ops="put")["error"] == "invalid_request"
