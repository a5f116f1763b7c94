"""Benchmark consensus_store against the raw pysyncobj engine and (optionally) etcd, in one run.

    python tools/bench.py [--ops ...] [--concurrency 1,16,64] [--vs-etcd] [--embedded] [--idle]
    python tools/bench.py --scale [--scale-keys 1000000] [--vs-etcd]

The method, the caveats and every flag: ``python tools/bench.py --help``; the code is the
``benchmark`` package beside this file (tools/benchmark/).
"""
from __future__ import annotations

from benchmark.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
