"""consensus_store: a Raft-replicated coordination store for Python clusters."""
from consensus_store.errors import (RETRYABLE, AuthError, CompareFailed, ConfigError,
                                    ConsensusStoreError, Forbidden, InvalidRequest, NotFound,
                                    NotLeader, PayloadTooLarge, Timeout, TlsError, Unavailable)
from consensus_store.models import Consistency, KeyValue, NodeStatus, RangeResult, Role, TxnResult

__all__ = [
    "RETRYABLE", "AuthError", "CompareFailed", "ConfigError", "ConsensusStoreError",
    "Consistency", "Forbidden", "InvalidRequest", "KeyValue", "Node", "NodeStatus", "NotFound",
    "NotLeader", "PayloadTooLarge", "RangeResult", "Role", "Timeout", "TlsError", "TxnResult",
    "Unavailable",
]


def __getattr__(name: str) -> object:
    # Node pulls in pysyncobj and aiohttp: import it only when asked for.
    if name == "Node":
        from consensus_store.node import Node
        return Node
    raise AttributeError(name)
