"""Sessions (leases): which exist, their TTL, the node they were opened through, their keys.

Whether a session is alive is decided by the leader's clock outside the state machine; the
machine only learns the verdict as a ``session_expire`` command.  A session's id is the Raft
index of the entry that opened it: unique and the same on every replica, so guessable.  What
makes a session its owner's is its secret key: the machine keeps only the key's SHA-256
(``key_hash``, stamped into the command by the node that took the request, never the key), and
an op acting for the session must carry the hash of the same key (``StateMachine.authorize``).  A session
from a journal written before session keys has no hash: only an admin caller may act for it.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

KEY_HASH_CHARS = 64     # SHA-256, hex


def hash_session_key(key: str) -> str:
    """What the replicated state keeps of a session key (the node computes it, apply never)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def is_key_hash(value: Any) -> bool:
    return (isinstance(value, str) and len(value) == KEY_HASH_CHARS
            and all(c in "0123456789abcdef" for c in value))


@dataclass
class Session:
    id: int
    ttl_s: float
    node: str
    keys: set[str] = field(default_factory=set)
    key_hash: str = ""      # "" for sessions opened before session keys (admin-only)

    def opened_with(self, key_hash: Any) -> bool:
        """Whether ``key_hash`` is the hash of this session's key (constant time)."""
        if not self.key_hash or not isinstance(key_hash, str):
            return False
        return hmac.compare_digest(self.key_hash.encode(), key_hash.encode("utf-8", "replace"))

    def to_json(self) -> dict[str, Any]:
        """What anyone may see of a session: never its key hash."""
        return {"id": self.id, "ttl": self.ttl_s, "node": self.node, "keys": len(self.keys)}


class SessionTable:
    def __init__(self) -> None:
        self.sessions: dict[int, Session] = {}

    def __len__(self) -> int:
        return len(self.sessions)

    def get(self, session_id: int) -> Session | None:
        return self.sessions.get(session_id)

    def open(self, session_id: int, ttl_s: float, node: str, key_hash: str = "") -> Session:
        session = self.sessions[session_id] = Session(session_id, ttl_s, node, key_hash=key_hash)
        return session

    def remove(self, session_id: int) -> Session | None:
        return self.sessions.pop(session_id, None)

    def bind(self, key: str, session_id: int | None, previous: int | None) -> None:
        if previous is not None and previous != session_id and previous in self.sessions:
            self.sessions[previous].keys.discard(key)
        if session_id is not None:
            self.sessions[session_id].keys.add(key)

    def plain_state(self) -> list[list[Any]]:
        return [[s.id, s.ttl_s, s.node, sorted(s.keys), s.key_hash]
                for s in self.sessions.values()]

    def restore(self, state: list[list[Any]]) -> None:
        for session_id, ttl_s, node, keys, *rest in state:   # older snapshots: no key hash
            key_hash = rest[0] if rest else ""
            self.sessions[session_id] = Session(session_id, ttl_s, node, set(keys), key_hash)
