"""Test tooling shared by ``tests/`` and ``tools/``: fault injection, the linearizability
checker, the poll loop and worker processes.

Nothing in the product imports this package.  Its modules, each owning one thing:

- ``lincheck``: the linearizability checker (WGL search, history formats, ``HistoryRecorder``;
  ``tools/lincheck.py`` is its command line);
- ``polling``: the one poll loop (``poll_until``, ``wait_until``);
- ``workers``: the one worker-process class (``WorkerProcess``) and its ``EventLog``;
- ``proxy``: the fault-injecting TCP proxy for Raft links (``FaultProxy``) and its port ranges;
- ``cluster``: proxied clusters (config generation, ``ProxiedCluster``) and per-node helpers
  (``node_client``, ``local_records``, ``node_state``, ``node_digest``, ``raft_status``,
  ``raft_diagnostics``);
- ``workload``: the recorded client workload (``Workload``, ``OpRecord``, the lincheck history);
- ``checks``: the safety checks (``check_safety`` and each check on its own);
- ``nemesis``: the fault catalogue and schedules, ``Nemesis`` and ``run_nemesis``.
- ``fenced``, ``coordination_workers``, ``coordination_observer``, ``coordination_checks``: the
  lock and election fault checks (fenced resource, worker processes, observer, checks).

The names below are the ones tests and tools import from ``consensus_store.testing``; anything
else is imported from its module.
"""
from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that ``consensus_store.testing.lincheck`` (and tools/lincheck.py)
# load without the client, the launcher and the rest.
_EXPORTS = {
    "check_linearizable": "checks", "check_no_lost_writes": "checks",
    "check_sessions": "checks", "check_values": "checks",
    "ProxiedCluster": "cluster", "node_state": "cluster", "raft_diagnostics": "cluster",
    "write_proxied_cluster_configs": "cluster",
    "poll_until": "polling", "wait_until": "polling",
    "FAULTS": "nemesis", "SHORT_SCHEDULES": "nemesis", "run_nemesis": "nemesis",
    "NODE_PORT_RANGE": "proxy", "PROXY_PORT_RANGE": "proxy", "FaultProxy": "proxy",
    "OpRecord": "workload", "Workload": "workload",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
