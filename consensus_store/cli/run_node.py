"""``consensus-store node``: one node in the foreground until SIGTERM or SIGINT; SIGHUP
re-reads the tokens file (the node also notices a change within a second by itself)."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from consensus_store.config import load_config

# Writing or syncing the data dir failed (disk full, I/O error); a damaged file at start-up is
# a StorageCorrupt (a ConfigError: exit 2, one line naming the file and the offset).
EXIT_STORAGE_FAILURE = 1
# The cluster removed this node ('member remove', node/removal.py): `up` leaves it down.
EXIT_REMOVED = 3


def run_node(config_path: Path, data_dir: Path | None) -> int:
    config = load_config(config_path)
    if data_dir is not None:
        config = config.with_data_dir(data_dir.resolve())
    logging.basicConfig(level=config.log_level.upper(),
                        format=f"%(asctime)s {config.id} %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    from consensus_store.node import Node
    from consensus_store.node.engine.storage import StorageFailure, set_failure_handler
    failures: list[StorageFailure] = []

    def on_storage_failure(failure: StorageFailure) -> None:
        failures.append(failure)      # already logged (storage.report_failure)
        stop.set()
    set_failure_handler(on_storage_failure)
    from consensus_store.node.removal import set_removed_handler
    removed: list[str] = []

    def on_removed(line: str) -> None:
        removed.append(line)          # already logged (removal.py)
        stop.set()
    set_removed_handler(on_removed)
    node = Node(config)
    signal.signal(signal.SIGHUP, lambda *_: node.reload_tokens())
    node.start()          # a damaged data file: StorageCorrupt, exit 2 (main.py)
    stop.wait()
    if failures:
        # The engine has stopped ticking and closed the journal.  No clean API shutdown: it
        # would wait for requests that can no longer be answered (none was acknowledged).
        return EXIT_STORAGE_FAILURE
    if not removed:
        logging.getLogger("consensus_store.node").info("signal received, stopping")
    node.stop()
    return EXIT_REMOVED if removed else 0
