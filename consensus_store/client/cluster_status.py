"""One view of the whole cluster from every node's status: pure functions, no I/O.

``Client.cluster_status`` asks every endpoint (in parallel) and hands the answers and failures
to ``NodeDirectory.resolve``, which
- names a node it could not reach by its configured id: learned from the node itself when it
  answered before, from any reachable node's ``members``, or from the config the client was
  built from (``Client.from_config``); the endpoint itself when no id is known;
- fills a down node's addresses and membership from what it knows of it;
- computes each node's lag: the leader's commit index minus the node's applied index.

Imports only ``models``, ``errors`` and ``endpoints`` from the package.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Iterable
from urllib.parse import urlsplit

from consensus_store.client.endpoints import scheme_of
from consensus_store.errors import AuthError, ConsensusStoreError, Timeout, TlsError
from consensus_store.models import ClusterMember, NodeStatus, Role

_NATIVE_SCHEMES = ("tcp", "tls")    # http/https name the API address


def down_reason(error: ConsensusStoreError) -> str:
    """Why a node could not be asked, in a few words (the full message stays in ``error``)."""
    message = error.message.lower()
    if isinstance(error, TlsError) or "ssl" in message or "certificate" in message:
        return "TLS error"
    if isinstance(error, Timeout) or "timed out" in message or "timeout" in message:
        return "timeout"
    if "refused" in message or "connecterror" in message:
        return "connection refused"
    if isinstance(error, AuthError):
        return "unauthorized"
    if "reset" in message or "closed" in message or "broken pipe" in message:
        return "connection lost"
    if "name or service" in message or "nodename" in message or "resolve" in message:
        return "unknown host"
    return error.code


def split_address(address: str | None) -> tuple[str, int] | None:
    """``host:port`` (IPv6 as ``[::1]:port``) as a comparable (host, port)."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]").lower(), int(port)


def endpoint_address(endpoint: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    return (host.lower(), port) if host and port else None


def member_address(member: ClusterMember, endpoint: str) -> tuple[str, int] | None:
    """The address of ``member`` that an endpoint of this scheme would name."""
    native = scheme_of(endpoint) in _NATIVE_SCHEMES
    return split_address(member.native_address if native else member.api_address)


class NodeDirectory:
    """Which configured member each endpoint is, as far as this client knows; thread-safe."""

    def __init__(self, members: Iterable[ClusterMember] = ()) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, ClusterMember] = {}
        self._by_endpoint: dict[str, str] = {}
        self.learn_members(members)

    def learn_members(self, members: Iterable[ClusterMember]) -> None:
        with self._lock:
            for member in members:
                self._members[member.id] = member

    def learn_endpoint(self, endpoint: str, node_id: str) -> None:
        with self._lock:
            self._by_endpoint[endpoint] = node_id

    def member_for(self, endpoint: str) -> ClusterMember | None:
        with self._lock:
            node_id = self._by_endpoint.get(endpoint)
            if node_id is not None:
                return self._members.get(node_id) or ClusterMember(id=node_id)
            wanted = endpoint_address(endpoint)
            if wanted is None:
                return None
            for member in self._members.values():
                if member_address(member, endpoint) == wanted:
                    return member
        return None

    @property
    def members(self) -> list[ClusterMember]:
        with self._lock:
            return list(self._members.values())

    def resolve(self, answers: Iterable[tuple[str, NodeStatus | ConsensusStoreError]]
                ) -> list[NodeStatus]:
        """Every endpoint's status, in the order given, down nodes named and lag filled."""
        answers = list(answers)
        for endpoint, answer in answers:
            if isinstance(answer, NodeStatus):
                self.learn_endpoint(endpoint, answer.id)
                self.learn_members(answer.members)
        statuses = [self.completed(answer) if isinstance(answer, NodeStatus)
                    else self.down(endpoint, answer) for endpoint, answer in answers]
        return with_lag(statuses)

    def completed(self, status: NodeStatus) -> NodeStatus:
        """A live node's status with what it did not say (older nodes) taken from its
        configured member: native address, membership."""
        member = self.member_for(status.endpoint)
        if member is None or member.id != status.id:
            return status
        return dataclasses.replace(
            status, raft_address=status.raft_address or member.raft_address,
            api_address=status.api_address or member.api_address,
            native_address=status.native_address or member.native_address,
            membership=status.membership or member.membership)

    def down(self, endpoint: str, error: ConsensusStoreError) -> NodeStatus:
        member = self.member_for(endpoint)
        if member is None:
            return NodeStatus(id=endpoint, endpoint=endpoint, role=Role.DOWN,
                              error=error.message, reason=down_reason(error))
        return NodeStatus(id=member.id, endpoint=endpoint, role=Role.DOWN, error=error.message,
                          reason=down_reason(error), raft_address=member.raft_address,
                          api_address=member.api_address, native_address=member.native_address,
                          membership=member.membership)


def leader_of(statuses: Iterable[NodeStatus]) -> NodeStatus | None:
    """The reachable node that says it leads, at the highest term (a deposed leader that has
    not heard of the new term yet loses to the new one)."""
    leaders = [s for s in statuses if s.role is Role.LEADER]
    return max(leaders, key=lambda s: (s.term, s.commit_index)) if leaders else None


def with_lag(statuses: list[NodeStatus]) -> list[NodeStatus]:
    leader = leader_of(statuses)
    if leader is None:
        return statuses
    return [s if s.role is Role.DOWN else
            dataclasses.replace(s, lag=max(0, leader.commit_index - s.applied_index))
            for s in statuses]
