"""consensus_store: a Raft-replicated coordination store for Python clusters."""
from consensus_store.errors import (RETRYABLE, AuthError, Compacted, CompareFailed, ConfigError,
                                    ConsensusStoreError, Forbidden, InvalidRequest, LimitExceeded,
                                    NotFound, NotLeader, PayloadTooLarge, Timeout, TlsError,
                                    Unavailable)
from consensus_store.models import (Consistency, KeyValue, NodeStatus, RangeResult, Role,
                                    TxnResult, WatchEvent)

__all__ = [
    "RETRYABLE", "AsyncClient", "AuthError", "Client", "CompareFailed", "ConfigError",
    "ConsensusStoreError", "Consistency", "Forbidden", "InvalidRequest", "KeyValue",
    "LimitExceeded", "Node", "NodeStatus", "NotFound", "NotLeader", "PayloadTooLarge",
    "RangeResult", "Role", "Timeout", "TlsError", "TxnResult", "Unavailable",
    "Compacted", "WatchEvent",
]


def __getattr__(name: str) -> object:
    # Imported when asked for: Node pulls in pysyncobj and uvicorn, the clients httpx.
    if name == "Node":
        from consensus_store.node import Node
        return Node
    if name in ("Client", "AsyncClient"):
        from consensus_store import client
        return getattr(client, name)
    raise AttributeError(name)
