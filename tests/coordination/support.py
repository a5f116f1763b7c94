"""Helpers for coordination tests: the package's worker process and poll loop
(``consensus_store.testing.workers`` / ``.polling``), set up for ``tests/coordination/worker.py``."""
from __future__ import annotations

from pathlib import Path

from consensus_store.launcher import LocalCluster
from consensus_store.testing.polling import wait_until
from consensus_store.testing.workers import WorkerProcess

__all__ = ["REPO", "WorkerProcess", "start_worker", "wait_until"]

REPO = Path(__file__).resolve().parents[2]
WORKER = "tests.coordination.worker"


def start_worker(cluster: LocalCluster, role: str, name: str, ident: str,
                 events_dir: Path) -> WorkerProcess:
    """One ``tests.coordination.worker`` process (run from the repo root, where ``tests`` is)."""
    return WorkerProcess(role, ident, endpoints=cluster.endpoints, token=cluster.token,
                         name=name, events_dir=events_dir, module=WORKER, cwd=REPO)
