"""The request and fsync histograms behind /metrics (node/engine/latency.py,
node/metrics.py): buckets are Prometheus' ``le`` (a value equal to a bound counts in that
bucket), and a batch sorted in gives the same histogram as one value at a time."""
from __future__ import annotations

import random
from pathlib import Path

from consensus_store.node.engine.durability import DurableJournal
from consensus_store.node.engine.latency import REQUEST_BUCKETS_S, LatencyHistogram
from consensus_store.node.metrics import RequestStats


def test_bounds_are_inclusive_and_the_last_bucket_is_inf() -> None:
    histogram = LatencyHistogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 0.01, 5.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [(0.001, 2), (0.01, 4), (float("inf"), 5)]
    assert histogram.total == 5 and abs(histogram.sum - 5.0135) < 1e-12


def test_a_sorted_batch_equals_single_observations() -> None:
    rng = random.Random(7)
    values = [rng.choice(REQUEST_BUCKETS_S) if rng.random() < 0.2 else rng.expovariate(200)
              for _ in range(5000)]
    one, batch = LatencyHistogram(REQUEST_BUCKETS_S), LatencyHistogram(REQUEST_BUCKETS_S)
    for seconds in values:
        one.observe(seconds)
    batch.observe_sorted(sorted(values[:1234]))
    batch.observe_sorted(sorted(values[1234:]))
    assert one.counts == batch.counts and one.total == batch.total == 5000
    assert abs(one.sum - batch.sum) < 1e-9


def test_request_stats_fold_pending_durations_by_op_and_status() -> None:
    stats = RequestStats()
    for i in range(RequestStats.FOLD_AT + 10):
        stats.observe("put", 200, 0.002)
    stats.observe_route("POST", "/v1/kv/get", 404, 0.0001)
    stats.observe_route("HEAD", "/v1/status", 200, 0.0001)
    stats.observe_route("GET", "/no/such/route", 404, 0.0001)
    assert len(stats.pending[("put", 200)]) == 10          # the first batch was folded
    series = dict(stats.histograms())
    assert series[("put", 200)].total == RequestStats.FOLD_AT + 10
    assert series[("get", 404)].total == series[("status", 200)].total == 1
    assert series[("none", 404)].total == 1
    assert not any(stats.pending.values())


def test_the_journal_times_each_fsync(tmp_path: Path) -> None:
    journal = DurableJournal(str(tmp_path / "raft.journal"), str(tmp_path / "raft.meta"))
    try:
        opened = journal.fsync_latency.total          # opening syncs what it loaded
        journal.add(b"cmd", 1, 1)
        journal.sync_if_dirty()
        journal.sync_if_dirty()                       # nothing new: no fsync, nothing timed
        assert journal.fsync_latency.total == opened + 1 == journal.fsync_count
        assert journal.fsync_latency.sum > 0
    finally:
        journal._destroy()
