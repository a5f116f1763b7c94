"""Fixtures of the integration tests (helpers live in ``support.py``)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .support import _ACTIVE, ClusterPool


@pytest.fixture
def cluster_pool(tmp_path: Path) -> Iterator[ClusterPool]:
    """Clusters owned by one test (use for tests that kill, pause or restart nodes)."""
    pool = ClusterPool(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def module_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPool]:
    """Clusters shared by the tests of one module (tests that leave every node running)."""
    pool = ClusterPool(tmp_path_factory.mktemp("shared"))
    try:
        yield pool
    finally:
        pool.close()


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        for cluster in _ACTIVE:
            for node in cluster.nodes.values():
                state = "alive" if node.alive else (
                    f"exited {node.process.returncode}" if node.process else "never started")
                report.sections.append((f"node {node.id} ({state}) {node.log_path}",
                                        _log_tail(node.log_path)))
