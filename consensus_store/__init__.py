"""consensus_store: a Raft-replicated coordination store for Python clusters."""
from consensus_store.errors import (RETRYABLE, AuthError, Compacted, CompareFailed, ConfigError,
                                    ConsensusStoreError, Forbidden, InvalidRequest, LimitExceeded,
                                    NotFound, NotLeader, PayloadTooLarge, Timeout, TlsError,
                                    Unavailable)
from consensus_store.models import (Consistency, KeyValue, Leader, Member, NodeStatus,
                                    RangeResult, Role, TxnResult, WatchEvent)

__all__ = [
    "RETRYABLE", "AsyncClient", "AuthError", "Client", "CompareFailed", "ConfigError",
    "ConsensusStoreError", "Consistency", "Forbidden", "InvalidRequest", "KeyValue",
    "LimitExceeded", "Node", "NodeStatus", "NotFound", "NotLeader", "PayloadTooLarge",
    "RangeResult", "Role", "Timeout", "TlsError", "TxnResult", "Unavailable",
    "Compacted", "WatchEvent", "Member", "Leader",
    # results of the recipes, from their modules (loaded when asked for)
    "GroupEvent", "NameDown", "Message", "MultiCall", "Broadcast", "NodeInfo", "NodeEvent",
    "ClusterNode", "LeaderTransfer", "BackupHeader",
]

_RESULTS = {
    "GroupEvent": "consensus_store.api.monitors", "NameDown": "consensus_store.api.monitors",
    "Message": "consensus_store.api.messaging", "MultiCall": "consensus_store.api.messaging",
    "Broadcast": "consensus_store.api.messaging", "NodeInfo": "consensus_store.api.messaging",
    "NodeEvent": "consensus_store.api.messaging", "ClusterNode": "consensus_store.api.membership",
    "LeaderTransfer": "consensus_store.api.cluster", "BackupHeader": "consensus_store.backup_file",
}


def __getattr__(name: str) -> object:
    # Imported when asked for: Node pulls in pysyncobj and uvicorn, the clients httpx.
    if name == "Node":
        from consensus_store.node import Node
        return Node
    if name in ("Client", "AsyncClient"):
        from consensus_store import client
        return getattr(client, name)
    if name in _RESULTS:
        import importlib
        return getattr(importlib.import_module(_RESULTS[name]), name)
    raise AttributeError(name)
