"""The coordination reads a node serves (groups, names, locks, elections), by op name.

Writes are replicated ops (``consensus_store.state.coordination``) routed like the key-value
writes; these reads are answered from local memory at the requested consistency.
``WRITE_FIELDS`` names what each write takes from a request body.
"""
from __future__ import annotations

from typing import Any, Callable

from consensus_store.errors import InvalidRequest
from consensus_store.state import coordination as coord

Query = Callable[[Any, dict[str, Any]], dict[str, Any]]


def _required(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{field}' must be a non-empty string")
    return value


QUERIES: dict[str, Query] = {
    "groups_list": lambda m, b: {"groups": coord.list_groups(m)},
    "groups_members": lambda m, b: {"members": coord.group_members(m, _required(b, "group"))},
    "names_list": lambda m, b: {"names": coord.registered_names(m)},
    "names_whereis": lambda m, b: {"owner": coord.whereis(m, _required(b, "name"))},
    "locks_list": lambda m, b: {"locks": coord.all_locks(m)},
    "locks_status": lambda m, b: coord.lock_state(m, _required(b, "name")),
    "elections_leader": lambda m, b: coord.election_state(m, _required(b, "name")),
}

# The fields each coordination write takes from a request body.  Nothing else reaches the log:
# the node stamps the rest itself (request identity, the session key's hash, ``admin``).
WRITE_FIELDS: dict[str, tuple[str, ...]] = {
    "group_create": ("group",), "group_delete": ("group",),
    "group_join": ("group", "session", "member", "meta"),
    "group_leave": ("group", "member"),
    "group_update": ("group", "member", "meta"),
    "name_register": ("name", "value", "session"),
    "name_unregister": ("name",),
    "lock_acquire": ("name", "session", "owner"),
    "lock_release": ("name", "key"),
    "election_campaign": ("name", "member", "meta", "priority", "session"),
    "election_resign": ("name", "member"),
}
