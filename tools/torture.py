"""Torture a local cluster: the fault suite's workload under random (seeded) faults for as long
as asked, then the suite's safety checks.

    python tools/torture.py --nodes 5 --minutes 10 --seed 7

Prints operations done, faults injected and anomalies found (with the seed to replay); keeps
the history (history.jsonl, checkable with tools/lincheck.py), operations.jsonl, faults.txt,
report.txt and the node logs in the run directory.  Exit code 0: no anomaly; 1: anomalies;
2: the linearizability check could not decide in time (no anomaly otherwise).

Everything runs on 127.0.0.1; every Raft link goes through an in-process fault proxy.  Only
the node processes started here are ever signalled (by PID).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from consensus_store.testing import FAULTS, run_nemesis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to inject faults")
    parser.add_argument("--seed", type=int, default=None, help="schedule and workload seed "
                        "(default: random, printed)")
    parser.add_argument("--workers", type=int, default=None, help="client threads (default nodes+1)")
    parser.add_argument("--keys", type=int, default=3, help="number of keys (default 3)")
    parser.add_argument("--op-timeout", type=float, default=5.0, help="client timeout per op")
    parser.add_argument("--hold", type=float, nargs=2, default=(1.0, 4.0), metavar=("MIN", "MAX"),
                        help="seconds each fault is held (uniform)")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated subset of: {', '.join(FAULTS)}")
    parser.add_argument("--dir", type=Path, default=None, help="run directory (default: a new "
                        "temporary directory, kept)")
    parser.add_argument("--compact-bytes", type=int, default=None,
                        help="log_compaction_max_bytes of every node: a small value makes nodes "
                        "snapshot, rewrite their journals and send snapshots under the faults")
    parser.add_argument("--lincheck-timeout", type=float, default=600.0,
                        help="bound on the linearizability check (seconds)")
    args = parser.parse_args(argv)

    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown or not faults:
        parser.error(f"unknown faults {unknown}; choose from {', '.join(FAULTS)}")
    if args.nodes < 3:
        parser.error("--nodes must be at least 3")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    root = args.dir or Path(tempfile.mkdtemp(prefix=f"torture-n{args.nodes}-s{seed}-"))
    started = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {line}", flush=True)

    log(f"torture: {args.nodes} nodes, {args.minutes:g} min, seed {seed}, run dir {root}")
    report = run_nemesis(root, nodes=args.nodes, seed=seed, duration_s=args.minutes * 60,
                         workers=args.workers, keys=[f"k{i}" for i in range(args.keys)],
                         op_timeout=args.op_timeout, hold_range=tuple(args.hold),
                         faults=faults, lincheck_timeout_s=args.lincheck_timeout,
                         raft_table=({"log_compaction_max_bytes": args.compact_bytes}
                                     if args.compact_bytes else None), log=log)
    print()
    print(report.format())
    replay = (f"python tools/torture.py --nodes {args.nodes} --minutes {args.minutes:g} "
              f"--seed {seed}" + (f" --compact-bytes {args.compact_bytes}" if args.compact_bytes
                                  else ""))
    if report.anomalies:
        print(f"\nRESULT: {len(report.anomalies)} ANOMALIES; replay the schedule with: {replay}")
        return 1
    if report.undecided:
        print(f"\nRESULT: undecided (linearizability check timed out); seed {seed}")
        return 2
    print(f"\nRESULT: no anomaly ({replay})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
