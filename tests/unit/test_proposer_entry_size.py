"""The proposer never hands pysyncobj an entry above ``limits.max_entry_bytes``, and pysyncobj is
configured so that no such entry travels in pieces (its piecewise path is broken: see raft.py)."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from pysyncobj import FAIL_REASON
from pysyncobj import pickle as pysyncobj_pickle

from consensus_store.config import Limits, RaftTiming, load_config
from consensus_store.errors import PayloadTooLarge
from consensus_store.launcher import write_cluster_configs
from consensus_store.node.engine.proposer import Proposer
from consensus_store.node.engine.raft import stored_entry_bound, syncobj_conf

LIMITS = Limits(max_value_bytes=8 * 1024)     # max_entry_bytes = 8 KiB + 128 KiB


@dataclass
class _Config:
    raft: RaftTiming = field(default_factory=RaftTiming)
    limits: Limits = LIMITS


class _Runner:
    """Applies every proposal at once, as a one-node cluster would."""

    def __init__(self) -> None:
        self.config = _Config()
        self.entries: list[bytes] = []

    def leader_address(self) -> str:
        return "leader"

    def raft_applied_index(self) -> int:
        return 0

    def propose(self, data: bytes, callback: Any) -> None:
        self.entries.append(data)
        command = json.loads(data)
        ops = command["ops"] if command["op"] == "batch" else [command]
        results = [{"key": op.get("key")} for op in ops]
        outcome = {"results": results} if command["op"] == "batch" else results[0]
        callback((len(self.entries), outcome), FAIL_REASON.SUCCESS)


def _run(coroutine_factory: Any) -> tuple[_Runner, Any]:
    async def main() -> Any:
        runner = _Runner()
        loop = asyncio.get_running_loop()
        proposer = Proposer(runner, loop)   # type: ignore[arg-type]
        return runner, await coroutine_factory(proposer)
    return asyncio.run(main())


def test_batches_above_the_entry_limit_are_split_and_every_write_answered() -> None:
    value = "x" * 8000
    count = 64                                    # 64 * 8 KB: about four entries' worth

    async def writes(proposer: Proposer) -> list:
        return await asyncio.gather(*(
            proposer.write({"op": "put", "key": f"k{i}", "value": value}, timeout=5.0)
            for i in range(count)))

    runner, answers = _run(writes)
    assert sorted(answer[1]["key"] for answer in answers) == sorted(f"k{i}" for i in range(count))
    assert max(len(entry) for entry in runner.entries) <= LIMITS.max_entry_bytes
    assert len(runner.entries) >= 4, "the writes did not need splitting: test too weak"
    shared = [e for e in runner.entries if len(json.loads(e).get("ops", ())) > 1]
    assert shared, "no entry carried more than one write: group commit is off"


def test_a_single_write_above_the_entry_limit_is_refused_not_proposed() -> None:
    huge = "y" * (LIMITS.max_entry_bytes + 1)

    async def write(proposer: Proposer) -> BaseException | None:
        try:
            await proposer.write({"op": "txn", "success": [
                {"op": "put", "key": "a", "value": huge}]}, timeout=5.0)
        except PayloadTooLarge as exc:
            return exc
        return None

    runner, error = _run(write)
    assert isinstance(error, PayloadTooLarge)
    assert runner.entries == []


def test_no_entry_takes_pysyncobjs_piecewise_path(tmp_path) -> None:
    """pysyncobj sends an entry in pieces when its stored form is >= appendEntriesBatchSizeBytes;
    the stored form is pysyncobj's protocol-2 pickle of the call, which doubles bytes >= 0x80."""
    config = load_config(write_cluster_configs(tmp_path)[0])
    worst = "é".encode() * (config.limits.max_entry_bytes // 2)   # every byte >= 0x80
    stored = b"\x01" + pysyncobj_pickle.dumps((0, (worst,), {}))  # type byte + method call
    assert len(stored) <= stored_entry_bound(config.limits.max_entry_bytes)
    assert syncobj_conf(config).appendEntriesBatchSizeBytes > len(stored)
