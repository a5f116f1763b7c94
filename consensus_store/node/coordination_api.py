"""HTTP routes of the coordination primitives (groups, names, locks, elections).

Writes are replicated ops (``consensus_store.state.coordination``); reads are served from local
memory at the requested consistency, like ``/v1/kv/get``.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from aiohttp import web

from consensus_store.errors import InvalidRequest
from consensus_store.state import coordination as coord

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# route -> replicated op
WRITE_ROUTES = {
    "/v1/groups/create": "group_create", "/v1/groups/delete": "group_delete",
    "/v1/groups/join": "group_join", "/v1/groups/leave": "group_leave",
    "/v1/groups/update": "group_update",
    "/v1/names/register": "name_register", "/v1/names/unregister": "name_unregister",
    "/v1/locks/acquire": "lock_acquire", "/v1/locks/release": "lock_release",
    "/v1/elections/campaign": "election_campaign", "/v1/elections/resign": "election_resign",
}


def _required(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{field}' must be a non-empty string")
    return value


# route -> query over the state machine
READ_ROUTES: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "/v1/groups/list": lambda m, b: {"groups": coord.list_groups(m)},
    "/v1/groups/members": lambda m, b: {"members": coord.group_members(m, _required(b, "group"))},
    "/v1/names/list": lambda m, b: {"names": coord.registered_names(m)},
    "/v1/names/whereis": lambda m, b: {"owner": coord.whereis(m, _required(b, "name"))},
    "/v1/locks/list": lambda m, b: {"locks": coord.all_locks(m)},
    "/v1/locks/status": lambda m, b: coord.lock_state(m, _required(b, "name")),
    "/v1/elections/leader": lambda m, b: coord.election_state(m, _required(b, "name")),
}


def add_routes(app: web.Application, make_write: Callable[[str], Handler],
               make_read: Callable[[Callable[[Any, dict[str, Any]], dict[str, Any]]], Handler]) -> None:
    for path, op in WRITE_ROUTES.items():
        app.router.add_post(path, make_write(op))
    for path, query in READ_ROUTES.items():
        app.router.add_post(path, make_read(query))
