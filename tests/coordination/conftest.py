"""A 3-node cluster per module and helpers to run coordination worker processes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from consensus_store.launcher import LocalCluster, write_cluster_configs

from .support import WorkerProcess, start_worker


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("coordination")
    local = LocalCluster(write_cluster_configs(root / "configs", 3), data_root=root / "data")
    local.start()
    try:
        local.wait_for_leader(30)
        yield local
    finally:
        local.stop()


@pytest.fixture
def workers(cluster: LocalCluster, tmp_path: Path
            ) -> Iterator[Callable[[str, str, str], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(role: str, name: str, ident: str) -> WorkerProcess:
        worker = start_worker(cluster, role, name, ident, tmp_path / "workers")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
