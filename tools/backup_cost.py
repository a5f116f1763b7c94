"""What a backup costs: ``python tools/backup_cost.py --keys 100000``.

Starts a throwaway 3-node cluster on 127.0.0.1 (free ports, a temp dir), fills it with KEYS keys
(txns of 128 puts, values of about 100 bytes), then measures ``Client.snapshot_save`` from a
follower (seconds, file bytes, the follower's RSS before and at its peak during the save, the
longest put latency of a writer running meanwhile) and ``snapshot restore`` of one node (seconds,
CLI).  Prints one JSON object.  Only processes it started are stopped, by PID.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from consensus_store.launcher import LocalCluster, write_cluster_configs

TXN_OPS = 128


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        paths = write_cluster_configs(root / "configs", 3)
        cluster = LocalCluster(paths, data_root=root / "data", log_dir=root / "logs")
        with cluster:
            leader = cluster.wait_for_leader(timeout=30)
            follower = next(n for n in cluster.nodes if n != leader)
            with cluster.client(timeout=60) as client:
                value = "v" * 100
                for start in range(0, args.keys, TXN_OPS):
                    ops = [{"op": "put", "key": f"key/{i:08d}", "value": value}
                           for i in range(start, min(start + TXN_OPS, args.keys))]
                    client.request("txn", {"compare": [], "success": ops, "failure": []}, 60)
            node = cluster.nodes[follower]
            pid = node.process.pid
            rss_before = rss_kib(pid)
            peak = [rss_before]
            latencies: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], rss_kib(pid))
                    time.sleep(0.05)

            def write() -> None:
                with cluster.client(timeout=30) as writer:
                    for i in range(100_000):
                        if done.is_set():
                            return
                        started = time.monotonic()
                        writer.put(f"during/{i % 100}", i)
                        latencies.append(time.monotonic() - started)

            threads = [threading.Thread(target=sample), threading.Thread(target=write)]
            for thread in threads:
                thread.start()
            file = root / "backup.csb"
            with cluster.client(timeout=120) as client:
                client._core.preferred = client.endpoints.index(node.endpoint)
                started = time.monotonic()
                header = client.snapshot_save(file, timeout=120)
                save_s = time.monotonic() - started
            done.set()
            for thread in threads:
                thread.join()
        started = time.monotonic()
        restored = subprocess.run([sys.executable, "-m", "consensus_store", "snapshot",
                                   "restore", str(file), "--config", str(paths[0]),
                                   "--data-dir", str(root / "restored")],
                                  capture_output=True, text=True)
        restore_s = time.monotonic() - started
        print(json.dumps({
            "keys": header.keys, "saved_from": header.node, "save_s": round(save_s, 2),
            "file_bytes": file.stat().st_size,
            "follower_rss_mib_before": round(rss_before / 1024, 1),
            "follower_rss_mib_peak": round(peak[0] / 1024, 1),
            "puts_during_save": len(latencies),
            "max_put_latency_during_save_s": round(max(latencies, default=0), 3),
            "restore_s": round(restore_s, 2), "restore_exit": restored.returncode,
            "snapshot_bytes": (root / "restored" / "raft.snapshot").stat().st_size
            if restored.returncode == 0 else None}))


if __name__ == "__main__":
    main()
