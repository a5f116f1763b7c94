"""The dashboard as pure functions: snapshots from polls (rates, quorum, events), coordination
from a range answer, frames rendered to a fixed-width console."""
from __future__ import annotations

import dataclasses
import io
import json

from rich.console import Console

from consensus_store.cli import dashboard_views as dv
from consensus_store.cli.dashboard import KeyReader, press
from consensus_store.cli.dashboard_coordination import (NEEDS_ADMIN, Coordination,
                                                        parse_coordination)
from consensus_store.cli.dashboard_model import COUNTERS, REVISION, Poll, next_snapshot
from consensus_store.models import ClusterMember, NodeStatus, Role

MEMBERS = tuple(ClusterMember(id=f"n{i}") for i in (1, 2, 3))


def render(renderable: object, width: int = 140) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def node(node_id: str, role: Role = Role.FOLLOWER, *, term: int = 2, commit: int = 10,
         applied: int = 10, writes: int | None = None, reads: int | None = None,
         uptime: float | None = 100.0, peers: tuple[str, ...] = (), revision: int = 10,
         members: tuple[ClusterMember, ...] = MEMBERS) -> NodeStatus:
    return NodeStatus(id=node_id, endpoint=f"http://127.0.0.1:1{node_id[-1]}", role=role,
                      term=term, commit_index=commit, applied_index=applied, log_length=commit,
                      leader="n1", connected_peers=peers, revision=revision,
                      membership="voter", uptime_s=uptime, writes_total=writes,
                      reads_total=reads, members=members)


def down(node_id: str, reason: str = "connection refused") -> NodeStatus:
    return NodeStatus(id=node_id, endpoint=f"http://127.0.0.1:1{node_id[-1]}", role=Role.DOWN,
                      error=f"[Errno 111] {reason}", reason=reason, membership="voter")


def poll(*statuses: NodeStatus, at: float, coordination: Coordination | None = None,
         members: tuple[ClusterMember, ...] = MEMBERS) -> Poll:
    return Poll(statuses=statuses, members=members,
                coordination=coordination if coordination is not None else Coordination(),
                wall_time=1_700_000_000 + at, mono_time=at)


def healthy(at: float, writes: tuple[int, int, int] = (0, 0, 0), reads: int = 0,
            **coordination: object) -> Poll:
    return poll(node("n1", Role.LEADER, writes=writes[0], reads=reads, peers=("n2", "n3")),
                node("n2", writes=writes[1], reads=0), node("n3", writes=writes[2], reads=0),
                at=at, coordination=Coordination(**coordination))  # type: ignore[arg-type]


def test_rates_come_from_node_counters_and_sum_over_nodes() -> None:
    first = next_snapshot(None, healthy(10.0))
    second = next_snapshot(first, healthy(12.0, writes=(100, 40, 0), reads=60))
    assert second.rate_source == COUNTERS
    assert second.rates["n1"].writes_s == 50.0 and second.rates["n2"].writes_s == 20.0
    assert second.writes_history == (70.0,) and second.reads_history == (30.0,)


def test_a_restarted_node_gives_no_rate_instead_of_a_negative_one() -> None:
    first = next_snapshot(None, poll(node("n1", Role.LEADER, writes=500, uptime=900.0), at=1.0))
    second = next_snapshot(first, poll(node("n1", Role.LEADER, writes=3, uptime=1.0), at=2.0))
    assert "n1" not in second.rates and second.writes_history == (0.0,)


def test_without_counters_writes_per_second_come_from_revision_growth() -> None:
    first = next_snapshot(None, poll(node("n1", Role.LEADER, revision=100), at=1.0))
    second = next_snapshot(first, poll(node("n1", Role.LEADER, revision=150), at=3.0))
    assert second.rate_source == REVISION and second.writes_s == 25.0
    assert second.reads_history == ()
    text = render(dv.rates_panel(second))
    assert "revision growth" in text and "needs node counters" in text


def test_quorum_needs_a_leader_connected_to_a_majority_of_voters() -> None:
    ok = next_snapshot(None, poll(node("n1", Role.LEADER, peers=("n2",)), node("n2"),
                                  down("n3"), at=1.0))
    assert (ok.voters, ok.quorum, ok.quorum_text) == (3, True, "ok: 2/3 voters")
    alone = next_snapshot(None, poll(node("n1", Role.LEADER), down("n2"), down("n3"), at=1.0))
    assert not alone.quorum and alone.quorum_text == "lost: 1/3 voters"
    leaderless = next_snapshot(None, poll(node("n2", Role.CANDIDATE), down("n1"), at=1.0))
    assert not leaderless.quorum and leaderless.leader is None
    replicas = (*MEMBERS, ClusterMember(id="r1", membership="replica"))
    with_replica = next_snapshot(None, poll(node("n1", Role.LEADER, peers=("r1",)), at=1.0,
                                            members=replicas))
    assert (with_replica.voters, with_replica.replicas, with_replica.quorum) == (3, 1, False)


def test_events_are_the_differences_between_successive_polls() -> None:
    first = next_snapshot(None, healthy(1.0))
    assert [e.kind for e in first.events] == ["leader"]
    lost = next_snapshot(first, poll(down("n1"), node("n2", Role.LEADER, term=3),
                                     node("n3", term=3), at=2.0))
    texts = [e.text for e in lost.events[1:]]
    assert texts == ["leader n1 -> n2 (term 3)", "node n1 down (connection refused)"]
    back = next_snapshot(lost, poll(node("n1", term=3), node("n2", Role.LEADER, term=3),
                                    node("n3", term=3), at=3.0))
    assert back.events[-1].text == "node n1 up (follower)"
    grown = (*MEMBERS, ClusterMember(id="n4"))
    joined = next_snapshot(back, poll(node("n1", term=3, members=grown),
                                      node("n2", Role.LEADER, term=3, members=grown), at=4.0))
    assert joined.events[-1].text == "node n4 joined the cluster"


def test_group_joins_leaves_lock_grants_and_election_leaders_become_events() -> None:
    before = parse_coordination(KVS)
    after = parse_coordination([
        kv("_cs/group/jobs"), kv("_cs/member/jobs/w2", {"id": "w2"}),
        kv("_cs/member/jobs/w3", {"id": "w3"}),
        kv("_cs/lock/db/00000000000000000009", {"session": 8, "token": 9}),
        kv("_cs/election/primary/leader", {"member": "b", "token": 11}),
    ])
    first = next_snapshot(None, healthy(1.0, **vars_of(before)))
    second = next_snapshot(first, healthy(2.0, **vars_of(after)))
    assert [e.text for e in second.events[1:]] == [
        "w3 joined group jobs", "w1 left group jobs",
        "lock db granted to session 8 (token 9)", "election primary: b leads (token 11)"]


def test_a_live_watch_gives_every_join_and_leave_even_between_two_polls() -> None:
    from consensus_store.models import WatchEvent
    member = {"id": "w9", "session": 4}
    watched = (WatchEvent("put", "_cs/member/jobs/w9", member, 20, 1),
               WatchEvent("delete", "_cs/member/jobs/w9", None, 21, 0, member),
               WatchEvent("put", "_cs/name/db%2Fprimary", {"session": 4}, 22, 1),
               WatchEvent("put", "_cs/lock/db/00000000000000000023", {"session": 4}, 23, 1),
               WatchEvent("put", "_cs/election/primary/cand/b", {"session": 4}, 24, 1))
    before = parse_coordination(KVS)
    after = parse_coordination([*KVS, kv("_cs/member/jobs/w3", {"id": "w3"})])
    first = next_snapshot(None, healthy(1.0, **vars_of(before)))
    second = next_snapshot(first, dataclasses.replace(
        healthy(2.0, **vars_of(after)), watched=watched, watch_live=True))
    # w9 came and went between the polls: only the watch saw it; w3's join is not reported
    # twice (the poll difference leaves joins and leaves to a live watch).
    assert [e.text for e in second.events[1:]] == [
        "w9 joined group jobs (session 4)", "w9 left group jobs (session 4)",
        "name db/primary registered (session 4)", "lock db requested (session 4)",
        "b campaigns in election primary"]
    assert second.to_json()["events_source"] == "watch"
    assert "from a watch" in render(dv.frame(second))
    fallback = next_snapshot(second, healthy(3.0, **vars_of(before)))
    assert [e.text for e in fallback.events[len(second.events):]] == ["w3 left group jobs"]
    assert "watch down" in render(dv.frame(fallback))


def test_the_feed_hands_over_watched_events_and_says_when_the_watch_is_down() -> None:
    from consensus_store.cli.dashboard_feed import CoordinationFeed
    from consensus_store.errors import Unavailable
    from consensus_store.models import WatchEvent
    from consensus_store.testing.polling import poll_until

    event = WatchEvent("put", "_cs/group/jobs", {}, 5, 1)

    class OneEventWatch:
        def __init__(self) -> None:
            self.sent = False

        def get(self, timeout: float) -> WatchEvent | None:
            if not self.sent:
                self.sent = True
                return event
            raise Unavailable("every node is down")

    class WatchingClient:
        """The first watch yields one event, then every node goes away."""

        def __init__(self) -> None:
            self.watches = 0

        def watch(self, prefix: str, *, prev_value: bool) -> OneEventWatch:
            assert prefix == "_cs/" and prev_value
            self.watches += 1
            if self.watches > 1:
                raise Unavailable("no node answered")
            return OneEventWatch()

    client = WatchingClient()
    feed = CoordinationFeed(client).start()
    seen: list[WatchEvent] = []

    def down_after_events() -> bool:
        events, dropped, live = feed.drain()
        seen.extend(events)
        assert dropped == 0
        return client.watches >= 2 and not live

    try:
        poll_until(down_after_events, timeout=10.0, transient=(), what="the watch down")
    finally:
        feed.close()
    assert seen == [event]


def test_a_burst_of_changes_is_summarised() -> None:
    many = parse_coordination([kv(f"_cs/member/g/m{i:02d}", {}) for i in range(30)])
    first = next_snapshot(None, healthy(1.0))
    second = next_snapshot(first, healthy(2.0, **vars_of(many)))
    added = second.events[len(first.events):]
    assert len(added) == 20 and added[-1].text == "... and 11 more changes"


def kv(key: str, value: object = None) -> dict[str, object]:
    return {"key": key, "value": value, "create_revision": 1, "mod_revision": 1, "version": 1}


def vars_of(coordination: Coordination) -> dict[str, object]:
    return {f.name: getattr(coordination, f.name) for f in dataclasses.fields(coordination)}


KVS = [
    kv("_cs/election/primary/cand/a", {"member": "a"}),
    kv("_cs/election/primary/cand/b", {"member": "b"}),
    kv("_cs/election/primary/leader", {"member": "a", "token": 5}),
    kv("_cs/group/empty"), kv("_cs/group/jobs"),
    kv("_cs/lock/db/00000000000000000007", {"session": 3, "owner": "w1", "token": 7}),
    kv("_cs/lock/db/00000000000000000008", {"session": 4, "owner": "w2", "token": 8}),
    kv("_cs/member/jobs/w1", {"id": "w1"}), kv("_cs/member/jobs/w2", {"id": "w2"}),
    kv("_cs/name/a%2Fb", {"name": "a/b", "session": 3, "node": "n1"}),
]


def test_coordination_is_parsed_from_one_range_of_the_reserved_prefix() -> None:
    parsed = parse_coordination(KVS, sessions=[{"id": 3, "ttl": 10.0, "node": "n1",
                                                "keys": 4}])
    assert parsed.groups == (("empty", 0), ("jobs", 2))
    assert parsed.members == {("jobs", "w1"), ("jobs", "w2")}
    (lock,) = parsed.locks
    assert (lock.name, lock.holder_session, lock.token, lock.waiters) == ("db", 3, 7, 1)
    (election,) = parsed.elections
    assert (election.leader, election.token, election.candidates) == ("a", 5, 2)
    assert [(n.name, n.session) for n in parsed.names] == [("a/b", 3)]
    assert parsed.sessions is not None and parsed.sessions[0].keys == 4


def test_frame_shows_header_nodes_down_under_id_panels_and_events() -> None:
    coordination = parse_coordination(KVS, sessions=None, sessions_note=NEEDS_ADMIN)
    first = next_snapshot(None, poll(node("n1", Role.LEADER, peers=("n2",), writes=0),
                                     node("n2", writes=0, applied=7), down("n3"), at=1.0,
                                     coordination=coordination))
    snapshot = next_snapshot(first, poll(
        node("n1", Role.LEADER, peers=("n2",), writes=30, commit=12, applied=12),
        dataclasses.replace(node("n2", writes=0, applied=7), lag=5), down("n3"), at=2.0,
        coordination=coordination))
    text = render(dv.frame(snapshot))
    assert "3 voters" in text and "quorum ok: 2/3 voters" in text and "leader n1" in text
    assert "term 2" in text and "revision 10" in text
    lines = [line for line in text.splitlines() if line.count("│") > 8]
    row = {line.split("│")[1].strip(): line for line in lines}
    assert "down: connection refused" in row["n3"] and "down" in row["n3"]
    assert row["n1"].split("│")[11].strip() == "30.0"          # writes/s
    assert row["n2"].split("│")[7].strip() == "5"              # lag
    assert "1m40s" in row["n1"] and "voter" in row["n1"]
    for shown in ("jobs", "primary", "db", "a/b", NEEDS_ADMIN, "node n3 down (connection"):
        assert shown in text, shown
    table = dv.nodes_table(snapshot)
    assert [r.style for r in table.rows] == ["bold", None, None]   # the leader is highlighted
    json.dumps(snapshot.to_json())                               # --json: plain data
    assert snapshot.to_json()["nodes"][2]["id"] == "n3"


def test_tab_moves_the_focus_and_the_focused_panel_shows_more_rows() -> None:
    many = parse_coordination([kv(f"_cs/group/g{i:02d}") for i in range(12)])
    snapshot = next_snapshot(None, healthy(1.0, **vars_of(many)))
    ui = dv.UiState()
    assert ui.focused == "groups" and "g11" in render(dv.frame(snapshot, ui))
    moved = press(ui, "\t")
    assert moved is not None and moved.focused == "elections"
    text = render(dv.frame(snapshot, moved))
    assert "g05" in text and "g06" not in text and "… 6 more" in text
    paused = press(moved, "p")
    assert paused is not None and paused.paused and "PAUSED" in render(dv.frame(snapshot, paused))
    assert press(paused, "q") is None


def test_sparkline_scales_to_the_largest_sample() -> None:
    assert dv.sparkline([0, 5, 10]) == "▁▅█"
    assert dv.sparkline([0, 0]) == "▁▁" and dv.sparkline([]) == ""
    assert len(dv.sparkline(list(range(100)), width=40)) == 40


def test_keys_are_read_only_from_a_terminal() -> None:
    with KeyReader(io.StringIO("q")) as keys:      # not a TTY: no thread, no termios
        assert keys.next_key(0.0) is None


class FakeClient:
    """What the poller uses of a Client: cluster_status, request, members."""

    def __init__(self, range_error: Exception | None = None,
                 sessions_error: Exception | None = None) -> None:
        self.range_error, self.sessions_error = range_error, sessions_error
        self.members = list(MEMBERS)
        self.timeouts: list[float] = []

    def cluster_status(self, *, timeout: float) -> list[NodeStatus]:
        self.timeouts.append(timeout)
        return [node("n1", Role.LEADER), down("n2", "timeout")]

    def request(self, op: str, body: dict[str, object], timeout: float) -> dict[str, object]:
        self.timeouts.append(timeout)
        if op == "range":
            if self.range_error:
                raise self.range_error
            assert body["prefix"] == "_cs/" and body["consistency"] == "local"
            return {"kvs": KVS, "count": len(KVS), "more": False}
        if self.sessions_error:
            raise self.sessions_error
        return {"sessions": [{"id": 3, "ttl": 10.0, "node": "n1", "keys": 4}]}


def test_the_poller_degrades_to_notes_instead_of_failing() -> None:
    from consensus_store.cli.dashboard_poll import Poller
    from consensus_store.errors import Forbidden, Unavailable
    fine = Poller(FakeClient(), timeout=0.3, watch=False)
    try:
        result = fine.poll()
    finally:
        fine.close()
    assert [s.id for s in result.statuses] == ["n1", "n2"] and result.coordination is not None
    assert result.coordination.sessions is not None and result.coordination.groups
    assert fine.client.timeouts == [0.3, 0.3, 0.3]
    limited = Poller(FakeClient(sessions_error=Forbidden("admin only")), timeout=0.3,
                     watch=False)
    coordination = limited.poll().coordination
    limited.close()
    assert coordination is not None and coordination.sessions_note == NEEDS_ADMIN
    broken = Poller(FakeClient(range_error=Unavailable("no node answered")), timeout=0.3,
                    watch=False)
    failed = broken.poll()
    broken.close()
    assert failed.coordination is None and "no node answered" in (failed.coordination_error or "")
    previous = next_snapshot(None, healthy(1.0, groups=(("jobs", 2),)))
    kept = next_snapshot(previous, dataclasses.replace(failed, mono_time=2.0))
    assert kept.coordination.groups == (("jobs", 2),) and kept.coordination.error
    assert "stale" in render(dv.frame(kept))
