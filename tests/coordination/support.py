"""Helpers for coordination tests: worker processes and polling with a deadline."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from consensus_store.launcher import LocalCluster

REPO = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """One tests.coordination.worker process; its JSON-line events are collected."""

    def __init__(self, cluster: LocalCluster, role: str, name: str, ident: str) -> None:
        endpoints = ",".join(cluster.endpoints)
        self.ident = ident
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.coordination.worker", endpoints, cluster.token, role,
             name, ident], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.events.append(json.loads(line))

    def seen(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["event"] == event]

    def wait_for(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        wait_until(lambda: self.seen(event), timeout, f"{self.ident}: {event}")
        return self.seen(event)[-1]

    def kill(self) -> float:
        """kill -9; returns the monotonic time of the kill."""
        self.process.kill()
        self.process.wait()
        return time.monotonic()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
