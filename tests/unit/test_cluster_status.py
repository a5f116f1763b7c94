"""Status names every node: down nodes under their configured id with the reason, addresses,
membership and lag (client/cluster_status.py), and what a node adds to its status
(node/status_report.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from consensus_store.client import Client
from consensus_store.client.cluster_status import NodeDirectory, down_reason, with_lag
from consensus_store.config import load_config
from consensus_store.errors import AuthError, Timeout, TlsError, Unavailable
from consensus_store.launcher import write_cluster_configs
from consensus_store.models import ClusterMember, NodeStatus, Role
from consensus_store.node.status_report import StatusReport, configured_members

MEMBERS = [ClusterMember(id=f"n{i}", raft_address=f"127.0.0.1:710{i}",
                         api_address=f"127.0.0.1:720{i}", native_address=f"127.0.0.1:730{i}")
           for i in (1, 2, 3)]


def live(node_id: str, endpoint: str, role: Role = Role.FOLLOWER, *, commit: int = 10,
         applied: int = 10, term: int = 2, members: tuple[ClusterMember, ...] = ()) -> NodeStatus:
    return NodeStatus(id=node_id, endpoint=endpoint, role=role, term=term, commit_index=commit,
                      applied_index=applied, members=members)


@pytest.mark.parametrize(("error", "reason"), [
    (Unavailable("http://h:1: ConnectError: [Errno 111] Connection refused"),
     "connection refused"),
    (Unavailable("tcp://h:1: ConnectionRefusedError: [Errno 111] Connection refused"),
     "connection refused"),
    (Timeout("http://h:1 did not answer within 0.4s"), "timeout"),
    (TlsError("https://h:1: certificate verify failed: unable to get local issuer"), "TLS error"),
    (AuthError("missing or wrong client token"), "unauthorized"),
    (Unavailable("tcp://h:1: ConnectionResetError: [Errno 104] Connection reset by peer"),
     "connection lost"),
])
def test_down_reasons_in_a_few_words(error: Exception, reason: str) -> None:
    assert down_reason(error) == reason   # type: ignore[arg-type]


def test_a_down_node_is_named_from_any_live_nodes_members() -> None:
    directory = NodeDirectory()
    answers = [("http://127.0.0.1:7201", live("n1", "http://127.0.0.1:7201", Role.LEADER,
                                              commit=12, applied=12, members=tuple(MEMBERS))),
               ("http://127.0.0.1:7202", live("n2", "http://127.0.0.1:7202", applied=9)),
               ("http://127.0.0.1:7203", Unavailable("ConnectError: Connection refused"))]
    n1, n2, n3 = directory.resolve(answers)
    assert (n3.id, n3.role, n3.reason) == ("n3", Role.DOWN, "connection refused")
    assert (n3.raft_address, n3.native_address, n3.membership) == (
        "127.0.0.1:7103", "127.0.0.1:7303", "voter")
    assert (n1.lag, n2.lag, n3.lag) == (0, 3, None)
    assert n2.native_address == "127.0.0.1:7302"       # filled from its member entry
    # Native endpoints are matched by the native address.
    native = NodeDirectory(MEMBERS).resolve([("tcp://127.0.0.1:7302", Timeout("slow"))])
    assert (native[0].id, native[0].reason) == ("n2", "timeout")


def test_a_node_seen_once_keeps_its_id_when_it_goes_down() -> None:
    directory = NodeDirectory()
    directory.resolve([("http://h:1", live("alpha", "http://h:1"))])
    (gone,) = directory.resolve([("http://h:1", Unavailable("refused"))])
    assert gone.id == "alpha" and gone.role is Role.DOWN


def test_without_any_id_the_endpoint_names_the_node() -> None:
    (gone,) = NodeDirectory().resolve([("http://h:1", Unavailable("refused"))])
    assert gone.id == "http://h:1" and gone.reason == "connection refused"


def test_lag_is_measured_from_the_leader_of_the_highest_term() -> None:
    statuses = [live("old", "a", Role.LEADER, commit=50, applied=50, term=1),
                live("new", "b", Role.LEADER, commit=40, applied=40, term=2),
                live("f", "c", applied=35, term=2)]
    assert [s.lag for s in with_lag(statuses)] == [0, 0, 5]
    assert [s.lag for s in with_lag([live("f", "c")])] == [None]


def test_from_config_knows_every_member_before_any_node_answers(tmp_path: Path) -> None:
    paths = write_cluster_configs(tmp_path, 3)
    with Client.from_config(paths[1], timeout=0.5) as client:
        assert [m.id for m in client.members] == ["n2", "n1", "n3"]
        statuses = client.cluster_status(timeout=0.3)      # nothing runs: all refused
    assert [(s.id, s.role, s.reason) for s in statuses] == [
        (f"n{i}", Role.DOWN, "connection refused") for i in (2, 1, 3)]
    assert all(s.raft_address and s.api_address for s in statuses)


def test_the_node_reports_its_members_uptime_and_counters(tmp_path: Path) -> None:
    config = load_config(write_cluster_configs(tmp_path, 3)[0])
    now = [100.0]
    report = StatusReport(config, clock=lambda: now[0])
    report.count_write()
    report.count_read()
    report.count_read()
    now[0] = 112.5
    fields = report.fields()
    assert fields["uptime_s"] == 12.5 and fields["requests"] == {"writes": 1, "reads": 2}
    assert fields["membership"] == "voter"
    assert fields["native_address"] == str(config.native_address)
    assert [m["id"] for m in fields["members"]] == ["n1", "n2", "n3"]
    assert fields["members"] == configured_members(config)
    # What the client makes of it: the same members, counters as totals.
    body = {"id": "n1", "role": "leader", "term": 1, "commit_index": 3, "applied_index": 3,
            "log_length": 3, "keys": 0, "revision": 0, **fields}
    status = NodeStatus.from_json("http://x:1", body)
    assert [m.id for m in status.members] == ["n1", "n2", "n3"]
    assert (status.writes_total, status.reads_total, status.membership) == (1, 2, "voter")


def test_the_async_client_names_down_nodes_the_same_way(tmp_path: Path) -> None:
    import asyncio
    from consensus_store.client import AsyncClient
    paths = write_cluster_configs(tmp_path, 3)

    async def statuses() -> list[NodeStatus]:
        async with AsyncClient.from_config(paths[2], timeout=0.5) as client:
            return await client.cluster_status(timeout=0.3)
    assert [(s.id, s.role, s.reason) for s in asyncio.run(statuses())] == [
        (f"n{i}", Role.DOWN, "connection refused") for i in (3, 1, 2)]
