"""A removed node's decision to stop (node/removal.py) on a fake engine, a fake clock and
httpx's MockTransport; the `up` supervisor leaves a removed node (exit 3) down; monitor_nodes'
events when a node leaves the view."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from consensus_store.api.messaging import NodeEvent
from consensus_store.api.nodes import view_events
from consensus_store.cli.run_node import EXIT_REMOVED
from consensus_store.cli.supervisor import Supervisor
from consensus_store.launcher import write_cluster_configs
from consensus_store.config import load_config
from consensus_store.node import removal
from consensus_store.node.removal import REMOVED_LINE, RemovalWatch, leaves_out


@dataclass
class Status:
    connected_peers: tuple[str, ...] = ()
    role: str = "follower"


@dataclass
class FakeMembership:
    rows: list[dict[str, Any]]

    def table(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows]


@dataclass
class FakeEngine:
    membership: FakeMembership
    started: bool = True
    applied_index: int = 50
    raft: Status = field(default_factory=Status)

    async def status(self) -> Status:
        return self.raft


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    config = load_config(write_cluster_configs(tmp_path, 3)[0])      # n1
    rows = [{"id": c.id, "raft_address": str(c.raft_address), "api_address": str(c.api_address),
             "membership": "voter"} for c in (config, *config.peers)]
    engine = FakeEngine(FakeMembership(rows))
    clock = Clock()
    monkeypatch.setattr(removal.time, "monotonic", clock)
    lines: list[str] = []
    removal.set_removed_handler(lines.append)
    # what each peer's /v1/members answers: the leader's list, or a refusal
    answers: dict[str, tuple[int, dict[str, Any]]] = {}
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/members"
        assert json.loads(request.content) == {"from_leader": True}
        assert request.headers["authorization"].startswith("Bearer ")
        asked.append(request.url.host + ":" + str(request.url.port))
        status, body = answers.get(f"{request.url.host}:{request.url.port}",
                                   (503, {"error": "not_leader"}))
        return httpx.Response(status, json=body)
    yield {"config": config, "engine": engine, "clock": clock, "lines": lines, "rows": rows,
           "answers": answers, "asked": asked, "transport": httpx.MockTransport(answer)}
    removal.set_removed_handler(None)


def run_checks(world: dict[str, Any], times: int, step: float = 1.0) -> RemovalWatch:
    watch = world.get("watch") or RemovalWatch(world["config"], world["engine"], "t")
    world["watch"] = watch

    async def checks() -> None:
        async with watch.http_client(world["transport"]) as http:
            for _ in range(times):
                await watch._check(http)
                world["clock"].now += step
    asyncio.run(checks())
    return watch


def leader_lists(world: dict[str, Any], ids: list[str]) -> None:
    leader = world["rows"][1]
    world["answers"][leader["api_address"]] = (200, {
        "leader": leader["id"], "members": [r for r in world["rows"] if r["id"] in ids]})


def test_a_node_left_out_by_the_leader_twice_after_isolation_is_removed(world) -> None:
    leader_lists(world, ["n2", "n3"])
    watch = run_checks(world, 2)              # isolated for less than ISOLATED_S: no asking
    assert world["asked"] == [] and watch.removed_by is None
    run_checks(world, 1)                      # first confirmation only
    assert world["lines"] == [] and len(world["asked"]) == 2      # both peers asked
    run_checks(world, 1)
    assert watch.removed_by == "n2" and len(world["lines"]) == 1
    assert REMOVED_LINE in world["lines"][0] and "n1" in world["lines"][0]


def test_a_listed_node_a_connected_node_and_no_answer_decide_nothing(world) -> None:
    leader_lists(world, ["n1", "n2", "n3"])
    run_checks(world, 6)
    assert world["asked"] and world["lines"] == []
    world["answers"].clear()                  # nobody leads, or the peers are down
    run_checks(world, 6)
    world["engine"].raft = Status(connected_peers=("127.0.0.1:1",))
    leader_lists(world, ["n2", "n3"])
    asked = len(world["asked"])
    run_checks(world, 6)                      # connected to a voter: never asks
    assert len(world["asked"]) == asked and world["lines"] == []


def test_a_confirmation_is_reset_when_the_node_reconnects(world) -> None:
    leader_lists(world, ["n2", "n3"])
    run_checks(world, 3)                      # isolated, then one confirmation
    world["engine"].raft = Status(connected_peers=("127.0.0.1:1",))
    run_checks(world, 1)
    world["engine"].raft = Status()
    run_checks(world, 3)                      # isolation starts over: one confirmation
    assert world["lines"] == []


def test_a_node_that_never_joined_waits_instead(world, caplog) -> None:
    world["engine"].applied_index = 1         # an empty data dir: pysyncobj's first no-op
    leader_lists(world, ["n2", "n3"])
    with caplog.at_level("INFO", logger="consensus_store.membership"):
        run_checks(world, 8)
    assert world["lines"] == []
    waiting = [r for r in caplog.records if "not a member of the cluster yet" in r.message]
    assert len(waiting) == 1


def test_leaves_out() -> None:
    rows = {"members": [{"id": "a", "raft_address": "a:1"}, {"id": "r", "raft_address": ""}]}
    assert leaves_out(rows, "b", "b:2") is True
    assert leaves_out(rows, "a", "a:1") is False
    # Known to the leader by another address (a proxy, a DNS name): still a member.
    assert leaves_out(rows, "a", "127.0.0.1:1") is False
    assert leaves_out({"error": "x"}, "a", "a:1") is None and leaves_out([], "a", "a:1") is None


class FakeNode:
    def __init__(self, node_id: str) -> None:
        self.id, self.alive, self.exit_code = node_id, True, None
        self.log_path, self.starts = Path(f"/logs/{node_id}.log"), 0

    def start(self) -> None:
        self.alive, self.exit_code, self.starts = True, None, self.starts + 1


def test_up_leaves_a_removed_node_down() -> None:
    node, lines, clock = FakeNode("n3"), [], Clock()
    supervisor = Supervisor([node], lines.append, clock=clock)
    node.alive, node.exit_code = False, EXIT_REMOVED
    for _ in range(5):
        supervisor.check()
        clock.now += 60
    assert node.starts == 0 and len(lines) == 1
    assert "exited with code 3" in lines[0] and "removed from the cluster" in lines[0]


def test_a_node_leaving_the_view_while_up_is_a_nodedown() -> None:
    before = {"n1": True, "n2": True, "n3": False}
    now = {"n1": True, "n2": True, "n4": True}        # n3 was down when it left: no event
    assert view_events(before, now) == [NodeEvent("nodeup", "n4")]
    assert view_events({"n1": True, "n3": True}, {"n1": True}) == [NodeEvent("nodedown", "n3")]
