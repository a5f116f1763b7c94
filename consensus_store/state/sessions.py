"""Sessions (leases): which exist, their TTL, the node they were opened through, their keys.

Whether a session is alive is decided by the leader's clock outside the state machine; the
machine only learns the verdict as a ``session_expire`` command.  A session's id is the Raft
index of the entry that opened it: unique and the same on every replica.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Session:
    id: int
    ttl_s: float
    node: str
    keys: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "ttl": self.ttl_s, "node": self.node, "keys": len(self.keys)}


class SessionTable:
    def __init__(self) -> None:
        self.sessions: dict[int, Session] = {}

    def __len__(self) -> int:
        return len(self.sessions)

    def get(self, session_id: int) -> Session | None:
        return self.sessions.get(session_id)

    def open(self, session_id: int, ttl_s: float, node: str) -> Session:
        session = self.sessions[session_id] = Session(session_id, ttl_s, node)
        return session

    def remove(self, session_id: int) -> Session | None:
        return self.sessions.pop(session_id, None)

    def bind(self, key: str, session_id: int | None, previous: int | None) -> None:
        if previous is not None and previous != session_id and previous in self.sessions:
            self.sessions[previous].keys.discard(key)
        if session_id is not None:
            self.sessions[session_id].keys.add(key)

    def plain_state(self) -> list[list[Any]]:
        return [[s.id, s.ttl_s, s.node, sorted(s.keys)] for s in self.sessions.values()]

    def restore(self, state: list[list[Any]]) -> None:
        for session_id, ttl_s, node, keys in state:
            self.sessions[session_id] = Session(session_id, ttl_s, node, set(keys))
