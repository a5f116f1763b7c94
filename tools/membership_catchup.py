"""How long a new voter takes to catch up after ``member add`` (docs/membership.md).

pysyncobj counts a new node as a voter from the moment the leader appends the change, before
it has any of the log: until it has caught up, the cluster of N+1 needs a majority that the new
node cannot yet help with.  This measures that window on a throwaway loopback cluster: three
voters holding KEYS keys (txns of 128 puts, VALUE_BYTES each), a fourth node started with an
empty data dir, then ``add_member``; the window runs from the call to the new node's applied
index reaching the leader's last index at the time of the add.

    python tools/membership_catchup.py --keys 10000 100000 [--snapshot]

``--snapshot`` makes the voters compact their logs (log_compaction_min_entries = 100), so the
new node is sent the snapshot rather than the entries.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consensus_store.client import Client  # noqa: E402
from consensus_store.launcher import LocalCluster  # noqa: E402
from consensus_store.testing.membership import configs_with_spares  # noqa: E402

TXN_OPS = 128
VALUE_BYTES = 100
MAX_WAIT_S = 600.0


def load(client: Client, keys: int) -> None:
    value = "v" * VALUE_BYTES
    for start in range(0, keys, TXN_OPS):
        client.txn(success=[{"op": "put", "key": f"load/{i:08d}", "value": value}
                            for i in range(start, min(start + TXN_OPS, keys))], timeout=30.0)


def measure(keys: int, snapshot: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="catchup-") as root:
        table = {"log_compaction_min_entries": 100} if snapshot else None
        voters, spares = configs_with_spares(Path(root) / "configs", 3, 1, raft_table=table)
        cluster = LocalCluster(voters, data_root=Path(root) / "data")
        spare = LocalCluster(spares, data_root=Path(root) / "data")
        try:
            cluster.start()
            cluster.wait_for_leader(timeout=30)
            with cluster.client(timeout=30.0) as client:
                started = time.monotonic()
                load(client, keys)
                load_s = time.monotonic() - started
                spare.start()
                newcomer = Client(spare.endpoints, token=cluster.token, timeout=2.0)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        newcomer.status(timeout=1.0)
                        break
                    except Exception:  # noqa: BLE001 - not up yet
                        time.sleep(0.05)
                added_at = time.monotonic()
                client.add_member(spare.nodes["n4"].config)
                committed_s = time.monotonic() - added_at
                target = max(s.commit_index for s in client.cluster_status(timeout=2.0)
                             if s.error is None and s.id != "n4")
                while time.monotonic() - added_at < MAX_WAIT_S:
                    try:
                        if newcomer.status(timeout=5.0).applied_index >= target:
                            break
                    except Exception:  # noqa: BLE001 - busy applying: ask again
                        pass
                    time.sleep(0.01)
                caught_up_s = time.monotonic() - added_at
                assert newcomer.get(f"load/{keys - 1:08d}", consistency="local") is not None
                newcomer.close()
            return {"keys": keys, "load_s": load_s, "committed_s": committed_s,
                    "caught_up_s": caught_up_s}
        finally:
            spare.stop()
            cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000])
    parser.add_argument("--snapshot", action="store_true",
                        help="voters compact their logs: the new node installs a snapshot")
    args = parser.parse_args()
    print("keys       add committed   caught up (from the add call)   [load]")
    for keys in args.keys:
        if not 0 < keys <= 2_000_000:
            parser.error("--keys: 1 to 2000000")
        result = measure(keys, args.snapshot)
        print(f"{keys:>8}   {result['committed_s']:>8.3f} s   {result['caught_up_s']:>8.3f} s"
              f"                   [{result['load_s']:.1f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
