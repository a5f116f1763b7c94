"""The dashboard's coordination panels as data: parsed from one range read of ``_cs/``.

One read of the reserved prefix gives groups, names, locks and elections at one revision (the
layout is in README, "Coordination", and ``state/coordination.py``); sessions come from the
admin-only ``sessions`` op.  Pure functions of answers; ``coordination_events`` says what
changed between two of them (joins, leaves, lock grants, election leaders) and
``watched_events`` words what a watch of ``_cs/`` saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import unquote

from consensus_store.coordination_keys import RESERVED_PREFIX

NEEDS_ADMIN = "needs admin"


@dataclass(frozen=True)
class LockView:
    name: str
    holder_session: int | None
    holder_owner: Any
    token: int | None
    waiters: int


@dataclass(frozen=True)
class ElectionView:
    name: str
    leader: str | None
    token: int | None
    candidates: int


@dataclass(frozen=True)
class NameView:
    name: str
    session: int | None
    node: str | None


@dataclass(frozen=True)
class SessionView:
    id: int
    ttl: float
    node: str | None
    keys: int


@dataclass(frozen=True)
class Coordination:
    """What the panels show; ``error`` set when it could not be read this time (then the
    previous data is kept), ``sessions`` None with ``sessions_note`` when not readable."""

    groups: tuple[tuple[str, int], ...] = ()           # (group, member count)
    members: frozenset[tuple[str, str]] = frozenset()  # (group, member): joins and leaves
    elections: tuple[ElectionView, ...] = ()
    locks: tuple[LockView, ...] = ()
    names: tuple[NameView, ...] = ()
    sessions: tuple[SessionView, ...] | None = None
    sessions_note: str = ""
    truncated: bool = False          # more coordination keys than one read returns
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": [{"group": g, "members": n} for g, n in self.groups],
            "elections": [vars(e) for e in self.elections],
            "locks": [vars(lock) for lock in self.locks],
            "names": [vars(n) for n in self.names],
            "sessions": None if self.sessions is None else [vars(s) for s in self.sessions],
            "sessions_note": self.sessions_note, "truncated": self.truncated,
            "error": self.error,
        }


def _split(key: str) -> list[str]:
    return [unquote(part) for part in key[len(RESERVED_PREFIX):].split("/")]


def parse_coordination(kvs: Iterable[dict[str, Any]], *, truncated: bool = False,
                       sessions: list[dict[str, Any]] | None = None,
                       sessions_note: str = "") -> Coordination:
    """``kvs``: a range answer's records under ``_cs/`` (key order); ``sessions``: the
    ``sessions`` op's list, or None with a note (e.g. ``NEEDS_ADMIN``)."""
    groups: dict[str, int] = {}
    members: set[tuple[str, str]] = set()
    locks: dict[str, list[dict[str, Any]]] = {}
    leaders: dict[str, dict[str, Any]] = {}
    candidates: dict[str, int] = {}
    names: list[NameView] = []
    for kv in kvs:
        key, value = kv.get("key", ""), kv.get("value")
        value = value if isinstance(value, dict) else {}
        parts = _split(key)
        kind = parts[0]
        if kind == "group" and len(parts) == 2:
            groups.setdefault(parts[1], 0)
        elif kind == "member" and len(parts) == 3:
            groups[parts[1]] = groups.get(parts[1], 0) + 1
            members.add((parts[1], parts[2]))
        elif kind == "name" and len(parts) == 2:
            names.append(NameView(parts[1], value.get("session"), value.get("node")))
        elif kind == "lock" and len(parts) == 3:
            locks.setdefault(parts[1], []).append(value)     # index order: the first holds it
        elif kind == "election" and len(parts) >= 3:
            if parts[2] == "leader":
                leaders[parts[1]] = value
            elif parts[2] == "cand":
                candidates[parts[1]] = candidates.get(parts[1], 0) + 1
    return Coordination(
        groups=tuple(sorted(groups.items())), members=frozenset(members),
        elections=tuple(ElectionView(name, leaders.get(name, {}).get("member"),
                                     leaders.get(name, {}).get("token"), candidates.get(name, 0))
                        for name in sorted(set(leaders) | set(candidates))),
        locks=tuple(LockView(name, queue[0].get("session"), queue[0].get("owner"),
                             queue[0].get("token"), len(queue) - 1)
                    for name, queue in sorted(locks.items())),
        names=tuple(names),
        sessions=None if sessions is None else tuple(
            SessionView(s.get("id", 0), s.get("ttl", 0.0), s.get("node"), s.get("keys", 0))
            for s in sessions),
        sessions_note=sessions_note, truncated=truncated)


def coordination_events(before: Coordination, after: Coordination, *,
                        members: bool = True) -> list[tuple[str, str]]:
    """(kind, text) for each change from ``before`` to ``after``, in a stable order; joins and
    leaves only with ``members`` (a live watch reports those itself, every one)."""
    events: list[tuple[str, str]] = []
    if members:
        for group, member in sorted(after.members - before.members):
            events.append(("join", f"{member} joined group {group}"))
        for group, member in sorted(before.members - after.members):
            events.append(("leave", f"{member} left group {group}"))
    old_locks = {lock.name: lock for lock in before.locks}
    for lock in after.locks:
        old = old_locks.pop(lock.name, None)
        if old is None or (old.holder_session, old.token) != (lock.holder_session, lock.token):
            events.append(("lock", f"lock {lock.name} granted to session {lock.holder_session} "
                                   f"(token {lock.token})"))
    for name in sorted(old_locks):
        events.append(("lock", f"lock {name} released"))
    old_elections = {e.name: e for e in before.elections}
    for election in after.elections:
        old = old_elections.get(election.name)
        if election.leader is not None and (
                old is None or (old.leader, old.token) != (election.leader, election.token)):
            events.append(("election", f"election {election.name}: {election.leader} leads "
                                       f"(token {election.token})"))
    return events


def watched_events(events: Iterable[Any]) -> list[tuple[str, str]]:
    """(kind, text) for changes a watch of ``_cs/`` saw (``WatchEvent``s, with prev values),
    every one, in revision order.  Lock grants and election leaders are derived state, not one
    key's change: ``coordination_events`` still finds those by comparing polls."""
    texts: list[tuple[str, str]] = []
    for event in events:
        parts = _split(event.key)
        put = event.type == "put"
        value = event.value if put else event.prev_value
        session = value.get("session") if isinstance(value, dict) else None
        by = f" (session {session})" if session is not None else ""
        kind = parts[0]
        if kind == "group" and len(parts) == 2:
            texts.append(("group", f"group {parts[1]} {'created' if put else 'deleted'}"))
        elif kind == "member" and len(parts) == 3:
            if not put:
                texts.append(("leave", f"{parts[2]} left group {parts[1]}{by}"))
            elif event.version == 1:
                texts.append(("join", f"{parts[2]} joined group {parts[1]}{by}"))
            else:
                texts.append(("member", f"{parts[2]} updated its meta in group {parts[1]}"))
        elif kind == "name" and len(parts) == 2:
            texts.append(("name", f"name {parts[1]} {'registered' if put else 'unregistered'}"
                                  f"{by}"))
        elif kind == "lock" and len(parts) == 3 and put:
            texts.append(("lock", f"lock {parts[1]} requested{by}"))
        elif kind == "lock" and len(parts) == 3:
            texts.append(("lock", f"lock {parts[1]}: entry of session {session} removed "
                                  "(released or expired)"))
        elif kind == "election" and len(parts) == 4 and parts[2] == "cand":
            texts.append(("election", f"{parts[3]} {'campaigns' if put else 'left'} in "
                                      f"election {parts[1]}"))
    return texts
