"""Fault suite settings.

By default the short tier runs (a fixed schedule per cluster size, about a minute each).
``CONSENSUS_STORE_FAULT_MINUTES=N`` makes every nemesis test keep injecting random faults for
N more minutes; ``CONSENSUS_STORE_FAULT_SEED=S`` changes the seed of the schedule and of the
workload (default: fixed per test, so CI runs are comparable).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

MINUTES_ENV = "CONSENSUS_STORE_FAULT_MINUTES"
SEED_ENV = "CONSENSUS_STORE_FAULT_SEED"


def fault_minutes() -> float:
    raw = os.environ.get(MINUTES_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        minutes = float(raw)
    except ValueError:
        raise pytest.UsageError(f"{MINUTES_ENV}={raw!r}: give a number of minutes") from None
    if minutes < 0:
        raise pytest.UsageError(f"{MINUTES_ENV}={raw!r}: must be >= 0")
    return minutes


def fault_seed(default: int) -> int:
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"{SEED_ENV}={raw!r}: give an integer") from None


def pytest_configure(config: pytest.Config) -> None:
    fault_minutes()          # a malformed setting is an error, never silently the short tier
    fault_seed(0)


def pytest_report_header(config: pytest.Config) -> str:
    minutes = fault_minutes()
    if minutes:
        return f"fault suite: long tier, {minutes:g} extra minutes of random faults per nemesis test"
    return (f"fault suite: short tier (set {MINUTES_ENV}=N for N minutes of random faults "
            "per nemesis test)")


@pytest.fixture
def fault_root(tmp_path: Path) -> Iterator[Path]:
    """Where a run keeps its configs, node logs, history and report (pytest keeps the last
    three base temp dirs; the path is printed in every failure)."""
    yield tmp_path
