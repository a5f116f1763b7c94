"""The dashboard's snapshot: one frozen object per poll, built from the previous one.

``next_snapshot(previous, poll)`` is pure: from the nodes' statuses, the cluster's members and
the coordination data of one poll it derives the header (size, quorum, leader, term,
revision), each node's writes/s and reads/s, the rate history the sparklines draw, and the
events since the previous snapshot.  No watch stream exists yet, so events are differences
between successive polls: a change that comes and goes between two polls is not seen.

Rates: from the request counters a node reports in its status (``requests``), when every live
node reports them; otherwise writes/s falls back to the growth of the highest revision (log
entries that changed keys, per second: a group-commit batch counts once) and reads/s is
unknown.  ``rate_source`` says which.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from consensus_store.cli.dashboard_coordination import (Coordination, coordination_events,
                                                        watched_events)
from consensus_store.client.cluster_status import leader_of
from consensus_store.models import ClusterMember, NodeStatus, Role, WatchEvent

HISTORY = 60          # samples kept for the sparklines
EVENTS_KEPT = 100
EVENTS_PER_POLL = 20  # a burst of changes is summarised past this many
COUNTERS, REVISION = "counters", "revision"


@dataclass(frozen=True)
class Poll:
    """What one round of polling returned (the I/O side fills it)."""

    statuses: tuple[NodeStatus, ...]
    members: tuple[ClusterMember, ...]     # as the client knows them (config or statuses)
    coordination: Coordination | None      # None: no node answered the coordination read
    coordination_error: str | None = None
    wall_time: float = 0.0                 # time.time() of the poll
    mono_time: float = 0.0                 # time.monotonic() of the poll
    watched: tuple[WatchEvent, ...] = ()   # changes under _cs/ the watch saw since the last
    watch_dropped: int = 0                 # ... and how many it had to drop
    watch_live: bool = False               # False: coordination events come from polls only


@dataclass(frozen=True)
class Event:
    wall_time: float
    kind: str          # leader, node, member, join, leave, lock, election
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"time": self.wall_time, "kind": self.kind, "text": self.text}


@dataclass(frozen=True)
class NodeRates:
    writes_s: float | None = None
    reads_s: float | None = None


@dataclass(frozen=True)
class ClusterSnapshot:
    wall_time: float
    mono_time: float
    nodes: tuple[NodeStatus, ...]
    rates: dict[str, NodeRates]            # by node id
    voters: int
    replicas: int
    quorum: bool
    quorum_text: str
    leader: str | None
    term: int
    revision: int
    rate_source: str                       # COUNTERS or REVISION
    writes_history: tuple[float, ...]
    reads_history: tuple[float, ...]       # empty when reads/s is unknown
    coordination: Coordination = field(default_factory=Coordination)
    events: tuple[Event, ...] = ()
    watch_live: bool = False

    @property
    def writes_s(self) -> float | None:
        return self.writes_history[-1] if self.writes_history else None

    @property
    def reads_s(self) -> float | None:
        return self.reads_history[-1] if self.reads_history else None

    def to_json(self) -> dict[str, Any]:
        nodes = []
        for node in self.nodes:
            rates = self.rates.get(node.id, NodeRates())
            nodes.append({**node.to_json(), "writes_s": rates.writes_s,
                          "reads_s": rates.reads_s})
        return {
            "time": self.wall_time,
            "cluster": {"voters": self.voters, "replicas": self.replicas,
                        "quorum": self.quorum, "quorum_text": self.quorum_text,
                        "leader": self.leader, "term": self.term, "revision": self.revision},
            "nodes": nodes,
            "rates": {"source": self.rate_source, "writes_s": self.writes_s,
                      "reads_s": self.reads_s, "writes_history": list(self.writes_history),
                      "reads_history": list(self.reads_history)},
            "coordination": self.coordination.to_json(),
            "events": [e.to_json() for e in self.events],
            "events_source": "watch" if self.watch_live else "polls",
        }


def quorum_of(statuses: tuple[NodeStatus, ...], members: tuple[ClusterMember, ...]
              ) -> tuple[int, int, bool, str]:
    """(voters, replicas, quorum ok, why): ok when a reachable leader is connected to a
    majority of the voters (itself included)."""
    voter_ids = {m.id for m in members if m.membership != "replica"}
    replicas = sum(1 for m in members if m.membership == "replica")
    voters = len(voter_ids) if voter_ids else len(statuses)
    majority = voters // 2 + 1
    leader = leader_of(statuses)
    if leader is None:
        return voters, replicas, False, "lost: no leader"
    peers = [p for p in leader.connected_peers if not voter_ids or p in voter_ids]
    reached = 1 + len(peers)
    ok = reached >= majority
    return voters, replicas, ok, f"{'ok' if ok else 'lost'}: {reached}/{voters} voters"


def _node_rates(previous: ClusterSnapshot | None, statuses: tuple[NodeStatus, ...],
                mono_time: float) -> dict[str, NodeRates]:
    if previous is None or mono_time <= previous.mono_time:
        return {}
    seconds = mono_time - previous.mono_time
    before = {s.id: s for s in previous.nodes if s.role is not Role.DOWN}
    rates: dict[str, NodeRates] = {}
    for status in statuses:
        old = before.get(status.id)
        if status.role is Role.DOWN or old is None:
            continue
        restarted = (status.uptime_s is not None and old.uptime_s is not None
                     and status.uptime_s < old.uptime_s)
        if restarted:
            continue
        rates[status.id] = NodeRates(_per_second(old.writes_total, status.writes_total, seconds),
                                     _per_second(old.reads_total, status.reads_total, seconds))
    return rates


def _per_second(before: int | None, after: int | None, seconds: float) -> float | None:
    if before is None or after is None or after < before:
        return None
    return (after - before) / seconds


def _node_events(previous: ClusterSnapshot | None, statuses: tuple[NodeStatus, ...],
                 leader: str | None, term: int) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    if previous is None:
        events.append(("leader", f"watching {len(statuses)} nodes; leader {leader or 'none'}"
                                 f" (term {term})"))
        events.extend(("node", f"node {s.id} down ({s.reason or s.error})")
                      for s in statuses if s.role is Role.DOWN)
        return events
    if leader != previous.leader:
        events.append(("leader", f"leader {previous.leader or 'none'} -> {leader or 'none'}"
                                 f" (term {term})"))
    before = {s.id: s for s in previous.nodes}
    for status in statuses:
        old = before.get(status.id)
        if old is None:
            continue
        if status.role is Role.DOWN and old.role is not Role.DOWN:
            events.append(("node", f"node {status.id} down ({status.reason or status.error})"))
        elif status.role is not Role.DOWN and old.role is Role.DOWN:
            events.append(("node", f"node {status.id} up ({status.role.value})"))
    return events


def _member_events(previous: ClusterSnapshot | None,
                   statuses: tuple[NodeStatus, ...]) -> list[tuple[str, str]]:
    """Cluster members joining or leaving, as the nodes' status lists them."""
    if previous is None:
        return []
    def ids(nodes: tuple[NodeStatus, ...]) -> set[str]:
        return {m.id for s in nodes for m in s.members}
    old, new = ids(previous.nodes), ids(statuses)
    if not old or not new:     # a poll where no node listed members says nothing
        return []
    return ([("member", f"node {i} joined the cluster") for i in sorted(new - old)]
            + [("member", f"node {i} left the cluster") for i in sorted(old - new)])


def next_snapshot(previous: ClusterSnapshot | None, poll: Poll) -> ClusterSnapshot:
    statuses = poll.statuses
    voters, replicas, quorum, quorum_text = quorum_of(statuses, poll.members)
    leader_status = leader_of(statuses)
    live = [s for s in statuses if s.role is not Role.DOWN]
    leader = leader_status.id if leader_status else None
    term = max((s.term for s in live), default=previous.term if previous else 0)
    revision = max((s.revision for s in live), default=previous.revision if previous else 0)
    rates = _node_rates(previous, statuses, poll.mono_time)
    counters = bool(live) and all(s.writes_total is not None for s in live)
    writes_history = previous.writes_history if previous else ()
    reads_history = previous.reads_history if previous else ()
    if previous is not None and poll.mono_time > previous.mono_time:
        if counters:
            writes = sum(r.writes_s or 0.0 for r in rates.values())
            reads = sum(r.reads_s or 0.0 for r in rates.values())
            reads_history = (reads_history + (reads,))[-HISTORY:]
        else:
            grown = max(0, revision - previous.revision)
            writes = grown / (poll.mono_time - previous.mono_time)
            reads_history = ()
        writes_history = (writes_history + (writes,))[-HISTORY:]

    coordination = poll.coordination
    if coordination is None:
        old = previous.coordination if previous else Coordination()
        coordination = dataclasses.replace(old, error=poll.coordination_error or "unavailable")
    changes = _node_events(previous, statuses, leader, term) + _member_events(previous, statuses)
    if poll.watch_live:
        changes += watched_events(poll.watched)
        if poll.watch_dropped:
            changes.append(("more", f"... {poll.watch_dropped} watched changes dropped"))
    if previous is not None and poll.coordination is not None:
        changes += coordination_events(previous.coordination, coordination,
                                       members=not poll.watch_live)
    if len(changes) > EVENTS_PER_POLL:
        extra = len(changes) - EVENTS_PER_POLL + 1
        changes = changes[:EVENTS_PER_POLL - 1] + [("more", f"... and {extra} more changes")]
    events = (previous.events if previous else ()) + tuple(
        Event(poll.wall_time, kind, text) for kind, text in changes)
    return ClusterSnapshot(
        wall_time=poll.wall_time, mono_time=poll.mono_time, nodes=statuses, rates=rates,
        voters=voters, replicas=replicas, quorum=quorum, quorum_text=quorum_text,
        leader=leader, term=term, revision=revision,
        rate_source=COUNTERS if counters else REVISION, writes_history=writes_history,
        reads_history=reads_history, coordination=coordination,
        events=events[-EVENTS_KEPT:], watch_live=poll.watch_live)
