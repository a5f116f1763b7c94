"""Nemesis suite: real node processes, concurrent recorded clients, faults on a schedule, and
the same safety checks at the end of every run (``consensus_store.testing.run_nemesis``):

(a) writes, cas and linearizable reads form a linearizable history (tools/lincheck.py);
(b) session reads keep read-your-writes and monotonic reads per client;
(c) no acknowledged write is lost (final mod_revision >= every acknowledged revision);
(d) all replicas converge to identical state; plus no phantom values, one revision per
    value, no crash, and the cluster recovers after every heal.

Short tier by default (fixed schedule: kill -9 of the leader, SIGSTOP of the leader, isolated
leader, majority/minority partitions, a bridge, kill -9 of a minority and of every node).
``CONSENSUS_STORE_FAULT_MINUTES=N`` adds N minutes of seeded random faults to each run.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from consensus_store.testing import SHORT_SCHEDULES, run_nemesis

from .conftest import fault_minutes, fault_seed

MINUTES = fault_minutes()
# pytest.ini's 300 s per test covers the short tier; a long run gets its minutes on top.
TIMEOUT_S = 300 + int(MINUTES * 60 * 1.3)


@pytest.mark.timeout(TIMEOUT_S)
@pytest.mark.parametrize("nodes,default_seed", [(3, 1), (5, 2)], ids=["3-nodes", "5-nodes"])
def test_nemesis(nodes: int, default_seed: int, fault_root: Path) -> None:
    seed = fault_seed(default_seed)
    report = run_nemesis(fault_root / f"nemesis-{nodes}", nodes=nodes, seed=seed,
                         schedule=SHORT_SCHEDULES[nodes],
                         duration_s=MINUTES * 60 if MINUTES else None, log=print)
    print(report.format())
    assert report.faults and len(report.faults) >= len(SHORT_SCHEDULES[nodes])
    assert report.ops.get("total", 0) > 100, "the workload barely ran"
    assert report.ok, (f"{len(report.anomalies)} anomalies (replay with "
                       f"CONSENSUS_STORE_FAULT_SEED={seed}):\n{report.format()}")
