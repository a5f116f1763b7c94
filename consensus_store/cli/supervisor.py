"""Keep a local cluster's node processes running, as an Erlang ``one_for_one`` supervisor does.

A node that exits is reported (exit code and log path) and started again after a back-off that
doubles on each quick exit (``RESTART_BACKOFF_S`` up to ``MAX_BACKOFF_S``) and resets once the
node has stayed up ``STABLE_AFTER_S``.  The other nodes are never touched: a majority keeps
serving.  Exit code 2 means the node refused its config or its data (README, "Exit codes"):
starting it again would fail the same way, so it stays down until someone fixes the cause.
Exit code 3 means the cluster removed the node (``member remove``; node/removal.py): started
again it would notice the same and stop again, so it stays down too.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

from consensus_store.cli.run_node import EXIT_REMOVED   # removed from the cluster

RESTART_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 30.0
EXIT_REFUSED = 2            # config or data refused at start-up: a restart cannot help


class SupervisedNode(Protocol):
    """What the supervisor needs of a node process (``launcher.NodeProcess``)."""

    @property
    def id(self) -> str: ...
    @property
    def alive(self) -> bool: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def log_path(self) -> object: ...
    def start(self) -> None: ...


@dataclass
class _Watch:
    backoff_s: float = RESTART_BACKOFF_S
    started_at: float = 0.0
    restart_at: float | None = None     # set while down and due to be started again
    given_up: bool = False              # down for good (exit 2, or restarts disabled)


class Supervisor:
    """Call ``check()`` every fraction of a second; it reports through ``report(line)``."""

    def __init__(self, nodes: list[SupervisedNode], report: Callable[[str], None], *,
                 restart: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self._nodes = nodes
        self._report = report
        self._restart = restart
        self._clock = clock
        now = clock()
        self._watches = {node.id: _Watch(started_at=now) for node in nodes}

    @property
    def down(self) -> list[str]:
        """Ids of the nodes not running now."""
        return [node.id for node in self._nodes if not node.alive]

    def check(self) -> None:
        now = self._clock()
        for node in self._nodes:
            watch = self._watches[node.id]
            if node.alive:
                if now - watch.started_at >= STABLE_AFTER_S:
                    watch.backoff_s = RESTART_BACKOFF_S
                continue
            if watch.given_up:
                continue
            if watch.restart_at is None:
                self._on_exit(node, watch, now)
            elif now >= watch.restart_at:
                watch.restart_at = None
                watch.started_at = now
                node.start()
                self._report(f"{node.id} restarted")

    def _on_exit(self, node: SupervisedNode, watch: _Watch, now: float) -> None:
        code = node.exit_code
        line = f"{node.id} exited with code {code}; log: {node.log_path}"
        if code == EXIT_REFUSED:
            watch.given_up = True
            self._report(f"{line}; not restarted: it refused its config or data "
                         f"(fix that, then restart `up`)")
        elif code == EXIT_REMOVED:
            watch.given_up = True
            self._report(f"{line}; not restarted: it was removed from the cluster "
                         f"('member remove')")
        elif not self._restart:
            watch.given_up = True
            self._report(f"{line}; left down (--no-restart)")
        else:
            watch.restart_at = now + watch.backoff_s
            self._report(f"{line}; restarting in {watch.backoff_s:g}s")
            watch.backoff_s = min(MAX_BACKOFF_S, 2 * watch.backoff_s)
