"""Fault injection for tests and tools, shared by ``tests/fault`` and ``tools/torture.py``.

Nothing in the product imports this package.  Its modules, each owning one thing:

- ``proxy``: the fault-injecting TCP proxy for Raft links (``FaultProxy``) and its port ranges;
- ``cluster``: proxied clusters (config generation, ``ProxiedCluster``, ``poll_until``) and
  per-node helpers (``node_state``, ``node_digest``, ``raft_status``, ``raft_diagnostics``);
- ``workload``: the recorded client workload (``Workload``, ``OpRecord``, the lincheck history);
- ``checks``: the safety checks (``check_safety`` and each check on its own);
- ``nemesis``: the fault catalogue and schedules, ``Nemesis`` and ``run_nemesis``.
- ``fenced``, ``coordination_workers``, ``coordination_observer``, ``coordination_checks``: the
  lock and election fault checks (fenced resource, worker processes, observer, checks).

The names below are the ones tests and tools import from ``consensus_store.testing``; anything
else is imported from its module.
"""
from __future__ import annotations

from consensus_store.testing.checks import (check_linearizable, check_no_lost_writes,
                                            check_sessions, check_values)
from consensus_store.testing.cluster import (ProxiedCluster, node_state, poll_until,
                                             raft_diagnostics, write_proxied_cluster_configs)
from consensus_store.testing.nemesis import FAULTS, SHORT_SCHEDULES, run_nemesis
from consensus_store.testing.proxy import NODE_PORT_RANGE, PROXY_PORT_RANGE, FaultProxy
from consensus_store.testing.workload import OpRecord, Workload

__all__ = [
    "FAULTS",
    "NODE_PORT_RANGE",
    "PROXY_PORT_RANGE",
    "SHORT_SCHEDULES",
    "FaultProxy",
    "OpRecord",
    "ProxiedCluster",
    "Workload",
    "check_linearizable",
    "check_no_lost_writes",
    "check_sessions",
    "check_values",
    "node_state",
    "poll_until",
    "raft_diagnostics",
    "run_nemesis",
    "write_proxied_cluster_configs",
]
