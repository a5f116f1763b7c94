"""The client API's operations: one table (``OPS``) for the node and the clients.

Each op is declared once, here: its name (what the native protocol calls it), its HTTP method
and path, its kind (a replicated write, a read of the state at a consistency, or an answer of
this node alone), whether a group-commit batch may carry it, the least client role allowed to
call it, the request fields it takes (with their JSON types) and the keys of its answer.  The
HTTP routes (``node/api.py``), the native protocol's dispatch (``node/native.py``), the
service's dispatch (``node/service.py``) and the clients' calls are derived from it.

The module-level names below the table (``ROUTES``, ``WRITE_OPS``, ``REQUIRED_ROLE``,
``OPS_ALLOWED``...) are views of it, for code that wants one column.  Both servers refuse an op
the role table does not list (deny by default).  This module imports only ``config``: the
client and the node both read it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from consensus_store.config import Role


class Kind(enum.Enum):
    WRITE = "write"   # replicated: goes through the log; may carry request identity
    READ = "read"     # of the replicated state, at the body's ``consistency``
    NODE = "node"     # answered by the node that takes it (status, watches, keepalives...)


class Field(enum.Enum):
    """JSON types of request fields (checked by the service, once)."""
    KEY = "key"           # a non-empty string
    STRING = "string"
    INT = "int"           # an integer, never a bool
    NUMBER = "number"     # an int or a float, never a bool
    BOOL = "bool"
    JSON = "json"         # any JSON value
    LIST = "list"


# Fields every op of a kind takes besides its own.
IDENTITY_FIELDS = {"client_id": Field.STRING, "request_id": Field.INT, "done_below": Field.INT}
READ_FIELDS = {"consistency": Field.STRING, "min_index": Field.INT}
TIMEOUT_FIELD = {"timeout": Field.NUMBER}


@dataclass(frozen=True)
class Op:
    name: str
    method: str
    path: str
    kind: Kind
    role: Role                                  # the least role that may call it
    fields: Mapping[str, Field] = field(default_factory=dict)   # the op's own body fields
    answer: tuple[str, ...] = ()                # keys of a 200 answer (besides ``header``)
    batchable: bool = False                     # a group-commit batch may carry it
    at_most_once: bool = False                  # clients stamp client_id/request_id per try

    @property
    def route(self) -> tuple[str, str]:
        return self.method, self.path

    @property
    def has_body(self) -> bool:
        return self.method != "GET"

    def body_fields(self) -> Mapping[str, Field]:
        """Every field a request of this op may carry: its own, then its kind's."""
        fields = dict(self.fields)
        if self.kind is Kind.READ:
            fields.update(READ_FIELDS)
        if self.kind is Kind.WRITE:
            fields.update(IDENTITY_FIELDS)
        if self.kind is not Kind.NODE:     # node ops take no ``timeout`` (watch has ``wait``)
            fields.update(TIMEOUT_FIELD)
        return fields

_R, _RW, _ADMIN = Role.READ, Role.READWRITE, Role.ADMIN
_W, _Q, _N = Kind.WRITE, Kind.READ, Kind.NODE
_S, _K, _I, _J, _L = Field.STRING, Field.KEY, Field.INT, Field.JSON, Field.LIST
_SESSION = {"session": _I, "session_key": _S}
# A message's receiver (one of group+member, group alone, name, election) and its sender's
# numbering (at most once, in order: node/messaging_inbox.py).
_SEEN = {"consistency": _S, "min_index": _I}   # wait to have seen what the client saw
_MESSAGE_TO = {"group": _S, "member": _S, "name": _S, "election": _S, "sender": _S, "seq": _I,
               **_SEEN}


def _kv(name: str, kind: Kind, role: Role, fields: dict[str, Field], answer: tuple[str, ...],
        **flags: bool) -> Op:
    return Op(name, "POST", f"/v1/kv/{name}", kind, role, fields, answer, **flags)


def _post(name: str, path: str, kind: Kind, role: Role, fields: dict[str, Field],
          answer: tuple[str, ...], **flags: bool) -> Op:
    return Op(name, "POST", path, kind, role, fields, answer, **flags)


def _get(name: str, path: str, role: Role, answer: tuple[str, ...]) -> Op:
    return Op(name, "GET", path, _N, role, {}, answer)


OPS_LIST: tuple[Op, ...] = (
    # ---- key-value ---------------------------------------------------------------------------
    _kv("put", _W, _RW, {"key": _K, "value": _J, **_SESSION}, ("kv", "prev_kv"),
        batchable=True, at_most_once=True),
    _kv("delete", _W, _RW, {"key": _K, "prefix": _S}, ("deleted", "prev_kv"),
        batchable=True, at_most_once=True),
    _kv("cas", _W, _RW, {"key": _K, "value": _J, "expect_value": _J,
                         "expect_mod_revision": _I, **_SESSION}, ("succeeded", "kv"),
        batchable=True, at_most_once=True),
    _kv("txn", _W, _RW, {"compare": _L, "success": _L, "failure": _L, "session_key": _S},
        ("succeeded", "results"), at_most_once=True),
    _kv("get", _Q, _R, {"key": _K}, ("kv",)),
    _kv("range", _Q, _R, {"prefix": _S, "limit": _I}, ("kvs", "count", "more", "read_index")),
    # ---- coordination writes (state/coordination.py) -----------------------------------------
    *(_post(name, path, _W, _RW, fields, answer, at_most_once=True)
      for name, path, fields, answer in (
          ("group_create", "/v1/groups/create", {"group": _K}, ("created",)),
          ("group_delete", "/v1/groups/delete", {"group": _K}, ("deleted", "members")),
          ("group_join", "/v1/groups/join",
           {"group": _K, "member": _K, "meta": _J, **_SESSION}, ("member",)),
          ("group_leave", "/v1/groups/leave",
           {"group": _K, "member": _K, "session_key": _S}, ("left",)),
          ("group_update", "/v1/groups/update",
           {"group": _K, "member": _K, "meta": _J, "session_key": _S}, ("member",)),
          ("name_register", "/v1/names/register",
           {"name": _K, "value": _J, **_SESSION}, ("registered", "owner")),
          ("name_unregister", "/v1/names/unregister",
           {"name": _K, "session_key": _S}, ("unregistered",)),
          ("lock_acquire", "/v1/locks/acquire",
           {"name": _K, "owner": _J, **_SESSION}, ("key", "token", "holder")),
          ("lock_release", "/v1/locks/release",
           {"name": _K, "key": _K, "session_key": _S}, ("released", "holder")),
          ("election_campaign", "/v1/elections/campaign",
           {"name": _K, "member": _K, "meta": _J, "priority": _I, **_SESSION}, ("leader",)),
          ("election_resign", "/v1/elections/resign",
           {"name": _K, "member": _K, "session_key": _S}, ("resigned", "leader")),
      )),
    # ---- coordination reads (node/reads.py) ----------------------------------------------------
    *(_post(name, path, _Q, _R, fields, answer) for name, path, fields, answer in (
        ("groups_list", "/v1/groups/list", {}, ("groups",)),
        ("groups_members", "/v1/groups/members", {"group": _K}, ("members",)),
        ("names_list", "/v1/names/list", {}, ("names",)),
        ("names_whereis", "/v1/names/whereis", {"name": _K}, ("owner",)),
        ("locks_list", "/v1/locks/list", {}, ("locks",)),
        ("locks_status", "/v1/locks/status", {"name": _K}, ("name", "holder", "waiters")),
        ("elections_leader", "/v1/elections/leader", {"name": _K},
         ("name", "leader", "candidates")),
    )),
    # ---- sessions, watches, the node itself ---------------------------------------------------
    _post("session_open", "/v1/session/open", _W, _RW,
          {"ttl": Field.NUMBER, "session_key": _S}, ("session", "session_key"),
          at_most_once=True),
    _post("session_keepalive", "/v1/session/keepalive", _N, _RW,
          {"session": _I, "session_key": _S, "forwarded": Field.BOOL, "as_admin": Field.BOOL},
          ("session", "ttl")),
    _post("session_close", "/v1/session/close", _W, _RW, _SESSION, ("ended", "deleted")),
    _post("watch", "/v1/watch", _N, _R,
          {"prefix": _S, "after_revision": _I, "wait": Field.NUMBER, "prev_kv": Field.BOOL},
          ("events", "latest", "floor", "through")),
    _get("status", "/v1/status", _R,
         ("id", "role", "term", "commit_index", "applied_index", "log_length", "ready",
          "leader", "connected_peers", "keys", "revision", "raft_address", "api_address",
          "native_address", "membership", "members", "uptime_s", "requests", "replicas",
          "lag")),
    _post("leader_transfer", "/v1/leader/transfer", _N, _ADMIN,
          {"to": _S, "timeout": Field.NUMBER}, ("leader", "term")),
    _get("sessions", "/v1/sessions", _ADMIN, ("sessions",)),
    # ---- cluster membership (node/engine/membership.py; docs/membership.md) ---------------------
    _post("member_list", "/v1/members", _N, _R, {"from_leader": Field.BOOL},
          ("members", "leader")),
    _post("member_add", "/v1/members/add", _N, _ADMIN,
          {"member": _S, "raft_address": _S, "api_address": _S, "native_address": _S,
           "timeout": Field.NUMBER}, ("member", "members")),
    _post("member_remove", "/v1/members/remove", _N, _ADMIN,
          {"member": _S, "timeout": Field.NUMBER}, ("removed", "members")),
    # ---- messaging outside the log (node/messaging.py) and the leader's view of the nodes -------
    *(_post(name, path, _N, role, fields, answer) for name, path, role, fields, answer in (
        ("message_send", "/v1/messages/send", _RW, _MESSAGE_TO | {"message": _J},
         ("delivered",)),
        ("message_broadcast", "/v1/messages/broadcast", _RW, _MESSAGE_TO | {"message": _J},
         ("delivered", "undelivered")),
        ("message_call", "/v1/messages/call", _RW,
         _MESSAGE_TO | {"request": _J, "wait": Field.NUMBER},
         ("replies", "bad_members", "no_reply")),
        ("message_reply", "/v1/messages/reply", _RW,
         {"call": _S, "value": _J, **_SESSION, **_SEEN}, ("delivered",)),
        ("inbox_poll", "/v1/inbox/poll", _RW,
         {"wait": Field.NUMBER, "max": _I, **_SESSION, **_SEEN}, ("messages",)),
        ("message_forward", "/v1/messages/forward", _ADMIN,
         {"kind": _S, "session": _I, "sessions": _L, "items": _L, "call": _S, "value": _J},
         ("delivered",)),
    )),
    _get("nodes", "/v1/nodes", _R, ("nodes", "leader", "term")),
    _get("digest", "/v1/digest", _ADMIN, ("digest", "parts", "index")),
    # a stream (a backup file, backup_file.py), not a JSON answer: node/snapshot_export.py
    _post("snapshot", "/v1/snapshot", _N, _ADMIN,
          {"consistency": _S, "timeout": Field.NUMBER}, ("backup",)),
)

OPS: Mapping[str, Op] = MappingProxyType({op.name: op for op in OPS_LIST})
if len(OPS) != len(OPS_LIST):
    raise RuntimeError("an op is declared twice in protocol.OPS_LIST")

# HTTP routes answered without a token (load balancers' probes), by route name; not ops.
PUBLIC_OPS = frozenset({"health"})
HEALTH_ROUTE = ("GET", "/health")

# ---- views of the table, one column each -----------------------------------------------------
ROUTES: dict[str, tuple[str, str]] = {op.name: op.route for op in OPS_LIST}
OP_BY_ROUTE: dict[tuple[str, str], Op] = {op.route: op for op in OPS_LIST}
REQUIRED_ROLE: dict[str, Role] = {op.name: op.role for op in OPS_LIST}
# The ops each role may call: one set lookup per request on the servers' hot paths.
OPS_ALLOWED: dict[Role, frozenset[str]] = {
    role: frozenset(op for op, needed in REQUIRED_ROLE.items() if role.allows(needed))
    for role in Role
}
REPLICATED_OPS = frozenset(op.name for op in OPS_LIST if op.kind is Kind.WRITE)
READ_OPS = frozenset(op.name for op in OPS_LIST if op.kind is Kind.READ)
BATCHABLE_OPS = tuple(op.name for op in OPS_LIST if op.batchable)
# Writes a client stamps with (client id, request id) on every try, for at-most-once retries.
WRITE_OPS = frozenset(op.name for op in OPS_LIST if op.at_most_once)

_KV_PREFIX = "/v1/kv/"
KV_WRITE_OPS = tuple(op.name for op in OPS_LIST
                     if op.kind is Kind.WRITE and op.path.startswith(_KV_PREFIX))
KV_READ_OPS = tuple(op.name for op in OPS_LIST
                    if op.kind is Kind.READ and op.path.startswith(_KV_PREFIX))
COORDINATION_WRITES: dict[str, str] = {
    op.name: op.path for op in OPS_LIST
    if op.kind is Kind.WRITE and op.path.startswith(("/v1/groups/", "/v1/names/", "/v1/locks/",
                                                      "/v1/elections/"))}
COORDINATION_READS: dict[str, str] = {
    op.name: op.path for op in OPS_LIST
    if op.kind is Kind.READ and not op.path.startswith(_KV_PREFIX)}
