"""Cluster membership calls, shared by ``Client``, ``AsyncClient`` and the embedded ``Node``:
``member_list()``, ``add_member(...)``, ``remove_member(id)``, as ``etcdctl member list/add/
remove``; ``Client.sync_endpoints()`` points a client at the voters listed.

One change at a time, made by the leader (the request goes to another node while the one asked
does not lead).  Adding and removing need the admin role; listing the read role.  Imports
``errors`` and ``requester`` only (see the package docstring); a config file named to
``add_member`` is read with ``consensus_store.config`` on the caller's side.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from consensus_store.api.requester import JsonObject
from consensus_store.errors import InvalidRequest

LIST_OP, ADD_OP, REMOVE_OP = "member_list", "member_add", "member_remove"
ADDRESS_FIELDS = ("raft_address", "api_address", "native_address")


@dataclass(frozen=True)
class ClusterNode:
    """One member of the cluster as the answering node sees it.

    ``membership`` is ``"voter"`` or ``"replica"``; ``voter`` whether Raft counts it now;
    ``connected`` whether the answering node has a connection to it; ``match_index`` how much
    of the log it holds (only when the leader answered, else None)."""

    id: str
    raft_address: str
    api_address: str
    native_address: str | None
    membership: str = "voter"
    voter: bool = True
    connected: bool = False
    match_index: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ClusterNode":
        return cls(str(data["id"]), str(data["raft_address"]), str(data["api_address"]),
                   data.get("native_address"), str(data.get("membership", "voter")),
                   bool(data.get("voter", True)), bool(data.get("connected", False)),
                   data.get("match_index"))


def parse_members(result: JsonObject) -> list[ClusterNode]:
    return [ClusterNode.from_json(m) for m in result["members"]]


def add_body(member: Any) -> JsonObject:
    """The ``member_add`` body from a mapping of fields (id, raft_address, api_address,
    native_address), an object with those attributes (a ``NodeConfig``), or the path of the
    new node's TOML config."""
    if isinstance(member, (str, Path)):
        from consensus_store.config import load_config
        member = load_config(member)
    if isinstance(member, Mapping):
        fields = {k: member.get(k) for k in ("id", *ADDRESS_FIELDS)}
    else:
        fields = {k: getattr(member, k, None) for k in ("id", *ADDRESS_FIELDS)}
    if not isinstance(fields["id"], str) or not fields["id"]:
        raise InvalidRequest("a new member needs an 'id'")
    for key in ADDRESS_FIELDS:
        value = fields[key]
        if value is not None:      # an Address (from a config): as written, IPv6 in brackets
            fields[key] = value.authority if hasattr(value, "authority") else str(value)
    if fields["raft_address"] is None or fields["api_address"] is None:
        raise InvalidRequest("a new member needs 'raft_address' and 'api_address'")
    body = {k: v for k, v in fields.items() if v is not None and k != "id"}
    return {"member": fields["id"], **body}     # "id" is the native frame's own


def list_body(from_leader: bool) -> JsonObject:
    return {"from_leader": True} if from_leader else {}


def remove_body(member_id: str) -> JsonObject:
    if not isinstance(member_id, str) or not member_id:
        raise InvalidRequest("remove_member takes a node id")
    return {"member": member_id}


def endpoints_from(members: list[ClusterNode], like: list[str]) -> list[str]:
    """Endpoint URLs of every member, in the scheme of the client's first endpoint (``like``):
    ``http(s)://`` the API address, ``tcp://``/``tls://`` the native one."""
    scheme = like[0].split("://", 1)[0] if like else "http"
    native = scheme in ("tcp", "tls")
    found = []
    for node in members:
        address = node.native_address if native else node.api_address
        if address:
            found.append(f"{scheme}://{address}")
    return found


def voter_endpoints(members: list[ClusterNode], like: list[str]) -> list[str]:
    """``endpoints_from`` the voters only (read replicas are a client's own choice)."""
    return endpoints_from([m for m in members if m.membership == "voter"], like)


def replica_endpoints(members: list[ClusterNode], like: list[str]) -> list[str]:
    """``endpoints_from`` the read replicas only."""
    return endpoints_from([m for m in members if m.membership == "replica"], like)


class MembershipApi:
    """The blocking calls; a subclass supplies ``request`` (``Requester``)."""

    def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        raise NotImplementedError

    def member_list(self, *, from_leader: bool = False,
                    timeout: float | None = None) -> list[ClusterNode]:
        """Every member of the cluster (the live membership) and the read replicas connected
        to the answering node, as it sees them; ``from_leader``: only the leader answers
        (its view has each member's match index)."""
        return parse_members(self.request(LIST_OP, list_body(from_leader), timeout))

    def add_member(self, member: Any, *, timeout: float | None = None) -> list[ClusterNode]:
        """Add a voter: ``member`` is the new node's config path, its ``NodeConfig``, or a
        mapping of id, raft_address, api_address (native_address optional).  Returns the
        members after the change, once it is committed.  Start the new node (empty data dir,
        its config's [[peers]] the current members) before or after: it waits until the leader
        reaches it, then catches up (docs/membership.md).  InvalidRequest for an id or raft
        address in use, or while another change is pending."""
        return parse_members(self.request(ADD_OP, add_body(member), timeout))

    def remove_member(self, member_id: str, *,
                      timeout: float | None = None) -> list[ClusterNode]:
        """Remove member ``member_id``; returns the members after the change.  InvalidRequest
        for an unknown id, the leader itself (move leadership first: ``transfer_leadership``)
        or while another change is pending."""
        return parse_members(self.request(REMOVE_OP, remove_body(member_id), timeout))


class AsyncMembershipApi:
    """``MembershipApi`` for asyncio (``AsyncRequester``)."""

    async def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject:
        raise NotImplementedError

    async def member_list(self, *, from_leader: bool = False,
                          timeout: float | None = None) -> list[ClusterNode]:
        return parse_members(await self.request(LIST_OP, list_body(from_leader), timeout))

    async def add_member(self, member: Any, *,
                         timeout: float | None = None) -> list[ClusterNode]:
        return parse_members(await self.request(ADD_OP, add_body(member), timeout))

    async def remove_member(self, member_id: str, *,
                            timeout: float | None = None) -> list[ClusterNode]:
        return parse_members(await self.request(REMOVE_OP, remove_body(member_id), timeout))

    member_list.__doc__ = MembershipApi.member_list.__doc__
    add_member.__doc__ = MembershipApi.add_member.__doc__
    remove_member.__doc__ = MembershipApi.remove_member.__doc__


__all__ = ["ADD_OP", "AsyncMembershipApi", "ClusterNode", "LIST_OP", "MembershipApi",
           "REMOVE_OP", "add_body", "endpoints_from", "list_body", "parse_members", "remove_body",
           "voter_endpoints"]
