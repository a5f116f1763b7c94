"""Group commit on real node processes: concurrent single-key writes share log entries, each
keeps its own answer, and two writes to one key never share a revision."""
from __future__ import annotations

import asyncio
from collections import Counter

from consensus_store.client import AsyncClient

from .support import ClusterPool


def test_concurrent_writes_share_entries_but_never_a_revision_per_key(
        module_pool: ClusterPool) -> None:
    cluster = module_pool.start()
    leader = cluster.wait_for_leader(timeout=20)
    native = f"tcp://{cluster.nodes[leader].config.native_address}"

    async def burst() -> tuple[list, list]:
        async with AsyncClient([native], token=cluster.token, timeout=10) as client:
            distinct = await asyncio.gather(*(client.put(f"gc/{i}", i) for i in range(64)))
            same_key = await asyncio.gather(*(client.put("gc/hot", i) for i in range(16)))
        return distinct, same_key

    distinct, same_key = asyncio.run(burst())

    # Every write got its own answer; writes arriving together shared entries (fewer
    # revisions than writes: the batches' log entries).
    assert [kv.value for kv in distinct] == list(range(64))
    revisions = Counter(kv.mod_revision for kv in distinct)
    assert len(revisions) < 64, f"no write shared an entry: {sorted(revisions)}"
    # One key: each write its own entry, so its own mod_revision and version.
    assert len({kv.mod_revision for kv in same_key}) == 16
    assert sorted(kv.version for kv in same_key) == list(range(1, 17))
