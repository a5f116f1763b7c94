"""Frozen data shared by the node, the client and the CLI (no behaviour, no I/O)."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple


class Consistency(str, enum.Enum):
    """Read levels; the same words are used in the HTTP API and the CLI."""

    LOCAL = "local"                # this replica's memory: fastest, may be stale
    SESSION = "session"            # read-your-writes and monotonic reads for one client
    LINEARIZABLE = "linearizable"  # confirmed by the leader with a heartbeat round (ReadIndex)


class Role(str, enum.Enum):
    LEADER = "leader"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    DOWN = "down"


class KeyValue(NamedTuple):
    """One key with etcd-style metadata (revisions are Raft indexes).

    A NamedTuple rather than a dataclass: embedded reads build one per call, and a tuple is
    several times cheaper to make.
    """

    key: str
    value: Any
    create_revision: int
    mod_revision: int
    version: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "KeyValue":
        # A retried write's answer may lack a value it no longer keeps (a failed cas's current
        # record): then None.
        return cls(body["key"], body.get("value"), body["create_revision"],
                   body["mod_revision"], body["version"])

    @classmethod
    def maybe(cls, body: dict[str, Any] | None) -> "KeyValue | None":
        return cls.from_json(body) if body else None


@dataclass(frozen=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    count: int              # keys matching the prefix (kvs may be cut by the limit or the
                            # node's reply bounds, [limits] max_range_keys/max_range_bytes)

    @property
    def more(self) -> bool:
        return self.count > len(self.kvs)


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    results: tuple[dict[str, Any], ...]
    revision: int


@dataclass(frozen=True)
class ClusterMember:
    """A configured member of the cluster as a node's status reports it."""

    id: str
    raft_address: str | None = None
    api_address: str | None = None
    native_address: str | None = None
    membership: str = "voter"      # "voter"; a read replica says "replica"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "ClusterMember":
        return cls(id=str(body["id"]), raft_address=body.get("raft_address"),
                   api_address=body.get("api_address"),
                   native_address=body.get("native_address"),
                   membership=body.get("membership") or "voter")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "raft_address": self.raft_address,
                "api_address": self.api_address, "native_address": self.native_address,
                "membership": self.membership}


@dataclass(frozen=True)
class NodeStatus:
    """One node's status, or (role DOWN) why it could not be asked.

    ``id`` of a DOWN node is its configured id when the client knows it (from its config or any
    reachable node's ``members``), else its endpoint.  ``lag`` is the leader's commit index minus
    this node's applied index (None: no leader reachable).  ``membership``, ``members``,
    ``uptime_s`` and the request counters are None/empty for nodes that do not report them.
    """

    id: str
    endpoint: str
    role: Role
    term: int = 0
    commit_index: int = 0
    applied_index: int = 0
    log_length: int = 0
    leader: str | None = None
    connected_peers: tuple[str, ...] = ()
    keys: int = 0
    revision: int = 0
    error: str | None = None     # why the node is DOWN, when it is (the full message)
    reason: str | None = None    # the same in a few words: connection refused, timeout...
    ready: bool | None = None
    raft_address: str | None = None
    api_address: str | None = None
    native_address: str | None = None
    membership: str | None = None          # "voter" or "replica"
    lag: int | None = None
    uptime_s: float | None = None
    writes_total: int | None = None        # writes this node took since it started
    reads_total: int | None = None
    members: tuple[ClusterMember, ...] = ()

    @classmethod
    def from_json(cls, endpoint: str, body: dict[str, Any]) -> "NodeStatus":
        """From a node's ``status`` answer (older nodes' answers lack the newer keys)."""
        requests = body.get("requests") if isinstance(body.get("requests"), dict) else {}
        return cls(id=body["id"], endpoint=endpoint, role=Role(body["role"]), term=body["term"],
                   commit_index=body["commit_index"], applied_index=body["applied_index"],
                   log_length=body["log_length"], leader=body.get("leader"),
                   connected_peers=tuple(body.get("connected_peers", ())), keys=body["keys"],
                   revision=body["revision"], ready=body.get("ready"),
                   raft_address=body.get("raft_address"), api_address=body.get("api_address"),
                   native_address=body.get("native_address"),
                   membership=body.get("membership"), uptime_s=body.get("uptime_s"),
                   writes_total=requests.get("writes"), reads_total=requests.get("reads"),
                   members=tuple(ClusterMember.from_json(m) for m in body.get("members") or ()
                                 if isinstance(m, dict) and "id" in m))

    @property
    def votes(self) -> str:
        """What the node is in elections: "voter", "replica", or "?" when unknown."""
        return self.membership or "?"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "endpoint": self.endpoint, "role": self.role.value,
                "term": self.term, "commit_index": self.commit_index,
                "applied_index": self.applied_index, "log_length": self.log_length,
                "leader": self.leader, "connected_peers": list(self.connected_peers),
                "keys": self.keys, "revision": self.revision, "error": self.error,
                "reason": self.reason, "ready": self.ready,
                "addresses": {"raft": self.raft_address, "api": self.api_address,
                              "native": self.native_address},
                "membership": self.membership, "lag": self.lag, "uptime_s": self.uptime_s,
                "requests": {"writes": self.writes_total, "reads": self.reads_total}}


class ConnectionState(str, enum.Enum):
    """A session as its owner sees it (kazoo's states).

    CONNECTED: keepalives are answered.  SUSPENDED: the last keepalive failed; the cluster may or
    may not still hold the session, so locks and leadership must not be trusted.  LOST: the
    session is gone (expired or closed); everything it owned has been released.
    """

    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


@dataclass(frozen=True)
class Member:
    """A process-group member (pg2's pid): ``node`` is the store node it joined through."""

    id: str
    node: str
    meta: Any
    revision: int        # the Raft index at which it joined
    session: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "Member":
        return cls(body["id"], body["node"], body.get("meta"), body["revision"], body["session"])


@dataclass(frozen=True)
class Leader:
    """The current leader of an election; ``token`` is its leadership's fencing token."""

    member: str
    priority: int
    meta: Any
    node: str
    token: int

    @classmethod
    def maybe(cls, body: dict[str, Any] | None) -> "Leader | None":
        if not body:
            return None
        return cls(body["member"], body["priority"], body.get("meta"), body["node"], body["token"])


@dataclass(frozen=True)
class WatchEvent:
    """One change seen by ``watch``: ``type`` "put" or "delete"; ``revision`` is the Raft index
    of the entry that made it (the keys of one txn or batch share it); ``value`` is None for a
    delete; ``prev_value`` is the value before (None if the watch did not ask, or the key was
    new); ``version`` is the key's version after a put (0 after a delete)."""

    type: str
    key: str
    value: Any
    revision: int
    version: int = 0
    prev_value: Any = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "WatchEvent":
        prev = body.get("prev_kv")
        prev_value = prev.get("value") if isinstance(prev, dict) else None
        if body["type"] == "put":
            kv = body["kv"]
            return cls("put", kv["key"], kv.get("value"), kv["mod_revision"], kv["version"],
                       prev_value)
        return cls("delete", body["key"], None, body["revision"], 0, prev_value)
