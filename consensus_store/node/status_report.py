"""What a node's status says beyond Raft's own view: the configured members, uptime, counters.

``StatusReport.fields()`` is merged into the ``status`` answer (``KVService.status``), so a
client can name a node it cannot reach by its configured id, show every node's addresses and
whether it votes, and turn the request counters of two polls into writes/s and reads/s.

The members are the live membership (engine/membership.py: the last applied member change's
table, else this node's config).  ``membership`` is ``"voter"`` or ``"replica"``.  Counters
count requests this node took, since it started: ``writes``
once a write passed validation, ``reads`` once a read may be served (after its wait).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from consensus_store.config import Address, NodeConfig

VOTER = "voter"
REPLICA = "replica"


def member_entry(member_id: str, raft: Address, api: Address, native: Address | None,
                 membership: str = VOTER) -> dict[str, Any]:
    return {"id": member_id, "raft_address": str(raft), "api_address": str(api),
            "native_address": str(native) if native is not None else None,
            "membership": membership}


def self_entry(config: NodeConfig) -> dict[str, Any]:
    return member_entry(config.id, config.raft_address, config.api_address,
                        config.native_address, REPLICA if config.is_replica else VOTER)


def configured_members(config: NodeConfig) -> list[dict[str, Any]]:
    """This node and its peers, this node first, as the config names them (a read replica's
    peers are the voters)."""
    members = [self_entry(config)]
    members.extend(member_entry(p.id, p.raft_address, p.api_address, p.native_address)
                   for p in config.peers)
    return members


class StatusReport:
    """Counters and the static part of one node's status; called on the node's loop only."""

    __slots__ = ("config", "_clock", "started", "writes", "reads", "_members", "_live")

    def __init__(self, config: NodeConfig, clock: Callable[[], float] = time.monotonic, *,
                 members: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.config = config
        self._clock = clock
        self.started = clock()
        self.writes = 0
        self.reads = 0
        self._members = configured_members(config)
        self._live = members        # the live member table, when the node has one

    def count_write(self) -> None:
        self.writes += 1

    def count_read(self) -> None:
        self.reads += 1

    def fields(self) -> dict[str, Any]:
        """The keys ``status`` adds to Raft's view (copies: callers may keep them)."""
        native = self.config.native_address
        members = [dict(m) for m in (self._live() if self._live else self._members)]
        if self.config.is_replica and all(m["id"] != self.config.id for m in members):
            members.append(self_entry(self.config))    # the voters' table does not name it
        return {
            "native_address": str(native) if native is not None else None,
            "membership": REPLICA if self.config.is_replica else VOTER,
            "members": members,
            "uptime_s": round(self._clock() - self.started, 3),
            "requests": {"writes": self.writes, "reads": self.reads},
        }
