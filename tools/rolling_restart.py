"""The longest write pause during a rolling restart of a local 3-node cluster.

One client writes unique keys one at a time (retrying, with a short backoff) while each node in
turn is stopped with SIGTERM, started again and caught up.  Reports, per step, the longest gap
between two acknowledged writes and whether the stopped node led; at the end checks that every
acknowledged write is on every node.  Nodes listen on 127.0.0.1 only; the load is bounded in
count and time; only the node processes this script started are stopped, by PID
(``LocalCluster``).

    .venv/bin/python tools/rolling_restart.py [--rounds 2] [--max-writes 20000] [--max-seconds 120]

To measure another revision, run it with ``PYTHONPATH=<a git worktree of it>`` (the script
uses only ``LocalCluster``, ``write_cluster_configs`` and ``Client``).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from consensus_store.client import Client
from consensus_store.client.core import RetryPolicy
from consensus_store.errors import ConsensusStoreError
from consensus_store.launcher import LocalCluster, write_cluster_configs
from consensus_store.models import Role

RETRY = RetryPolicy(max_tries=400, backoff_s=0.01, max_backoff_s=0.05)


class Load(threading.Thread):
    """Unique keys, one write at a time; the monotonic time of each acknowledgement."""

    def __init__(self, cluster: LocalCluster, max_writes: int, max_seconds: float) -> None:
        super().__init__(name="rolling-restart-load", daemon=True)
        self.client = cluster.client(retry=RETRY, timeout=10.0)
        self.max_writes, self.max_seconds = max_writes, max_seconds
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.acked: list[tuple[str, float]] = []
        self.failed = 0

    def run(self) -> None:
        started = time.monotonic()
        for i in range(self.max_writes):
            if self.stop_event.is_set() or time.monotonic() - started > self.max_seconds:
                break
            key = f"rr/{i:07d}"
            try:
                self.client.put(key, i, timeout=10.0)
            except ConsensusStoreError:
                self.failed += 1
                continue
            with self.lock:
                self.acked.append((key, time.monotonic()))
        self.client.close()

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time between two acknowledgements (or a bound) within [start, end]."""
        with self.lock:
            times = [start] + [t for _, t in self.acked if start <= t <= end] + [end]
        return max(b - a for a, b in zip(times, times[1:]))


def leader_of(cluster: LocalCluster, client: Client) -> tuple[str | None, int]:
    """(the leader's id, the highest term a live node reports)."""
    leader, term = None, 0
    for node_id, node in cluster.nodes.items():
        if not node.alive:
            continue
        try:
            status = client.status(node.endpoint, timeout=1.0)
        except ConsensusStoreError:
            continue
        term = max(term, status.term)
        if status.role is Role.LEADER:
            leader = node_id
    return leader, term


def wait_caught_up(cluster: LocalCluster, client: Client, node_id: str, timeout: float) -> None:
    """Until ``node_id`` answers and has applied what the others had when it was asked."""
    deadline = time.monotonic() + timeout
    target = max(client.status(n.endpoint, timeout=1.0).applied_index
                 for i, n in cluster.nodes.items() if i != node_id and n.alive)
    while time.monotonic() < deadline:
        try:
            if client.status(cluster.nodes[node_id].endpoint,
                             timeout=1.0).applied_index >= target:
                return
        except ConsensusStoreError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{node_id} did not catch up within {timeout:g}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="restarts of every node")
    parser.add_argument("--max-writes", type=int, default=20000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rolling-restart-") as tmp:
        root = Path(tmp)
        paths = write_cluster_configs(root / "configs", 3)
        cluster = LocalCluster(paths, data_root=root / "data", log_dir=root / "logs")
        cluster.start()
        try:
            return run(cluster, args)
        finally:
            cluster.stop()


def run(cluster: LocalCluster, args: argparse.Namespace) -> int:
    cluster.wait_for_leader(timeout=30)
    load = Load(cluster, args.max_writes, args.max_seconds)
    steps = []
    with cluster.client(timeout=5.0) as client:
        load.start()
        wait_for(lambda: len(load.acked) >= 50, 30, "the first writes")
        for _ in range(args.rounds):
            for node_id, node in cluster.nodes.items():
                if not load.is_alive():
                    break
                leader, term_before = leader_of(cluster, client)
                started = time.monotonic()
                node.stop()                     # SIGTERM, then SIGKILL after 10 s
                stopped = time.monotonic()
                node.start()
                wait_caught_up(cluster, client, node_id, 60)
                before = len(load.acked)
                wait_for(lambda: len(load.acked) >= before + 20, 30, "writes after the restart")
                _, term_after = leader_of(cluster, client)
                steps.append({"node": node_id, "was_leader": node_id == leader,
                              "stop_s": round(stopped - started, 3),
                              "terms": term_after - term_before,
                              "longest_pause_s": round(load.longest_gap(started,
                                                                        time.monotonic()), 3)})
                print(json.dumps(steps[-1]), flush=True)
        load.stop_event.set()
        load.join(30)
        acked = [key for key, _ in load.acked]
        missing = {}
        for node_id, node in cluster.nodes.items():
            with Client([node.endpoint], token=cluster.token) as one:
                present = {kv.key for block in {key[:7] for key in acked}   # 1000 keys each
                           for kv in one.range(block, consistency="local").kvs}
            missing[node_id] = len(set(acked) - present)
    print(json.dumps({
        "writes_acknowledged": len(acked), "writes_failed": load.failed,
        "longest_pause_s": max(s["longest_pause_s"] for s in steps),
        "longest_pause_leader_stop_s": max((s["longest_pause_s"] for s in steps
                                            if s["was_leader"]), default=None),
        "acknowledged_missing_by_node": missing}), flush=True)
    return 0 if not any(missing.values()) else 1


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


if __name__ == "__main__":
    raise SystemExit(main())
