"""Coordination primitives in the pure state machine: groups, names, locks, elections."""
from __future__ import annotations

import pytest

from consensus_store.state import StateMachine, encode_command
from consensus_store.state.coordination import leader_key, lock_prefix, members_prefix


class Log:
    """Applies commands at increasing indexes, as the Raft log would."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.index = 0

    def __call__(self, **command: object) -> dict:
        self.index += 1
        return self.sm.apply(encode_command(command), self.index)

    def session(self, node: str = "n1") -> int:
        return self(op="session_open", ttl=5, node=node)["session"]["id"]

    def values(self, prefix: str) -> list:
        return [kv["value"] for kv in self.sm.range(prefix)[0]]


@pytest.fixture
def log() -> Log:
    return Log()


def test_groups_follow_pg2(log: Log) -> None:
    s1, s2 = log.session("n1"), log.session("n2")
    assert log(op="group_join", group="pool", session=s1)["error"] == "not_found"
    assert log(op="group_create", group="pool") == {"created": True}
    assert log(op="group_create", group="pool") == {"created": False}   # idempotent
    a = log(op="group_join", group="pool", session=s1, meta={"port": 1})["member"]
    b = log(op="group_join", group="pool", session=s1)["member"]          # duplicates, as pg2
    c = log(op="group_join", group="pool", session=s2, member="fixed")["member"]
    again = log(op="group_join", group="pool", session=s2, member="fixed", meta=2)["member"]
    assert a["id"] != b["id"] and a["node"] == "n1" and c["node"] == "n2"
    assert again["revision"] == c["revision"] and again["meta"] == 2      # explicit id: idempotent
    assert [m["id"] for m in log.values(members_prefix("pool"))] == sorted([a["id"], b["id"], "fixed"])
    log(op="group_update", group="pool", member=a["id"], meta={"port": 9})
    assert log.values(members_prefix("pool"))[0]["meta"] == {"port": 9}
    assert log(op="group_leave", group="pool", member=b["id"]) == {"left": True}
    log(op="session_expire", session=s1)                                  # process died
    assert [m["id"] for m in log.values(members_prefix("pool"))] == ["fixed"]
    assert log(op="group_delete", group="pool") == {"deleted": True, "members": 1}


def test_group_names_with_slashes_do_not_collide(log: Log) -> None:
    s = log.session()
    for group in ("a", "a/b"):
        log(op="group_create", group=group)
        log(op="group_join", group=group, session=s, member=group)
    assert [m["id"] for m in log.values(members_prefix("a"))] == ["a"]
    assert [m["id"] for m in log.values(members_prefix("a/b"))] == ["a/b"]


def test_registry_never_overwrites_and_frees_names_with_the_session(log: Log) -> None:
    s1, s2 = log.session(), log.session()
    assert log(op="name_register", name="db", value="pid1", session=s1)["registered"] is True
    taken = log(op="name_register", name="db", value="pid2", session=s2)
    assert taken["registered"] is False and taken["owner"]["value"] == "pid1"
    log(op="session_close", session=s1)
    assert log(op="name_register", name="db", value="pid2", session=s2)["registered"] is True
    assert log(op="name_unregister", name="db") == {"unregistered": True}


def test_locks_are_fifo_with_increasing_tokens(log: Log) -> None:
    s1, s2, s3 = log.session(), log.session(), log.session()
    first = log(op="lock_acquire", name="L", session=s1, owner="a")
    second = log(op="lock_acquire", name="L", session=s2, owner="b")
    third = log(op="lock_acquire", name="L", session=s3, owner="c")
    assert first["holder"]["key"] == first["key"] == second["holder"]["key"]
    assert first["token"] < second["token"] < third["token"]
    released = log(op="lock_release", name="L", key=first["key"])
    assert released["holder"]["key"] == second["key"]
    log(op="session_expire", session=s2)                # the holder dies: next in line holds
    holder = log.sm.range(lock_prefix("L"))[0][0]
    assert holder["key"] == third["key"] and holder["value"]["token"] == third["token"]
    assert log(op="lock_release", name="L", key="other")["error"] == "invalid_request"


def test_election_prefers_priority_then_seniority_and_fences_each_term(log: Log) -> None:
    s1, s2, s3 = log.session("n1"), log.session("n2"), log.session("n3")
    log(op="election_campaign", name="E", member="a", session=s1)
    log(op="election_campaign", name="E", member="b", session=s2)
    leader = log.sm.get_value(leader_key("E"))
    assert leader["member"] == "a"
    first_token = leader["token"]
    log(op="election_campaign", name="E", member="a", session=s1, meta="x")   # no change of leader
    assert log.sm.get_value(leader_key("E"))["token"] == first_token
    log(op="election_campaign", name="E", member="c", session=s3, priority=5)  # takes over
    assert log.sm.get_value(leader_key("E"))["member"] == "c"
    log(op="session_expire", session=s3)                                      # leader dies
    after = log.sm.get_value(leader_key("E"))
    assert after["member"] == "a" and after["token"] > first_token
    log(op="election_resign", name="E", member="a")
    assert log.sm.get_value(leader_key("E"))["member"] == "b"
    log(op="election_resign", name="E", member="b")
    assert log.sm.get_value(leader_key("E")) is None


def test_user_writes_cannot_touch_reserved_keys(log: Log) -> None:
    s = log.session()
    log(op="name_register", name="x", session=s)
    for command in (dict(op="put", key="_cs/name/x", value=1), dict(op="delete", key="_cs/name/x"),
                    dict(op="cas", key="_cs/a", value=1, expect_mod_revision=0),
                    dict(op="txn", success=[{"op": "delete", "key": "_cs/name/x"}])):
        assert log(**command)["error"] == "invalid_request", command
    assert log(op="delete", prefix="") == {"deleted": 0}
    assert log.sm.get_value("_cs/name/x")["name"] == "x"


@pytest.mark.parametrize("command", [
    dict(op="group_create", group=""), dict(op="group_create", group=5),
    dict(op="name_register", name="n"),                       # no session
    dict(op="lock_acquire", name="L", session=999),           # unknown session
    dict(op="election_campaign", name="E", member="m", session=1, priority="high"),
])
def test_bad_coordination_commands_are_rejected(log: Log, command: dict) -> None:
    log.session()
    assert "error" in log(**command)
