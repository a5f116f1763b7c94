"""``GET /metrics``: the node's state and request statistics in Prometheus' text format.

Nothing here runs per request except ``RequestStats.observe`` (a dict lookup and a list
append; the durations are sorted into ``LatencyHistogram`` buckets in batches): the front ends
call it with the op, the answer's status and the duration.  Everything else is read when Prometheus scrapes, by a custom prometheus-client
``Collector`` (``NodeCollector``): Raft's status, the journal's size, the snapshot's age, the
state machine's counts, the watch hub's and the messaging's counters, the fsync histogram of
the journal (``DurableJournal.fsync_latency``).  prometheus-client writes the exposition.

Access: any valid client token (the ``read`` role is the least), as for every route but
``/health``; Prometheus sends it with ``authorization: {credentials_file: ...}``
(docs/metrics.md lists every metric and a scrape config).  Runs on the node's loop.
"""
from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily, InfoMetricFamily, Metric)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from consensus_store import fast_json
from consensus_store.errors import ConsensusStoreError
from consensus_store.node.api import Answer, check_token
from consensus_store.node.engine.latency import REQUEST_BUCKETS_S, LatencyHistogram
from consensus_store.protocol import HEALTH_ROUTE, OP_BY_ROUTE
from consensus_store.coordination_keys import RESERVED_PREFIX

if TYPE_CHECKING:
    from consensus_store.node.engine.runner import RaftStatus
    from consensus_store.node.service import KVService

log = logging.getLogger("consensus_store.metrics")

METRICS_PATH = "/metrics"
PREFIX = "consensus_store"
NO_OP = "none"          # a request whose method and path name no op (404, 405)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4.encode()
_COORDINATION_COUNTS = (    # gauge name, help, key prefix (state/coordination.py's layout)
    ("groups", "Process groups.", f"{RESERVED_PREFIX}group/"),
    ("group_members", "Members of all process groups.", f"{RESERVED_PREFIX}member/"),
    ("names", "Registered names.", f"{RESERVED_PREFIX}name/"),
)


class RequestStats:
    """Requests this node answered, by op and HTTP status: a latency histogram each.

    A request costs a list append: durations wait in ``pending`` and are sorted into the
    buckets in batches (at ``FOLD_AT`` per series, and at every scrape)."""

    FOLD_AT = 1024
    __slots__ = ("series", "pending")

    def __init__(self) -> None:
        self.series: dict[tuple[str, int], LatencyHistogram] = {}
        self.pending: dict[tuple[str, int], list[float]] = {}

    def observe(self, op: str, status: int, seconds: float) -> None:
        pending = self.pending.get((op, status))
        if pending is None:
            pending = self.pending[(op, status)] = []
        pending.append(seconds)
        if len(pending) >= self.FOLD_AT:
            self._fold((op, status), pending)

    def observe_route(self, method: str, path: str, status: int, seconds: float) -> None:
        """An HTTP request, by its route's op (a HEAD by its GET's; ``none`` for no route)."""
        op = OP_BY_ROUTE.get((method, path))
        if op is None:
            op = OP_BY_ROUTE.get(("GET", path)) if method == "HEAD" else None
        name = op.name if op is not None else ("health" if path == HEALTH_ROUTE[1] else NO_OP)
        self.observe(name, status, seconds)

    def _fold(self, key: tuple[str, int], pending: list[float]) -> None:
        histogram = self.series.get(key)
        if histogram is None:
            histogram = self.series[key] = LatencyHistogram(REQUEST_BUCKETS_S)
        pending.sort()
        histogram.observe_sorted(pending)
        pending.clear()

    def histograms(self) -> "Series":
        """Every series, with what is pending folded in, by op and status."""
        for key, pending in self.pending.items():
            if pending:
                self._fold(key, pending)
        return sorted(self.series.items())


Series = list[tuple[tuple[str, int], LatencyHistogram]]     # by (op, status)


def _histogram(family: HistogramMetricFamily, labels: list[str],
               histogram: LatencyHistogram) -> None:
    buckets = [(floatToGoString(bound), count) for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.sum)


def _count(value: Any) -> int:
    """A counter another module keeps (an int attribute), or 0 when it has none (yet)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class NodeCollector(Collector):
    """Reads the node when scraped; ``raft`` is Raft's status, taken just before."""

    def __init__(self, service: "KVService", requests: RequestStats) -> None:
        self.service = service
        self.requests = requests
        self.raft: RaftStatus | None = None

    def collect(self) -> Iterator[Metric]:
        service = self.service
        info = InfoMetricFamily(f"{PREFIX}_node", "This node's id.")
        info.add_metric([], {"id": service.config.id})
        yield info
        if self.raft is not None and service.engine.started:
            yield from self._raft(self.raft)
            yield from self._state()
        series = self.requests.histograms()      # once: the counts and histograms agree
        yield from self._counters(series)
        yield from self._histograms(series)

    def _raft(self, raft: "RaftStatus") -> Iterator[Metric]:
        engine = self.service.engine
        for name, help_text, value in (
                ("raft_term", "Current Raft term.", raft.term),
                ("raft_commit_index", "Highest log index known committed.", raft.commit_index),
                ("raft_applied_index", "Highest log index applied to the state machine.",
                 engine.applied_index),
                ("raft_leader", "1 if this node is the Raft leader, else 0.",
                 int(raft.role == "leader")),
                ("raft_connected_peers", "Peers connected on the raft port.",
                 len(raft.connected_peers)),
                ("raft_log_entries", "Entries in the Raft log (since the last snapshot).",
                 raft.log_length)):
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)
        storage = engine.storage_stats()
        yield GaugeMetricFamily(f"{PREFIX}_raft_log_bytes", "Bytes of the journal on disk.",
                                value=storage.journal_bytes)
        if storage.snapshot_at is not None:
            yield GaugeMetricFamily(f"{PREFIX}_snapshot_age_seconds",
                                    "Seconds since the last snapshot was written.",
                                    value=max(0.0, time.time() - storage.snapshot_at))

    def _state(self) -> Iterator[Metric]:
        machine = self.service.engine.machine
        yield GaugeMetricFamily(f"{PREFIX}_revision", "Revision of this replica's state.",
                                value=machine.revision)
        yield GaugeMetricFamily(f"{PREFIX}_keys", "Keys in the state (coordination records too).",
                                value=len(machine))
        yield GaugeMetricFamily(f"{PREFIX}_sessions", "Open sessions.",
                                value=len(machine.sessions))
        for name, help_text, prefix in _COORDINATION_COUNTS:
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_text,
                                    value=machine.keyspace.count_prefix(prefix))

    def _counters(self, series: "Series") -> Iterator[Metric]:
        service = self.service
        yield GaugeMetricFamily(f"{PREFIX}_watchers", "Watch requests waiting on this node.",
                                value=_count(getattr(service.watches, "watcher_count", 0)))
        messaging = getattr(service, "messaging", None)
        for name, help_text in (("sent", "Group messages this node delivered or forwarded."),
                                ("dropped", "Group messages this node dropped (full inbox, "
                                            "no receiver).")):
            yield CounterMetricFamily(f"{PREFIX}_messages_{name}", help_text,
                                      value=_count(getattr(messaging, name, 0)))
        requests = CounterMetricFamily(f"{PREFIX}_requests", "Client requests answered, by op "
                                       "and HTTP status (both ports).", labels=["op", "status"])
        for (op, status), histogram in series:
            requests.add_metric([op, str(status)], histogram.total)
        yield requests

    def _histograms(self, series: "Series") -> Iterator[Metric]:
        latency = HistogramMetricFamily(f"{PREFIX}_request_duration_seconds",
                                        "Time from a request's arrival to its answer, by op and "
                                        "HTTP status.", labels=["op", "status"])
        for (op, status), histogram in series:
            _histogram(latency, [op, str(status)], histogram)
        yield latency
        journal = self.service.engine.durable_journal
        fsync = getattr(journal, "fsync_latency", None)
        if fsync is not None:        # durability = "fsync" only
            family = HistogramMetricFamily(f"{PREFIX}_fsync_duration_seconds",
                                           "Duration of each fsync of the Raft journal.")
            _histogram(family, [], fsync)
            yield family


class NodeMetrics:
    """One node's registry: its ``NodeCollector`` and the process' CPU, memory and files."""

    def __init__(self, service: "KVService") -> None:
        self.requests = RequestStats()
        self.collector = NodeCollector(service, self.requests)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(namespace=PREFIX, registry=self.registry)
        self._service = service

    async def scrape(self) -> bytes:
        engine = self._service.engine
        self.collector.raft = await engine.status() if engine.started else None
        return generate_latest(self.registry)


_METRICS: "weakref.WeakKeyDictionary[KVService, NodeMetrics]" = weakref.WeakKeyDictionary()


def metrics_for(service: "KVService") -> NodeMetrics:
    """The node's metrics (made on first use; the front ends keep ``requests`` at hand)."""
    metrics = _METRICS.get(service)
    if metrics is None:
        metrics = _METRICS[service] = NodeMetrics(service)
    return metrics


async def metrics_answer(service: "KVService", method: str,
                         authorization: str | bytes | None) -> Answer:
    """``GET /metrics``: the exposition for any valid client token; JSON errors otherwise."""
    try:
        check_token(service, authorization)
        if method not in ("GET", "HEAD"):
            body = {"error": "method_not_allowed", "message": f"{method} not allowed here; "
                    "use GET, HEAD", "header": service.header()}
            return Answer(405, fast_json.encode(body), allow="GET,HEAD")
        return Answer(200, await metrics_for(service).scrape(), content_type=CONTENT_TYPE)
    except ConsensusStoreError as exc:
        return Answer(exc.http_status, fast_json.encode({**exc.to_json(),
                                                         "header": service.header()}))
    except Exception as exc:  # noqa: BLE001 - a bug must not become a traceback for the client
        log.exception("metrics scrape failed")
        return Answer(500, fast_json.encode({"error": "internal", "message": type(exc).__name__,
                                             "header": service.header()}))
