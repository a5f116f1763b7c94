"""Who a message goes to: group members, registered names and election leaders, read from this
node's replica of the coordination state (``state/coordination.py``: each record carries the
session that owns it).  Pure look-ups of local memory; the caller settles the read first.
"""
from __future__ import annotations

from typing import Any

from consensus_store.errors import InvalidRequest, NotFound
from consensus_store.node.engine import Engine
from consensus_store.coordination_keys import (MAX_NAME_CHARS, leader_key, member_key,
                                               members_prefix, name_key)

# (label, session): the label names the receiver in answers (member id, name, leader member).
Target = tuple[str, int]


def text(body: dict[str, Any], field: str, *, required: bool = True) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise InvalidRequest(f"'{field}' must be a non-empty string of at most "
                             f"{MAX_NAME_CHARS} chars")
    return value


def _record_value(engine: Engine, key: str) -> Any:
    record = engine.machine.keyspace.get(key) if engine.started else None
    return None if record is None else record[0]


def _session_of(value: Any) -> int | None:
    session = value.get("session") if isinstance(value, dict) else None
    return session if type(session) is int else None


def group_members(engine: Engine, group: str) -> list[Target]:
    """Every member of ``group`` with its session (empty: no such group or no members)."""
    prefix = members_prefix(group)
    if not engine.started:
        return []
    with engine.reading() as machine:        # iteration must not race with apply
        values = [machine.keyspace.get(key) for key in machine.keyspace.keys_with_prefix(prefix)]
    targets = []
    for record in values:
        value = None if record is None else record[0]
        session = _session_of(value)
        if session is not None and isinstance(value.get("id"), str):
            targets.append((value["id"], session))
    return targets


def member(engine: Engine, group: str, member_id: str) -> Target:
    value = _record_value(engine, member_key(group, member_id))
    session = _session_of(value)
    if session is None:
        raise NotFound(f"no member {member_id!r:.80} in group {group!r:.80}")
    return member_id, session


def name(engine: Engine, registered: str) -> Target:
    session = _session_of(_record_value(engine, name_key(registered)))
    if session is None:
        raise NotFound(f"no name {registered!r:.80} is registered")
    return registered, session


def election_leader(engine: Engine, election: str) -> Target:
    value = _record_value(engine, leader_key(election))
    session = _session_of(value)
    if session is None or not isinstance(value.get("member"), str):
        raise NotFound(f"election {election!r:.80} has no leader")
    return value["member"], session


def targets_of(engine: Engine, body: dict[str, Any], *, many: bool) -> tuple[dict[str, Any],
                                                                            list[Target]]:
    """(the ``to`` stamped on each envelope, the receivers) of a send or call body: exactly
    one of ``group`` (+ ``member``; without it, every member when ``many``), ``name``,
    ``election`` (its leader)."""
    group = text(body, "group", required=False)
    registered = text(body, "name", required=False)
    election = text(body, "election", required=False)
    if sum(x is not None for x in (group, registered, election)) != 1:
        raise InvalidRequest("name exactly one receiver: 'group' (with 'member'), 'name' or "
                             "'election'")
    if group is not None:
        member_id = text(body, "member", required=not many)
        if member_id is None:
            return {"group": group}, group_members(engine, group)
        return {"group": group, "member": member_id}, [member(engine, group, member_id)]
    if body.get("member") is not None:
        raise InvalidRequest("'member' goes with 'group' only")
    if registered is not None:
        return {"name": registered}, [name(engine, registered)]
    assert election is not None
    label, session = election_leader(engine, election)
    return {"election": election, "member": label}, [(label, session)]
