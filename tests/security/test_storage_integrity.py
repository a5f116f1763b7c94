"""Issue #10, storage: damaged data files, a torn journal tail, a full disk, on real nodes.

Before: a truncated snapshot gave a node that started empty and acknowledged entries; a changed
journal byte was replayed; a torn tail stopped the node with a bare struct error; a full disk
killed it with SIGBUS.  Now: damage stops start-up with one line naming the file and the offset
(exit 2), ``consensus-store repair`` cuts a torn tail (only), and a full disk is a clear line
and a clean stop (exit 1) with every acknowledged write kept by the cluster.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consensus_store.launcher import LocalCluster, NodeProcess
from consensus_store.node.engine.journal import MAGIC, RECORD, encode_record, scan_journal

from integration.support import (ClusterPool, followers, full_local_state, local_range,
                                 node_client, statuses, wait_converged, wait_until)

COMPACTION = {"log_compaction_min_entries": 40, "log_compaction_min_time_s": 0.2}
REFUSAL_TIMEOUT_S = 30.0
SIGBUS = -7


def _write(cluster: LocalCluster, prefix: str, count: int, acked: dict[str, object],
           value_bytes: int = 0) -> None:
    with cluster.client() as client:
        for i in range(count):
            key, value = f"{prefix}/{i:04d}", {"i": i, "pad": "p" * value_bytes}
            client.put(key, value)
            acked[key] = value


def _stop_with_its_data(cluster: LocalCluster, acked: dict[str, object]) -> str:
    """A follower that holds every write in ``acked``, stopped gracefully."""
    victim = followers(cluster, cluster.wait_for_leader())[0]
    wait_until(lambda: local_range(cluster, victim, "") == acked, 20.0,
               what=f"{victim} holds the writes")
    assert cluster.nodes[victim].stop() == 0
    return victim


def _start_expecting_refusal(node: NodeProcess) -> str:
    """Start the node; it must exit 2.  Returns what it logged in this run."""
    logged_before = node.log_path.stat().st_size if node.log_path.exists() else 0
    node.start()
    assert node.process is not None
    node.process.wait(REFUSAL_TIMEOUT_S)
    code = node.stop()                          # already exited: reaps it, closes its log
    with open(node.log_path, "rb") as log:
        log.seek(logged_before)
        text = log.read().decode(errors="replace")
    assert code == 2, f"exit code {code}, log:\n{text}"
    return text


def _record_offsets(path: Path) -> list[int]:
    scan = scan_journal(str(path))
    offsets, offset = [], len(MAGIC)
    for entry in scan.entries:
        offsets.append(offset)
        offset += len(encode_record(*entry))
    return offsets


def _values(cluster: LocalCluster, node_id: str, keys: list[str], consistency: str) -> dict:
    """Key by key (a range answer is bounded in bytes, and these values are large)."""
    with node_client(cluster, node_id, timeout=5.0) as client:
        found = {key: client.get(key, consistency=consistency) for key in keys}
    return {key: kv.value for key, kv in found.items() if kv is not None}


def _catches_up(cluster: LocalCluster, node_id: str, acked: dict[str, object]) -> None:
    """Restart ``node_id``: it ends with the cluster's state, every acknowledged write in it."""
    cluster.nodes[node_id].start()
    wait_until(lambda: statuses(cluster).get(node_id), 30.0, what=f"{node_id} answers")
    wait_converged(cluster, timeout=60.0)
    assert _values(cluster, node_id, list(acked), "local") == acked
    leader = cluster.wait_for_leader()
    assert _values(cluster, leader, list(acked), "linearizable") == acked
    assert full_local_state(cluster, node_id) == full_local_state(cluster, leader)


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_bad_or_missing_snapshot_stops_start_up_naming_the_file(cluster_pool: ClusterPool,
                                                                  damage: str) -> None:
    """Truncated: the snapshot fails its check.  Missing: the journal, compacted behind it,
    starts past what the node could apply.  Either way the node used to start empty."""
    cluster = cluster_pool.start(3, name=f"{damage}-snapshot", raft_table=COMPACTION)
    acked: dict[str, object] = {}
    _write(cluster, "snap", 200, acked)
    victim = _stop_with_its_data(cluster, acked)
    snapshot = cluster.nodes[victim].data_dir / "raft.snapshot"
    assert snapshot.exists()
    if damage == "truncated":
        with open(snapshot, "r+b") as file:
            file.truncate(snapshot.stat().st_size // 2)
        named = str(snapshot)
    else:
        snapshot.unlink()
        named = str(cluster.nodes[victim].data_dir / "raft.journal")
    logged = _start_expecting_refusal(cluster.nodes[victim])
    lines = [line for line in logged.splitlines() if named in line]
    assert len(lines) == 1 and "offset" in lines[0], logged
    assert "Traceback" not in logged


def test_a_changed_journal_byte_stops_start_up_naming_file_and_offset(
        cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(3, name="bad-record")
    acked: dict[str, object] = {}
    _write(cluster, "record", 60, acked)
    victim = _stop_with_its_data(cluster, acked)
    journal = cluster.nodes[victim].data_dir / "raft.journal"
    offsets = _record_offsets(journal)
    offset = offsets[len(offsets) // 2]
    data = bytearray(journal.read_bytes())
    data[offset + RECORD.size + 5] ^= 0x01      # one byte inside the record's command
    journal.write_bytes(bytes(data))
    logged = _start_expecting_refusal(cluster.nodes[victim])
    lines = [line for line in logged.splitlines() if str(journal) in line]
    assert len(lines) == 1 and f"offset {offset}" in lines[0], logged
    assert "not a torn tail" in lines[0] and "Traceback" not in logged
    repair = subprocess.run([sys.executable, "-m", "consensus_store", "repair", "--data-dir",
                             str(cluster.nodes[victim].data_dir)], capture_output=True,
                            text=True, timeout=60)
    assert repair.returncode == 2 and len(repair.stderr.strip().splitlines()) == 1, repair
    assert journal.read_bytes() == bytes(data)  # left alone


def test_a_torn_tail_is_refused_and_repair_cuts_it(cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.start(3, name="torn-tail")
    acked: dict[str, object] = {}
    _write(cluster, "torn", 60, acked)
    leader = cluster.wait_for_leader()
    victim = followers(cluster, leader)[0]
    wait_until(lambda: local_range(cluster, victim, "") == acked, 20.0,
               what=f"{victim} holds the writes")
    cluster.nodes[victim].kill()                # kill -9, then the tail torn as by a crash
    journal = cluster.nodes[victim].data_dir / "raft.journal"
    end = scan_journal(str(journal)).end
    with open(journal, "r+b") as file:
        file.truncate(end - 3)
    logged = _start_expecting_refusal(cluster.nodes[victim])
    lines = [line for line in logged.splitlines() if str(journal) in line]
    assert len(lines) == 1 and "consensus-store repair --data-dir" in lines[0], logged

    _write(cluster, "torn-while-down", 30, acked)
    repair = subprocess.run([sys.executable, "-m", "consensus_store", "repair", "--data-dir",
                             str(cluster.nodes[victim].data_dir)], capture_output=True,
                            text=True, timeout=60)
    assert repair.returncode == 0, repair
    removed = repair.stdout.strip().splitlines()
    assert len(removed) == 1 and "torn tail" in removed[0] and str(journal) in removed[0]
    _catches_up(cluster, victim, acked)


def test_a_full_disk_stops_the_node_cleanly_and_loses_no_acknowledged_write(
        cluster_pool: ClusterPool, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        cluster = cluster_pool.start(3, name="full-disk")
        acked: dict[str, object] = {}
        _write(cluster, "disk/before", 20, acked)
        victim = _stop_with_its_data(cluster, acked)
        node = cluster.nodes[victim]
        shutil.copytree(node.data_dir, small / "data")
        node.data_dir = small / "data"
        logged_before = node.log_path.stat().st_size
        node.start()
        wait_until(lambda: local_range(cluster, victim, "") == acked, 30.0,
                   what=f"{victim} runs from the small disk")

        with cluster.client() as client:         # ~40 MB of writes for an 8 MB disk
            for i in range(400):
                key, value = f"disk/fill/{i:04d}", "v" * 100_000
                client.put(key, value)
                acked[key] = value
                if not node.alive:
                    break
        assert node.process is not None
        node.process.wait(30.0)
        code = node.stop()                      # already exited: reaps it, closes its log
        with open(node.log_path, "rb") as log:
            log.seek(logged_before)
            logged = log.read().decode(errors="replace")
        assert code != SIGBUS, logged
        assert code == 1, f"exit code {code}, log:\n{logged}"
        lines = [line for line in logged.splitlines() if "No space left on device" in line]
        assert lines and "stopping" in lines[0], logged
        assert "Traceback" not in logged

        _write(cluster, "disk/after", 10, acked)   # the other two go on
        subprocess.run(["mount", "-o", "remount,size=256m", str(small)], check=True)
        _catches_up(cluster, victim, acked)
    finally:
        for node in cluster_pool.clusters[-1].nodes.values() if cluster_pool.clusters else ():
            node.stop()
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
