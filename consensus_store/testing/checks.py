"""The safety checks every fault run ends with (``check_safety``) and each check on its own:
linearizability, sessions, values and revisions, no lost write, convergence, node log hazards;
``Anomaly`` is what they report.
"""
from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from typing import Any

from consensus_store.testing.cluster import (ProxiedCluster, node_digest, node_state,
                                             raft_diagnostics)
from consensus_store.testing.lincheck import check_events
from consensus_store.testing.polling import poll_until
from consensus_store.testing.workload import OpRecord, Workload


@dataclass
class Anomaly:
    kind: str          # lost-write, non-linearizable, session, divergence, crash, ...
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


def check_linearizable(events: list[dict], timeout_s: float | None = 120.0
                       ) -> tuple[list[Anomaly], list[str]]:
    """(a) writes, cas and linearizable reads form a linearizable history (per key, WGL)."""
    result = check_events(events, timeout_s)
    if result.linearizable is None:
        return [], [f"linearizability check undecided: {result.explanation}"]
    if not result.linearizable:
        return [Anomaly("non-linearizable", result.explanation)], []
    return [], []


def check_sessions(ops: list[OpRecord]) -> list[Anomaly]:
    """(b) per client: a session read returns no record older than one the client already saw
    (its own acknowledged writes: read-your-writes; earlier answers: monotonic reads).

    Every answer carries the node's applied index, which is >= the revision of any record in
    it, and session reads wait for the highest index the client has seen; so even a record
    seen through a local read sets the floor.  Revisions are unique per write (log indexes).
    """
    anomalies = []
    by_process: dict[int, list[OpRecord]] = collections.defaultdict(list)
    for op in ops:
        by_process[op.process].append(op)
    for process, mine in by_process.items():
        mine.sort(key=lambda o: o.invoke)
        floor: dict[str, tuple[int, OpRecord]] = {}
        for op in mine:
            if op.outcome == "ok" and op.f == "read" and op.level == "session":
                seen = floor.get(op.key)
                if seen is not None and (op.revision or 0) < seen[0]:
                    kind = "read-your-writes" if seen[1].f != "read" else "monotonic-reads"
                    anomalies.append(Anomaly(
                        f"session-{kind}",
                        f"{op.describe()}\n  returned revision {op.revision} after the same "
                        f"client saw revision {seen[0]}:\n  {seen[1].describe()}"))
            revision = None
            if op.outcome == "ok":
                revision = op.revision
            elif op.observed is not None:
                revision = op.observed[1]
            if revision is not None and revision >= floor.get(op.key, (-1, op))[0]:
                floor[op.key] = (revision, op)
    return anomalies


def check_values(ops: list[OpRecord], final: dict[str, dict[str, tuple[Any, int]]]
                 ) -> list[Anomaly]:
    """Every record anyone saw is a write that was attempted, on that key, with one revision;
    a revision names one value; a cas that answered CompareFailed is never seen."""
    anomalies = []
    writes: dict[Any, OpRecord] = {}
    for op in ops:
        if op.f in ("put", "cas"):
            writes[op.value if op.f == "put" else op.value[1]] = op
    revision_of: dict[Any, tuple[int, str]] = {}
    value_at: dict[tuple[str, int], tuple[Any, str]] = {}

    def observe(key: str, value: Any, revision: int | None, source: str) -> None:
        if value is None or revision is None:
            return
        write = writes.get(value)
        if write is None:
            anomalies.append(Anomaly("phantom-value", f"{source}: {value!r} was never written"))
        elif write.key != key:
            anomalies.append(Anomaly("wrong-key", f"{source}: {value!r} was written to "
                                                  f"{write.key!r}, seen on {key!r}"))
        elif write.outcome == "fail":
            anomalies.append(Anomaly("failed-write-visible",
                                     f"{source}: sees {value!r}@{revision}, but the write "
                                     f"failed definitely: {write.describe()}"))
        known = revision_of.setdefault(value, (revision, source))
        if known[0] != revision:
            anomalies.append(Anomaly("inconsistent-revision",
                                     f"{value!r} has revision {revision} in {source} but "
                                     f"{known[0]} in {known[1]}"))
        other = value_at.setdefault((key, revision), (value, source))
        if other[0] != value:
            anomalies.append(Anomaly("inconsistent-revision",
                                     f"{key!r}@{revision} is {value!r} in {source} but "
                                     f"{other[0]!r} in {other[1]}"))

    for op in ops:
        if op.outcome == "ok":
            if op.f == "read":
                observe(op.key, op.result, op.revision, op.describe())
            else:
                observe(op.key, op.value if op.f == "put" else op.value[1], op.revision,
                        op.describe())
        elif op.observed is not None:
            observe(op.key, op.observed[0], op.observed[1], op.describe() + " (current)")
    for node_id, state in final.items():
        for key, (value, revision) in state.items():
            observe(key, value, revision, f"final state of {node_id}")
    return anomalies


def check_no_lost_writes(ops: list[OpRecord], final: dict[str, dict[str, tuple[Any, int]]],
                         examples: int = 5) -> list[Anomaly]:
    """(c) every acknowledged write is in every node's final state or was overwritten by a
    later one: the key's final mod_revision >= the write's revision (equal: same value).
    One anomaly per node that lacks writes, with the count and the first examples."""
    anomalies = []
    for node_id, state in final.items():
        lost = []
        for op in ops:
            if op.outcome != "ok" or op.f == "read":
                continue
            value = op.value if op.f == "put" else op.value[1]
            current = state.get(op.key)
            if current is None:
                lost.append(f"{op.describe()}\n    but {op.key!r} does not exist on {node_id}")
            elif current[1] < op.revision or (current[1] == op.revision and current[0] != value):
                lost.append(f"{op.describe()}\n    but {node_id} has {current[0]!r}@{current[1]}")
        if lost:
            anomalies.append(Anomaly("lost-write", f"{node_id} lacks {len(lost)} acknowledged "
                                                   f"writes, e.g.\n  " + "\n  ".join(lost[:examples])))
    return anomalies


def wait_converged(cluster: ProxiedCluster, timeout: float = 60.0
                   ) -> tuple[dict[str, dict[str, tuple[Any, int]]], list[Anomaly]]:
    """(d) wait until every node reports the same applied index (unchanged while their states
    are read), then compare the full states.  Returns (states, anomalies)."""
    last: dict[str, Any] = {}

    def settled() -> tuple[dict[str, Any], dict[str, Any], int] | None:
        """(states, digests, index) read while every node stayed at one applied index."""
        nonlocal last
        before = last = cluster.statuses(timeout=2.0)
        marks = {s.applied_index for s in before.values()}
        if len(before) != len(cluster.ids) or len(marks) != 1:
            return None
        states = {n: node_state(cluster, n) for n in cluster.ids}   # raises if a node went away
        digests = {n: node_digest(cluster, n) for n in cluster.ids}
        after = cluster.statuses(timeout=2.0)
        if {n: s.applied_index for n, s in after.items()} != \
                {n: s.applied_index for n, s in before.items()}:
            return None
        return states, digests, next(iter(marks))

    found = poll_until(settled, timeout, 0.2)
    if found is not None:
        states, digests, index = found
        reference_id = cluster.ids[0]
        anomalies = []
        for node_id, state in states.items():
            if state != states[reference_id]:
                anomalies.append(Anomaly("divergence", _state_diff(
                    reference_id, states[reference_id], node_id, state, index)))
            elif digests[node_id] != digests[reference_id]:
                # same keys, yet sessions or the at-most-once tables differ
                anomalies.append(Anomaly("divergence", f"state digests differ at "
                                         f"index {index}: {digests}"))
        return states, anomalies
    summary = ", ".join(f"{n}: applied {s.applied_index} commit {s.commit_index} "
                        f"{s.role.value} leader {s.leader}" for n, s in last.items())
    missing = sorted(set(cluster.ids) - set(last))
    try:
        states = {n: node_state(cluster, n) for n in cluster.ids if n in last}
    except Exception:  # noqa: BLE001
        states = {}
    return states, [Anomaly("no-convergence", f"replicas did not reach the same applied index "
                                              f"within {timeout:g}s: {summary}"
                                              f"{'; unreachable ' + str(missing) if missing else ''}"
                                              f"\n raft status:\n{raft_diagnostics(cluster)}")]


def _state_diff(a_id: str, a: dict, b_id: str, b: dict, index: int | None) -> str:
    lines = [f"{a_id} and {b_id} differ at applied index {index}:"]
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            lines.append(f"  {key!r}: {a_id} {a.get(key)!r}, {b_id} {b.get(key)!r}")
    return "\n".join(lines[:20])


HAZARD_PATTERNS = (r"CRITICAL pysyncobj\.syncobj: truncating already-applied log entries",)


def scan_node_logs(cluster: ProxiedCluster) -> tuple[list[str], list[str]]:
    """(hazards, warnings) from the node logs: hazards are pysyncobj's own warnings that safety
    may be at risk (truncating applied entries); warnings are other errors and tracebacks."""
    hazards, warnings = [], []
    for node in cluster.nodes.values():
        try:
            text = node.log_path.read_text(errors="replace")
        except OSError:
            continue
        for match in re.finditer(r"^.*(?:Traceback|ERROR|CRITICAL|Exception).*$", text, re.M):
            line = f"{node.id}: {match.group(0)[:240]}"
            if any(re.search(p, line) for p in HAZARD_PATTERNS):
                hazards.append(line)
            else:
                warnings.append(line)
    return hazards, warnings


@dataclass
class SafetyResult:
    anomalies: list[Anomaly] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    hazards: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    states: dict[str, dict[str, tuple[Any, int]]] = field(default_factory=dict)


def check_safety(cluster: ProxiedCluster, workload: Workload,
                 lincheck_timeout_s: float | None = 300.0,
                 convergence_timeout_s: float = 60.0) -> SafetyResult:
    """The checks every fault run ends with, once the faults are healed and the workload is
    stopped: (d) convergence, (a) linearizability, (b) sessions, (c) no lost write, value /
    revision consistency, unexpected client errors, node log hazards."""
    result = SafetyResult()
    result.states, convergence = wait_converged(cluster, convergence_timeout_s)
    result.anomalies += convergence
    ops = list(workload.ops)
    result.anomalies += [Anomaly("unexpected-error", u) for u in workload.unexpected]
    lin, result.undecided = check_linearizable(workload.history.events(), lincheck_timeout_s)
    result.anomalies += lin
    result.anomalies += check_sessions(ops)
    result.anomalies += check_values(ops, result.states)
    result.anomalies += check_no_lost_writes(ops, result.states)
    result.hazards, result.warnings = scan_node_logs(cluster)
    # Since followers no longer truncate matching entries (node/engine/raft.py), pysyncobj's
    # "truncating already-applied entries" can only mean an applied entry was replaced.
    result.anomalies += [Anomaly("log-hazard", h) for h in result.hazards]
    return result
