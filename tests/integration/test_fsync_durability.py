"""durability = "fsync": no write is acknowledged before a majority flushed its entry.

Three embedded nodes in this process share one monotonic clock, so the flush times recorded by
each node's journal and the acknowledgement times seen by the writers can be compared directly.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from consensus_store.config import load_config
from consensus_store.launcher import write_cluster_configs
from consensus_store.node import Node
from consensus_store.testing.polling import wait_until


def test_every_ack_follows_a_majority_flush(tmp_path: Path) -> None:
    paths = write_cluster_configs(tmp_path, size=3)
    configs = [dataclasses.replace(load_config(p), durability="fsync") for p in paths]
    nodes = [Node(c) for c in configs]
    flushes: dict[str, list[tuple[int, float]]] = {c.id: [] for c in configs}
    try:
        for node in nodes:
            node.start()
            journal = node._runner.store.durable_journal
            assert journal is not None, "fsync mode did not install the durable journal"
            journal.on_sync = lambda index, at, log=flushes[node.config.id]: log.append((index, at))
        wait_until(lambda: any(n.status()["role"] == "leader" for n in nodes), 15, what="a leader")

        acks: list[tuple[int, float]] = []
        lock = threading.Lock()

        def writer(node: Node, worker: int) -> None:
            for i in range(40):
                kv = node.put(f"w{worker}", i)
                with lock:
                    acks.append((kv.mod_revision, time.monotonic()))

        threads = [threading.Thread(target=writer, args=(nodes[w % 3], w)) for w in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(acks) == 240

        def flushed_by(node_id: str, index: int, ack_time: float) -> bool:
            return any(synced >= index and at <= ack_time for synced, at in flushes[node_id])

        for index, ack_time in acks:
            durable_on = [n for n in flushes if flushed_by(n, index, ack_time)]
            assert len(durable_on) >= 2, f"entry {index} acknowledged before a majority flushed it"
        flush_count = sum(len(f) for f in flushes.values())
        assert flush_count < 3 * len(acks), "expected batching: fewer flushes than entries"
    finally:
        for node in nodes:
            node.stop()


def test_fsync_is_the_default(tmp_path: Path) -> None:
    assert load_config(write_cluster_configs(tmp_path / "default", size=3)[0]).durability == "fsync"


def test_process_mode_installs_no_fsync(tmp_path: Path) -> None:
    node = Node(load_config(write_cluster_configs(tmp_path, size=3, durability="process")[0]))
    node.start()
    try:
        assert node._runner.store.durable_journal is None
    finally:
        node.stop()
