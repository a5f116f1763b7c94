"""The one worker-process class of the tests: ``WorkerProcess`` starts ``python -m MODULE ROLE
--endpoints ... --token ... --name ... --id ... --events FILE`` (a separate OS process, so a
test can SIGSTOP it or kill it with -9) and reads the JSON-line events it appends to FILE, one
whole line at a time through ``EventLog`` (flushed per line: they survive kill -9).

Workers using it: ``consensus_store.testing.coordination_workers`` (lock and election fault
checks, the default) and ``tests/coordination/worker.py``.  Processes are only ever signalled
by their own PID.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from consensus_store.testing.polling import wait_until

FAULT_WORKER = "consensus_store.testing.coordination_workers"


class EventLog:
    """A worker's side: appends ``{"t", "event", "id", "pid", ...}`` lines, one writer at a time
    (client callbacks run on other threads)."""

    def __init__(self, path: Path, ident: str) -> None:
        self._file = open(path, "a", buffering=1)
        self.ident = ident
        self._lock = threading.Lock()

    def say(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": time.monotonic(), "event": event, "id": self.ident,
                           "pid": os.getpid(), **fields})
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


class WorkerProcess:
    """One worker process started by a test; its events are read back from its events file."""

    def __init__(self, role: str, ident: str, *, endpoints: Iterable[str], token: str, name: str,
                 events_dir: Path, module: str = FAULT_WORKER, resource: str | None = None,
                 ttl: float | None = None, extra: Iterable[str] = (),
                 log_dir: Path | None = None, cwd: Path | None = None) -> None:
        self.role, self.ident = role, ident
        self.events_path = Path(events_dir) / f"{ident}.jsonl"
        self.events_path.parent.mkdir(parents=True, exist_ok=True)
        self._stderr = open(Path(log_dir or events_dir) / f"{ident}.stderr", "ab")
        command = [sys.executable, "-m", module, role, "--endpoints", ",".join(endpoints),
                   "--token", token, "--name", name, "--id", ident,
                   "--events", str(self.events_path)]
        if resource is not None:
            command += ["--resource", resource]
        if ttl is not None:
            command += ["--ttl", str(ttl)]
        self.process = subprocess.Popen([*command, *extra], cwd=cwd, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self._stderr,
                                        start_new_session=True)
        self.pid = self.process.pid
        self.paused = False
        self.killed_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """Every event written so far (only those named ``event`` if given), in order."""
        try:
            lines = self.events_path.read_text().splitlines()
        except OSError:
            return []
        found = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue                # a line cut by kill -9
            if event is None or record["event"] == event:
                found.append(record)
        return found

    def seen(self, event: str) -> list[dict[str, Any]]:
        return self.events(event)

    def wait_for(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        """The latest ``event``, once there is one (AssertionError after ``timeout``)."""
        return wait_until(lambda: self.events(event), timeout, f"{self.ident}: {event}")[-1]

    def _signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.pid, signum)

    def pause(self) -> float:
        self._signal(signal.SIGSTOP)
        self.paused = True
        return time.monotonic()

    def resume(self) -> float:
        """SIGCONT; returns the monotonic time just *before* it was sent (the process may run,
        and log, before this call returns)."""
        sent_at = time.monotonic()
        self._signal(signal.SIGCONT)
        self.paused = False
        return sent_at

    def kill(self) -> float:
        """kill -9; returns the monotonic time of the (first) kill."""
        self._signal(signal.SIGKILL)
        self.process.wait()
        self.killed_at = self.killed_at or time.monotonic()
        self.paused = False
        return self.killed_at

    def stop(self) -> None:
        if self.alive:
            self._signal(signal.SIGCONT)
            self.kill()
        self._stderr.close()
