"""``consensus-store dashboard`` (and ``status --watch``): a live full-screen view of the cluster.

Each refresh polls every node in parallel with a short timeout (``dashboard_poll``), builds the
next ``ClusterSnapshot`` from the previous one (``dashboard_model``, pure) and renders it
(``dashboard_views``, pure).  Failures of nodes are data, not errors: the view stays up.
Keys, read from the terminal in cbreak mode on a thread (only when stdin is a TTY; the terminal
is restored on exit): ``q`` quits, ``p`` pauses polling, ``tab`` moves the focused panel.
``--once`` prints one frame (two polls ``interval`` apart, at most 1 s, so rates are real);
``--json`` prints the same snapshot as JSON (with ``--once`` one document, else one line per
refresh).
"""
from __future__ import annotations

import dataclasses
import json
import os
import queue
import select
import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live

from consensus_store.cli.dashboard_model import ClusterSnapshot, next_snapshot
from consensus_store.cli.dashboard_poll import Poller
from consensus_store.cli.dashboard_views import PANELS, UiState, frame
from consensus_store.errors import ConsensusStoreError, InvalidRequest

DEFAULT_INTERVAL_S = 0.5
ONCE_GAP_S = 1.0     # --once: the most it waits between its two polls
ONCE_WIDTH = 140     # a frame printed to a pipe or file (rich's default there is 80)


def poll_timeout(interval_s: float) -> float:
    """Each node's status must answer within this, so one dead node never stalls a frame."""
    return max(0.2, min(1.0, interval_s * 0.8))


class KeyReader:
    """Single key presses from a TTY on a daemon thread; nothing at all otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.keys: queue.Queue[str] = queue.Queue()
        self._stream = stream
        self._stop = threading.Event()
        self._saved: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "KeyReader":
        try:
            interactive = self._stream.isatty()
        except (AttributeError, ValueError):
            interactive = False
        if interactive:
            import termios
            import tty
            fd = self._stream.fileno()
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
            self._thread = threading.Thread(target=self._read, args=(fd,), daemon=True,
                                            name="dashboard-keys")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._saved is not None:
            import termios
            termios.tcsetattr(self._stream.fileno(), termios.TCSADRAIN, self._saved)

    def _read(self, fd: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                data = os.read(fd, 1)
                if not data:
                    return
                self.keys.put(data.decode(errors="replace"))

    def next_key(self, timeout: float) -> str | None:
        try:
            return self.keys.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None


def press(ui: UiState, key: str) -> UiState | None:
    """The UI state after ``key``; None to quit."""
    if key in ("q", "Q"):
        return None
    if key in ("p", "P", " "):
        return dataclasses.replace(ui, paused=not ui.paused)
    if key == "\t":
        return dataclasses.replace(ui, focus=(ui.focus + 1) % len(PANELS))
    return ui


class Dashboard:
    def __init__(self, client: Any, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.poller = Poller(client, poll_timeout(interval_s))
        self.snapshot: ClusterSnapshot | None = None

    def refresh(self) -> ClusterSnapshot:
        self.snapshot = next_snapshot(self.snapshot, self.poller.poll())
        return self.snapshot

    def close(self) -> None:
        self.poller.close()


def run_dashboard(client: Any, console: Console, *, interval_s: float = DEFAULT_INTERVAL_S,
                  once: bool = False, json_output: bool = False,
                  keys_from: TextIO | None = None) -> int:
    if interval_s <= 0:
        raise InvalidRequest("the interval must be a positive number of seconds")
    dashboard = Dashboard(client, interval_s)
    try:
        if once:
            dashboard.refresh()
            time.sleep(min(interval_s, ONCE_GAP_S))   # rates need a second poll
            snapshot = dashboard.refresh()
            if json_output:
                print(json.dumps(snapshot.to_json()))
            else:
                _wide(console).print(frame(snapshot, UiState(interval_s=interval_s)))
            return 0
        if json_output:
            return _json_lines(dashboard)
        return _live(dashboard, console, keys_from if keys_from is not None else sys.stdin)
    except KeyboardInterrupt:
        return 0
    finally:
        dashboard.close()


def _wide(console: Console) -> Console:
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(width=ONCE_WIDTH, file=console.file, color_system=None)


def _json_lines(dashboard: Dashboard) -> int:
    while True:
        started = time.monotonic()
        print(json.dumps(dashboard.refresh().to_json()), flush=True)
        time.sleep(max(0.0, dashboard.interval_s - (time.monotonic() - started)))


def _live(dashboard: Dashboard, console: Console, keys_from: TextIO) -> int:
    ui = UiState(interval_s=dashboard.interval_s)
    snapshot = dashboard.refresh()
    with KeyReader(keys_from) as keys, Live(frame(snapshot, ui), console=console,
                                            screen=console.is_terminal, auto_refresh=False,
                                            redirect_stderr=False) as live:
        next_poll = time.monotonic() + dashboard.interval_s
        while True:
            key = keys.next_key(next_poll - time.monotonic())
            if key is not None:
                changed = press(ui, key)
                if changed is None:
                    return 0
                ui = changed
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + dashboard.interval_s
                if not ui.paused:
                    try:
                        snapshot = dashboard.refresh()
                        ui = dataclasses.replace(ui, note="")
                    except (ConsensusStoreError, OSError) as exc:   # keep the last frame up
                        ui = dataclasses.replace(ui, note=f"poll failed: {exc}")
            live.update(frame(snapshot, ui), refresh=True)


def watch_statuses_json(client: Any, interval_s: float) -> int:
    """``status --watch --json``: one JSON array of every node's status per line."""
    timeout = poll_timeout(interval_s)
    try:
        while True:
            started = time.monotonic()
            statuses = client.cluster_status(timeout=timeout)
            print(json.dumps([s.to_json() for s in statuses]), flush=True)
            time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0
