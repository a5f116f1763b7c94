"""Resource limits the state machine enforces, the same on every replica.

Apply must not depend on a node's own config (replicas may be configured differently, and a
restart replays the log under whatever config it has then).  So every limit apply checks is
either fixed here, in code, or stamped into the command by the node that took the request:

- counts (sessions, groups, members, names, lock waiters, election candidates): the proposing
  node stamps its configured limits (``[limits]`` in its config) into the command as
  ``"limits": {name: n}`` (``stamp``); apply enforces ``min(stamped, CEILINGS[name])``, or the
  ceiling when nothing is stamped, and answers ``LimitExceeded`` (HTTP 429) when it is reached.
  A replayed entry carries its stamp, so it gets the same answer on every replica, every time.
- a txn holds at most ``MAX_TXN_OPS`` compares and as many ops in each branch (etcd's default
  ``--max-txn-ops``); its reads (get and range ops) share one reply budget of
  ``TXN_READ_MAX_KEYS`` keys and ``TXN_READ_MAX_BYTES`` bytes (what does not fit comes back
  with ``"more": true``).
"""
from __future__ import annotations

from typing import Any

from consensus_store.errors import LimitExceeded
from consensus_store.state import commands

MAX_TXN_OPS = commands.MAX_TXN_OPS
TXN_READ_MAX_KEYS = 10_000
TXN_READ_MAX_BYTES = 4 * 1024 * 1024

# What each count limit counts, and its ceiling: what apply allows whatever a node stamps.
CEILINGS: dict[str, int] = {
    "max_sessions": 100_000,
    "max_groups": 100_000,
    "max_members_per_group": 100_000,
    "max_members": 1_000_000,
    "max_names": 1_000_000,
    "max_lock_waiters_per_lock": 100_000,
    "max_lock_waiters": 1_000_000,
    "max_candidates_per_election": 100_000,
}
_COUNTED = {
    "max_sessions": "open sessions", "max_groups": "groups",
    "max_members_per_group": "members of this group", "max_members": "group members in all",
    "max_names": "registered names",
    "max_lock_waiters_per_lock": "holders and waiters of this lock",
    "max_lock_waiters": "lock holders and waiters in all",
    "max_candidates_per_election": "candidates of this election",
}
# The limits each op may hit (what ``stamp`` writes into its command).
LIMITS_OF_OP: dict[str, tuple[str, ...]] = {
    "session_open": ("max_sessions",),
    "group_create": ("max_groups",),
    "group_join": ("max_members_per_group", "max_members"),
    "name_register": ("max_names",),
    "lock_acquire": ("max_lock_waiters_per_lock", "max_lock_waiters"),
    "election_campaign": ("max_candidates_per_election",),
}


def apply_to(command: dict[str, Any]) -> bool:
    """Entries written before these limits replay by the rules they were applied under."""
    return commands.version_of(command) != commands.LEGACY_VERSION


def stamp(op: str, configured: Any) -> dict[str, Any]:
    """The field the proposing node adds to a command of ``op``: its configured limits
    (``configured`` has them as attributes: ``config.Limits``).  Overwrites any a client sent."""
    names = LIMITS_OF_OP.get(op)
    if not names:
        return {}
    return {"limits": {name: int(getattr(configured, name)) for name in names}}


def effective(command: dict[str, Any], name: str) -> int:
    """The limit ``name`` for this command: its stamp, at most the ceiling."""
    ceiling = CEILINGS[name]
    stamped = command.get("limits")
    value = stamped.get(name) if isinstance(stamped, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < ceiling:
        return value
    return ceiling


def enforce(command: dict[str, Any], name: str, current: int) -> None:
    """Raise LimitExceeded if one more would pass the limit ``name`` (``current`` exist)."""
    limit = effective(command, name)
    if current >= limit and apply_to(command):
        raise LimitExceeded(f"limit reached: at most {limit} {_COUNTED[name]} "
                            f"([limits] {name})", limit=name, max=limit)
