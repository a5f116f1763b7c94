"""``LatencyHistogram``: a duration histogram cheap enough for every request and every fsync.

Observing is one bisect and two additions on plain Python numbers: no lock, no label lookup,
no prometheus-client object on the hot path; ``observe_sorted`` takes a sorted batch with one
bisect per bucket (``node/metrics.py`` batches request durations so).  ``node/metrics.py`` turns the counts into
Prometheus histograms (cumulative ``le`` buckets) when it is scraped.  Call ``observe`` from
one thread (the node's loop); a scrape on that loop sees a consistent histogram.
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import Sequence

# Seconds.  Requests: a local read answers in tens of microseconds, a write in milliseconds
# (one round trip and an fsync), a session read waits up to seconds.
REQUEST_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0)
# fsync of the journal: tens of microseconds on tmpfs, milliseconds on SSDs, more on disks.
FSYNC_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class LatencyHistogram:
    """Counts of durations per bucket (``counts[i]``: at most ``bounds[i]``, not counted in
    an earlier bucket; the last: above every bound), their sum and number."""

    __slots__ = ("bounds", "counts", "total", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += 1
        self.sum += seconds

    def observe_sorted(self, durations: list[float]) -> None:
        """Many durations at once, sorted ascending: one bisect per bucket, not per value."""
        below = 0
        for i, bound in enumerate(self.bounds):
            upto = bisect_right(durations, bound)
            self.counts[i] += upto - below
            below = upto
        self.counts[-1] += len(durations) - below
        self.total += len(durations)
        self.sum += math.fsum(durations)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, count at or below it)`` per bucket, ending with ``(inf, total)``."""
        running = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            running += count
            buckets.append((bound, running))
        return buckets
