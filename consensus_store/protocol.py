"""The client API's operations and their HTTP routes: one table for the node and the clients.

An op is what the native protocol calls it; ``ROUTES[op]`` is its HTTP method and path.
``WRITE_OPS`` are replicated ops that carry (client id, request id) for at-most-once retries.
``REQUIRED_ROLE[op]`` is the least client role allowed to call ``op``; both servers check it
and refuse an op it does not list (deny by default).
"""
from __future__ import annotations

from consensus_store.config import Role

KV_WRITE_OPS = ("put", "delete", "cas", "txn")
KV_READ_OPS = ("get", "range")

COORDINATION_WRITES = {
    "group_create": "/v1/groups/create", "group_delete": "/v1/groups/delete",
    "group_join": "/v1/groups/join", "group_leave": "/v1/groups/leave",
    "group_update": "/v1/groups/update",
    "name_register": "/v1/names/register", "name_unregister": "/v1/names/unregister",
    "lock_acquire": "/v1/locks/acquire", "lock_release": "/v1/locks/release",
    "election_campaign": "/v1/elections/campaign", "election_resign": "/v1/elections/resign",
}
COORDINATION_READS = {
    "groups_list": "/v1/groups/list", "groups_members": "/v1/groups/members",
    "names_list": "/v1/names/list", "names_whereis": "/v1/names/whereis",
    "locks_list": "/v1/locks/list", "locks_status": "/v1/locks/status",
    "elections_leader": "/v1/elections/leader",
}

ROUTES: dict[str, tuple[str, str]] = {
    **{op: ("POST", f"/v1/kv/{op}") for op in (*KV_WRITE_OPS, *KV_READ_OPS)},
    **{op: ("POST", path) for op, path in COORDINATION_WRITES.items()},
    **{op: ("POST", path) for op, path in COORDINATION_READS.items()},
    "status": ("GET", "/v1/status"), "sessions": ("GET", "/v1/sessions"),
    "digest": ("GET", "/v1/digest"),
    "watch": ("POST", "/v1/watch"), "session_open": ("POST", "/v1/session/open"),
    "session_keepalive": ("POST", "/v1/session/keepalive"),
    "session_close": ("POST", "/v1/session/close"),
}

WRITE_OPS = frozenset({*KV_WRITE_OPS, *COORDINATION_WRITES, "session_open"})

# Who may do what (README, "Security").  Every op of both servers must be listed here; a
# new op left out is refused with 403 until someone decides who may call it.
REQUIRED_ROLE: dict[str, Role] = {
    # reads: state, status and change notifications
    **{op: Role.READ for op in (*KV_READ_OPS, *COORDINATION_READS, "status", "watch")},
    # writes, and the sessions that own ephemeral keys, members, names, locks, candidacies
    **{op: Role.READWRITE for op in (*KV_WRITE_OPS, *COORDINATION_WRITES, "session_open",
                                     "session_keepalive", "session_close")},
    # the whole state's digest, every client's sessions
    "digest": Role.ADMIN, "sessions": Role.ADMIN,
}

# HTTP routes answered without a token (load balancers' probes), by route name.
PUBLIC_OPS = frozenset({"health"})

# The ops each role may call: one set lookup per request on the servers' hot paths.
OPS_ALLOWED: dict[Role, frozenset[str]] = {
    role: frozenset(op for op, needed in REQUIRED_ROLE.items() if role.allows(needed))
    for role in Role
}
