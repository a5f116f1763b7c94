"""What ``status`` says about read replicas (docs/replicas.md).

A voter lists the replicas connected to it (``replicas``; the leader with each one's acknowledged
index and lag).  A replica gives its own ``lag``: the leader's commit index as last heard minus
what it has applied (its ``"membership": "replica"`` comes from the status report, by config).
"""
from __future__ import annotations

from typing import Any

from consensus_store.node.engine import Engine


def replica_fields(engine: Engine) -> dict[str, Any]:
    """Keys merged into the status answer, after the status report's (on the loop)."""
    if engine.is_replica:
        return {"lag": engine.replica_lag(), "replicas": []}
    return {"replicas": engine.replicas()}
