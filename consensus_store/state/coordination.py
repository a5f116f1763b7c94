"""Coordination primitives as replicated ops: pg2-style groups, a :global-style registry,
fenced FIFO locks and priority elections.

Their state lives in the key space under the reserved prefix ``_cs/`` (so ranges, watches,
snapshots and digests cover it like any data), and only these ops may write there.  Keys bound
to a session vanish with it: a dead process's members, names, lock waits and candidacies go in
the same log entry that ends its session, and elections are re-decided in that entry too.
Acting for a session (join, register, acquire, campaign; and leave, update, unregister, release,
resign what a session owns) needs that session's key (``StateMachine.authorize``).

The key layout is in ``coordination_keys.py``.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from consensus_store.coordination_keys import (RESERVED_PREFIX, candidate_key, candidates_prefix,
                                               decode_name, group_key, leader_key, lock_prefix,
                                               member_key, members_prefix, name_key)
from consensus_store.errors import InvalidRequest, NotFound
from consensus_store.state import limits
from consensus_store.state.commands import is_int
from consensus_store.state.keyspace import Keyspace, Record
from consensus_store.state.sessions import SessionTable


class MachineView(Protocol):
    """What the coordination handlers use of the state machine (``StateMachine``), which
    registers them: this module never imports the machine."""

    keyspace: Keyspace
    sessions: SessionTable

    def session_of(self, command: dict[str, Any],
                   outer: dict[str, Any] | None = None) -> int | None: ...
    def authorize_owner(self, key: str, command: dict[str, Any]) -> None: ...
    def put_record(self, key: str, value: Any, index: int, session: int | None) -> Record: ...
    def delete_record(self, key: str, index: int) -> Record | None: ...


Result = dict[str, Any]


class Coordination:
    """The op handlers; registered into ``StateMachine`` by name."""

    def __init__(self, machine: MachineView) -> None:
        self._m = machine

    def handlers(self) -> dict[str, Callable[[dict[str, Any], int], Result]]:
        return {
            "group_create": self.group_create, "group_delete": self.group_delete,
            "group_join": self.group_join, "group_leave": self.group_leave,
            "group_update": self.group_update,
            "name_register": self.name_register, "name_unregister": self.name_unregister,
            "lock_acquire": self.lock_acquire, "lock_release": self.lock_release,
            "election_campaign": self.election_campaign, "election_resign": self.election_resign,
        }

    # ---- helpers ----------------------------------------------------------------------------
    def _session(self, command: dict[str, Any]) -> int:
        session = self._m.session_of(command)
        if session is None:
            raise InvalidRequest("this op needs a 'session'")
        return session

    def _node_of(self, session: int) -> str:
        record = self._m.sessions.get(session)
        return record.node if record else ""

    def _value(self, key: str) -> Any:
        record = self._m.keyspace.get(key)
        return record[0] if record else None

    def _check_count(self, command: dict[str, Any], limit: str, prefix: str) -> None:
        """LimitExceeded if the keys under ``prefix`` already reach ``limit`` (state/limits.py)."""
        limits.enforce(command, limit, self._m.keyspace.count_prefix(prefix))

    # ---- groups (pg2) -----------------------------------------------------------------------
    def group_create(self, command: dict[str, Any], index: int) -> Result:
        key = group_key(command.get("group"))
        if self._m.keyspace.get(key) is not None:
            return {"created": False}
        self._check_count(command, "max_groups", f"{RESERVED_PREFIX}group/")
        self._m.put_record(key, {"group": command["group"]}, index, None)
        return {"created": True}

    def group_delete(self, command: dict[str, Any], index: int) -> Result:
        key = group_key(command.get("group"))
        members = list(self._m.keyspace.keys_with_prefix(members_prefix(command["group"])))
        for member in members:
            self._m.delete_record(member, index)
        existed = self._m.delete_record(key, index) is not None
        return {"deleted": existed, "members": len(members)}

    def group_join(self, command: dict[str, Any], index: int) -> Result:
        group = command.get("group")
        if self._m.keyspace.get(group_key(group)) is None:
            raise NotFound(f"no such group {group!r} (create it first, as with pg2)")
        session = self._session(command)
        member_id = command.get("member") or f"{session}.{index}"
        key = member_key(group, member_id)
        if self._m.keyspace.get(key) is None:   # a new member (a rejoin replaces its record)
            self._check_count(command, "max_members_per_group", members_prefix(group))
            self._check_count(command, "max_members", f"{RESERVED_PREFIX}member/")
        value = {"id": member_id, "node": self._node_of(session), "meta": command.get("meta"),
                 "session": session}
        record = self._m.put_record(key, value, index, session)
        return {"member": _member_json(value, record)}

    def group_leave(self, command: dict[str, Any], index: int) -> Result:
        key = member_key(command.get("group"), command.get("member"))
        self._m.authorize_owner(key, command)
        return {"left": self._m.delete_record(key, index) is not None}

    def group_update(self, command: dict[str, Any], index: int) -> Result:
        key = member_key(command.get("group"), command.get("member"))
        record = self._m.keyspace.get(key)
        if record is None:
            raise NotFound(f"no member {command['member']!r} in group {command['group']!r}")
        self._m.authorize_owner(key, command)
        value = {**record[0], "meta": command.get("meta")}
        record = self._m.put_record(key, value, index, value["session"])
        return {"member": _member_json(value, record)}

    # ---- registry (:global) -----------------------------------------------------------------
    def name_register(self, command: dict[str, Any], index: int) -> Result:
        key = name_key(command.get("name"))
        session = self._session(command)
        current = self._value(key)
        if current is not None:
            return {"registered": False, "owner": current}
        self._check_count(command, "max_names", f"{RESERVED_PREFIX}name/")
        value = {"name": command["name"], "value": command.get("value"), "session": session,
                 "node": self._node_of(session)}
        self._m.put_record(key, value, index, session)
        return {"registered": True, "owner": value}

    def name_unregister(self, command: dict[str, Any], index: int) -> Result:
        key = name_key(command.get("name"))
        self._m.authorize_owner(key, command)
        return {"unregistered": self._m.delete_record(key, index) is not None}

    # ---- fenced FIFO locks ------------------------------------------------------------------
    def lock_acquire(self, command: dict[str, Any], index: int) -> Result:
        prefix = lock_prefix(command.get("name"))
        session = self._session(command)
        key = f"{prefix}{index:020d}"   # zero-padded: key order is arrival order
        self._check_count(command, "max_lock_waiters_per_lock", prefix)
        self._check_count(command, "max_lock_waiters", f"{RESERVED_PREFIX}lock/")
        value = {"session": session, "owner": command.get("owner"), "token": index}
        self._m.put_record(key, value, index, session)
        return {"key": key, "token": index, "holder": self._lock_holder(prefix)}

    def lock_release(self, command: dict[str, Any], index: int) -> Result:
        key = command.get("key")
        prefix = lock_prefix(command.get("name"))
        if not isinstance(key, str) or not key.startswith(prefix):
            raise InvalidRequest("'key' must be the key lock_acquire returned for this lock")
        self._m.authorize_owner(key, command)
        released = self._m.delete_record(key, index) is not None
        return {"released": released, "holder": self._lock_holder(prefix)}

    def _lock_holder(self, prefix: str) -> Result | None:
        key = self._m.keyspace.first_with_prefix(prefix)   # O(log n), however many wait
        return None if key is None else {"key": key, **self._value(key)}

    # ---- elections --------------------------------------------------------------------------
    def election_campaign(self, command: dict[str, Any], index: int) -> Result:
        name = command.get("name")
        session = self._session(command)
        priority = command.get("priority", 0)
        if not is_int(priority):
            raise InvalidRequest("'priority' must be an integer")
        member = command.get("member")
        key = candidate_key(name, member)
        if self._m.keyspace.get(key) is None:
            self._check_count(command, "max_candidates_per_election", candidates_prefix(name))
        value = {"member": member, "priority": priority, "meta": command.get("meta"),
                 "session": session, "node": self._node_of(session)}
        self._m.put_record(key, value, index, session)   # re-campaigning keeps seniority
        self.settle_election(name, index)
        return {"leader": self._value(leader_key(name))}

    def election_resign(self, command: dict[str, Any], index: int) -> Result:
        name = command.get("name")
        key = candidate_key(name, command.get("member"))
        self._m.authorize_owner(key, command)
        resigned = self._m.delete_record(key, index) is not None
        self.settle_election(name, index)
        return {"resigned": resigned, "leader": self._value(leader_key(name))}

    def settle_election(self, name: str, index: int) -> None:
        """Make the leader key name the best live candidate (highest priority, oldest)."""
        best, best_rank = None, None
        for key in self._m.keyspace.keys_with_prefix(candidates_prefix(name)):
            value, create_revision = self._m.keyspace.get(key)[:2]
            rank = (-value["priority"], create_revision)
            if best_rank is None or rank < best_rank:
                best, best_rank = (value, create_revision), rank
        lkey = leader_key(name)
        current = self._value(lkey)
        if best is None:
            if current is not None:
                self._m.delete_record(lkey, index)
            return
        value, candidate_revision = best
        if current is None or current["candidate_revision"] != candidate_revision:
            leader = {"member": value["member"], "priority": value["priority"],
                      "meta": value["meta"], "node": value["node"], "session": value["session"],
                      "candidate_revision": candidate_revision, "token": index}
            self._m.put_record(lkey, leader, index, None)

    def settle_after_deletions(self, deleted_keys: list[str], index: int) -> None:
        """Re-decide elections whose candidates vanished with a session."""
        names = set()
        marker = f"{RESERVED_PREFIX}election/"
        for key in deleted_keys:
            if key.startswith(marker) and "/cand/" in key:
                names.add(decode_name(key[len(marker):].split("/", 1)[0]))
        for name in sorted(names):
            self.settle_election(name, index)


def _member_json(value: dict[str, Any], record: list) -> Result:
    return {"id": value["id"], "node": value["node"], "meta": value["meta"],
            "session": value["session"], "revision": record[1]}


# ---- queries (pure reads of the key space; the node serves them at any read level) --------
def list_groups(machine: MachineView) -> list[str]:
    return [kv["value"]["group"] for kv in machine.range(f"{RESERVED_PREFIX}group/")[0]]


def group_members(machine: MachineView, group: str) -> list[Result]:
    return [_member_json(kv["value"], [None, kv["create_revision"]])
            for kv in machine.range(members_prefix(group))[0]]


def registered_names(machine: MachineView) -> list[Result]:
    return [kv["value"] for kv in machine.range(f"{RESERVED_PREFIX}name/")[0]]


def whereis(machine: MachineView, name: str) -> Result | None:
    return machine.get_value(name_key(name))


def lock_state(machine: MachineView, name: str) -> Result:
    queue = [{"key": kv["key"], **kv["value"]} for kv in machine.range(lock_prefix(name))[0]]
    return {"name": name, "holder": queue[0] if queue else None, "waiters": queue[1:]}


def all_locks(machine: MachineView) -> list[Result]:
    names = []
    for kv in machine.range(f"{RESERVED_PREFIX}lock/")[0]:
        name = decode_name(kv["key"][len(RESERVED_PREFIX) + len("lock/"):].split("/", 1)[0])
        if not names or names[-1] != name:
            names.append(name)
    return [lock_state(machine, name) for name in names]


def election_state(machine: MachineView, name: str) -> Result:
    candidates = [{**kv["value"], "revision": kv["create_revision"]}
                  for kv in machine.range(candidates_prefix(name))[0]]
    candidates.sort(key=lambda c: (-c["priority"], c["revision"]))
    return {"name": name, "leader": machine.get_value(leader_key(name)), "candidates": candidates}
