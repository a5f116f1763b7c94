"""Coordination primitives in the pure state machine: groups, names, locks, elections."""
from __future__ import annotations

import json
import pickle

import pytest

from consensus_store.state import StateMachine, encode_command
from consensus_store.state.coordination import leader_key, lock_prefix, members_prefix
from consensus_store.state.sessions import hash_session_key


class Log:
    """Applies commands at increasing indexes, as the Raft log would."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.index = 0
        self.key_hashes: dict[int, str] = {}

    def __call__(self, **command: object) -> dict:
        self.index += 1
        return self.sm.apply(encode_command(command), self.index)

    def session(self, node: str = "n1") -> int:
        key_hash = hash_session_key(f"key of session {self.index + 1}")
        session = self(op="session_open", ttl=5, node=node, key_hash=key_hash)["session"]["id"]
        self.key_hashes[session] = key_hash
        return session

    def key(self, session: int) -> dict:
        """The fields of a command that presents ``session``'s key (as the node stamps it)."""
        return {"key_hash": self.key_hashes[session]}

    def by(self, session: int) -> dict:
        """The fields of a command acting for ``session``."""
        return {"session": session, **self.key(session)}

    def values(self, prefix: str) -> list:
        return [kv["value"] for kv in self.sm.range(prefix)[0]]


@pytest.fixture
def log() -> Log:
    return Log()


def test_groups_follow_pg2(log: Log) -> None:
    s1, s2 = log.session("n1"), log.session("n2")
    assert log(op="group_join", group="pool", **log.by(s1))["error"] == "not_found"
    assert log(op="group_create", group="pool") == {"created": True}
    assert log(op="group_create", group="pool") == {"created": False}   # idempotent
    a = log(op="group_join", group="pool", meta={"port": 1}, **log.by(s1))["member"]
    b = log(op="group_join", group="pool", **log.by(s1))["member"]          # duplicates, as pg2
    c = log(op="group_join", group="pool", member="fixed", **log.by(s2))["member"]
    again = log(op="group_join", group="pool", member="fixed", meta=2, **log.by(s2))["member"]
    assert a["id"] != b["id"] and a["node"] == "n1" and c["node"] == "n2"
    assert again["revision"] == c["revision"] and again["meta"] == 2      # explicit id: idempotent
    assert [m["id"] for m in log.values(members_prefix("pool"))] == sorted([a["id"], b["id"], "fixed"])
    log(op="group_update", group="pool", member=a["id"], meta={"port": 9}, **log.key(s1))
    assert log.values(members_prefix("pool"))[0]["meta"] == {"port": 9}
    assert log(op="group_leave", group="pool", member=b["id"], **log.key(s1)) == {"left": True}
    log(op="session_expire", session=s1)                                  # process died
    assert [m["id"] for m in log.values(members_prefix("pool"))] == ["fixed"]
    assert log(op="group_delete", group="pool") == {"deleted": True, "members": 1}


def test_group_names_with_slashes_do_not_collide(log: Log) -> None:
    s = log.session()
    for group in ("a", "a/b"):
        log(op="group_create", group=group)
        log(op="group_join", group=group, member=group, **log.by(s))
    assert [m["id"] for m in log.values(members_prefix("a"))] == ["a"]
    assert [m["id"] for m in log.values(members_prefix("a/b"))] == ["a/b"]


def test_registry_never_overwrites_and_frees_names_with_the_session(log: Log) -> None:
    s1, s2 = log.session(), log.session()
    assert log(op="name_register", name="db", value="pid1", **log.by(s1))["registered"] is True
    taken = log(op="name_register", name="db", value="pid2", **log.by(s2))
    assert taken["registered"] is False and taken["owner"]["value"] == "pid1"
    log(op="session_close", **log.by(s1))
    assert log(op="name_register", name="db", value="pid2", **log.by(s2))["registered"] is True
    assert log(op="name_unregister", name="db", **log.key(s2)) == {"unregistered": True}


def test_locks_are_fifo_with_increasing_tokens(log: Log) -> None:
    s1, s2, s3 = log.session(), log.session(), log.session()
    first = log(op="lock_acquire", name="L", owner="a", **log.by(s1))
    second = log(op="lock_acquire", name="L", owner="b", **log.by(s2))
    third = log(op="lock_acquire", name="L", owner="c", **log.by(s3))
    assert first["holder"]["key"] == first["key"] == second["holder"]["key"]
    assert first["token"] < second["token"] < third["token"]
    released = log(op="lock_release", name="L", key=first["key"], **log.key(s1))
    assert released["holder"]["key"] == second["key"]
    log(op="session_expire", session=s2)                # the holder dies: next in line holds
    holder = log.sm.range(lock_prefix("L"))[0][0]
    assert holder["key"] == third["key"] and holder["value"]["token"] == third["token"]
    assert log(op="lock_release", name="L", key="other")["error"] == "invalid_request"


def test_election_prefers_priority_then_seniority_and_fences_each_term(log: Log) -> None:
    s1, s2, s3 = log.session("n1"), log.session("n2"), log.session("n3")
    log(op="election_campaign", name="E", member="a", **log.by(s1))
    log(op="election_campaign", name="E", member="b", **log.by(s2))
    leader = log.sm.get_value(leader_key("E"))
    assert leader["member"] == "a"
    first_token = leader["token"]
    log(op="election_campaign", name="E", member="a", meta="x", **log.by(s1))  # same leader
    assert log.sm.get_value(leader_key("E"))["token"] == first_token
    log(op="election_campaign", name="E", member="c", priority=5, **log.by(s3))  # takes over
    assert log.sm.get_value(leader_key("E"))["member"] == "c"
    log(op="session_expire", session=s3)                                      # leader dies
    after = log.sm.get_value(leader_key("E"))
    assert after["member"] == "a" and after["token"] > first_token
    log(op="election_resign", name="E", member="a", **log.key(s1))
    assert log.sm.get_value(leader_key("E"))["member"] == "b"
    log(op="election_resign", name="E", member="b", **log.key(s2))
    assert log.sm.get_value(leader_key("E")) is None


def test_user_writes_cannot_touch_reserved_keys(log: Log) -> None:
    s = log.session()
    log(op="name_register", name="x", **log.by(s))
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


# ---- session keys (issue #10): acting for a session needs its key ----------------------------
def owned_things(log: Log, s: int) -> dict:
    """A member, a name, a lock entry and a candidacy of session ``s``."""
    log(op="group_create", group="g")
    member = log(op="group_join", group="g", member="m", **log.by(s))["member"]["id"]
    log(op="name_register", name="n", **log.by(s))
    lock = log(op="lock_acquire", name="L", **log.by(s))["key"]
    log(op="election_campaign", name="E", member="c", **log.by(s))
    return {"member": member, "lock": lock}


def acting_for(s: int, things: dict) -> list[dict]:
    """Every command that acts for session ``s`` (without its key)."""
    return [
        dict(op="session_close", session=s),
        dict(op="group_join", group="g", session=s),
        dict(op="group_leave", group="g", member=things["member"]),
        dict(op="group_update", group="g", member=things["member"], meta=1),
        dict(op="name_register", name="other", session=s),
        dict(op="name_unregister", name="n"),
        dict(op="lock_acquire", name="L", session=s),
        dict(op="lock_release", name="L", key=things["lock"]),
        dict(op="election_campaign", name="E", member="d", session=s),
        dict(op="election_resign", name="E", member="c"),
        dict(op="put", key="eph", value=1, session=s),
        dict(op="cas", key="eph", value=1, expect_mod_revision=0, session=s),
        dict(op="txn", success=[{"op": "put", "key": "eph", "value": 1, "session": s}]),
    ]


@pytest.mark.parametrize("presented", ["missing", "another session's", "not a hash"])
def test_acting_for_a_session_without_its_key_is_forbidden_and_changes_nothing(
        log: Log, presented: str) -> None:
    s, other = log.session(), log.session()
    things = owned_things(log, s)
    before = log.sm.digest()
    key = {"missing": {}, "another session's": log.key(other),
           "not a hash": {"key_hash": ["x"]}}[presented]
    for command in acting_for(s, things):
        if command["op"] == "txn":
            command["success"][0].update(key)
        else:
            command.update(key)
        answer = log(**command)
        assert answer["error"] == "forbidden", command
        assert log.key_hashes[s] not in answer["message"]
    assert log.sm.digest() == before


def test_an_admin_command_acts_for_any_session(log: Log) -> None:
    s = log.session()
    things = owned_things(log, s)
    assert log(op="lock_release", name="L", key=things["lock"], admin=True)["released"] is True
    assert log(op="name_unregister", name="n", admin=True) == {"unregistered": True}
    assert log(op="session_close", session=s, admin=True) == {"ended": True, "deleted": 2}


def test_the_session_table_keeps_only_the_key_hash_and_shows_none(log: Log) -> None:
    s = log.session()
    assert log.sm.sessions.get(s).key_hash == log.key_hashes[s]
    assert log.key_hashes[s] not in str(log.sm.sessions.get(s).to_json())
    assert log(op="session_open", ttl=5, node="n")["error"] == "invalid_request"   # no hash
    assert log(op="session_open", ttl=5, node="n", key_hash="k" * 64)["error"] == "invalid_request"


def legacy(log: Log, **command: object) -> dict:
    """Apply a version-1 entry, as a journal written before session keys holds."""
    log.index += 1
    return log.sm.apply(json.dumps({"v": 1, **command}).encode(), log.index)


def test_an_old_journal_replays_as_before_and_its_sessions_become_admin_only(log: Log) -> None:
    s = legacy(log, op="session_open", ttl=5, node="n1")["session"]["id"]
    legacy(log, op="group_create", group="g")
    assert "member" in legacy(log, op="group_join", group="g", member="m", session=s)
    assert legacy(log, op="name_register", name="n", session=s)["registered"] is True
    assert legacy(log, op="name_unregister", name="n") == {"unregistered": True}
    # new entries: nobody has the key of a session opened before keys, only an admin acts for it
    assert log(op="group_leave", group="g", member="m")["error"] == "forbidden"
    assert "only an admin" in log(op="session_close", session=s, key_hash="0" * 64)["message"]
    assert log(op="group_leave", group="g", member="m", admin=True) == {"left": True}
    assert log(op="session_close", session=s, admin=True)["ended"] is True


def test_a_snapshot_from_before_session_keys_restores_keyless_sessions() -> None:
    sm = StateMachine()
    state = sm.__getstate__()
    state["sessions"] = [[7, 5.0, "n1", []]]           # the old four-field form
    sm.__setstate__(state)
    assert sm.sessions.get(7).key_hash == ""
    sm.__setstate__(pickle.loads(pickle.dumps(sm)).__getstate__())
    assert sm.sessions.get(7).key_hash == ""


def test_a_client_chosen_version_cannot_pick_the_old_rules(log: Log) -> None:
    s = log.session()
    things = owned_things(log, s)
    answer = log(op="lock_release", name="L", key=things["lock"], v=1)   # encode_command wins
    assert answer["error"] == "forbidden"
