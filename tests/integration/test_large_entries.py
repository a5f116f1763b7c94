"""Large values on real node processes: every entry travels whole, batches stay under the entry
limit, and no follower trips over pysyncobj's piecewise transmission (see node/engine/raft.py)."""
from __future__ import annotations

import asyncio
from collections import defaultdict

from consensus_store.client import AsyncClient
from consensus_store.config import Limits

from .support import ClusterPool, local_range, wait_converged

PIECE = 2 ** 16      # pysyncobj's default appendEntriesBatchSizeBytes


def _node_log_errors(cluster) -> list[str]:
    lines = []
    for node in cluster.nodes.values():
        text = node.log_path.read_text(errors="replace")
        lines += [f"{node.id}: {line}" for line in text.splitlines()
                  if "raft tick failed" in line or "Traceback" in line]
    return lines


def test_values_around_piece_boundaries_replicate_without_errors(cluster_pool: ClusterPool) -> None:
    """pysyncobj marks the last piece by the command's length, not the pickled entry's, so an
    entry a few bytes short of a multiple of 64 KiB made followers fail to unpickle it."""
    cluster = cluster_pool.start()
    sizes = [k * PIECE + delta for k in (2, 3) for delta in range(-200, 40, 3)]
    with cluster.client(timeout=20) as client:
        for size in sizes:
            client.put("big", "x" * size)
    wait_converged(cluster)
    assert _node_log_errors(cluster) == []
    for node_id in cluster.nodes:
        assert len(local_range(cluster, node_id, "big")["big"]) == sizes[-1]


def test_concurrent_large_writes_are_split_into_entries_under_the_limit(
        module_pool: ClusterPool) -> None:
    cluster = module_pool.start()
    leader = cluster.wait_for_leader(timeout=20)
    native = f"tcp://{cluster.nodes[leader].config.native_address}"
    value = "v" * 60_000
    count = 64                                    # ~3.8 MB: more than three 1.1 MB entries

    async def burst() -> list:
        async with AsyncClient([native], token=cluster.token, timeout=30) as client:
            return await asyncio.gather(*(client.put(f"large/{i}", value) for i in range(count)))

    answers = asyncio.run(burst())
    bytes_per_entry: dict[int, int] = defaultdict(int)
    for kv in answers:
        bytes_per_entry[kv.mod_revision] += len(kv.value)
    assert len(answers) == count
    assert max(bytes_per_entry.values()) <= Limits().max_entry_bytes
    assert any(size > len(value) for size in bytes_per_entry.values()), \
        "no entry carried two writes: group commit is off"
    wait_converged(cluster)
    assert _node_log_errors(cluster) == []
