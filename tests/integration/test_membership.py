"""Membership changes with real node processes: member list/add/remove through the CLI, the
Python client and HTTP; refusals (unknown id, the leader, an id in use, a second change while
one is pending); the membership surviving a full restart (from the journal and from a
snapshot) with the one config-mismatch line; replacing a dead node's machine.

Each test owns its cluster (it changes the membership, stops or pauses nodes).
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from consensus_store.api.messaging import NodeEvent
from consensus_store.client import AsyncClient, Client
from consensus_store.errors import InvalidRequest
from consensus_store.launcher import LocalCluster, write_cluster_configs
from consensus_store.node.removal import REMOVED_LINE
from consensus_store.testing.membership import Members, configs_with_spares, drop_peers

from .support import ClusterPool, local_range, raw_post, wait_until

CLI = [sys.executable, "-m", "consensus_store"]
MISMATCH = "membership: "
CATCH_UP_KEYS = int(os.environ.get("CONSENSUS_STORE_MEMBERSHIP_KEYS", "1000"))


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def launch(pool: ClusterPool, name: str, spares: int = 1,
           raft_table: dict[str, float] | None = None
           ) -> tuple[LocalCluster, LocalCluster, list[Path], list[Path]]:
    """A running 3-node cluster and (not started) spare nodes whose peers are its nodes."""
    voters, spare_paths = configs_with_spares(pool.root / name / "configs", 3, spares,
                                              raft_table=raft_table)
    cluster = pool.launch(voters)
    spare = pool.launch(spare_paths, start=False)
    return cluster, spare, voters, spare_paths


def member_ids(client: Client) -> list[str]:
    return sorted(m.id for m in client.member_list(timeout=5.0))


def everyone_lists(clusters: list[LocalCluster], ids: list[str], expected: list[str]) -> bool:
    """Every node in ``ids`` reports exactly ``expected`` as members (status and member list)."""
    for node_id in ids:
        node = next(c.nodes[node_id] for c in clusters if node_id in c.nodes)
        with Client([node.endpoint], token=clusters[0].token, timeout=3.0) as client:
            if member_ids(client) != expected:
                return False
            if sorted(m.id for m in client.status(timeout=3.0).members) != expected:
                return False
    return True


def test_list_add_remove_through_cli_and_client_with_refusals(cluster_pool: ClusterPool) -> None:
    cluster, spare, voters, (n4_config,) = launch(cluster_pool, "basics")
    leader = cluster.wait_for_leader(timeout=30)
    with cluster.client(timeout=10.0) as client:
        for i in range(20):
            client.put(f"before/{i}", i)

        listed = cli("member", "list", "--json", "--config", str(voters[0]))
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert sorted(r["id"] for r in rows) == ["n1", "n2", "n3"]
        assert all(r["voter"] and r["membership"] == "voter" for r in rows)

        # add through the CLI with the new node's own config (its peers reach the cluster)
        spare.nodes["n4"].start()
        with Client(spare.endpoints, token=cluster.token, timeout=2.0) as newcomer:
            # up first: the CLI asks n4 (its config's first endpoint), which sends it on
            wait_until(lambda: newcomer.status(timeout=1.0), 20, "n4 answers")
        added = cli("member", "add", "--config", str(n4_config))
        assert added.returncode == 0, added.stderr
        assert "added n4" in added.stdout and "n4" in added.stdout
        wait_until(lambda: len(local_range(spare, "n4", "before/")) == 20, 30,
                   "n4 holds the keys written before it was added")
        client.put("after/add", 1)
        wait_until(lambda: local_range(spare, "n4", "after/") == {"after/add": 1}, 20,
                   "n4 takes new writes")
        wait_until(lambda: everyone_lists([cluster, spare], ["n1", "n2", "n3", "n4"],
                                          ["n1", "n2", "n3", "n4"]), 20,
                   "every node lists n4 (member list and status)")
        wait_until(lambda: "n4" in client.status(cluster.endpoints[0]).connected_peers, 20,
                   "n1's status lists the added n4 among its connected peers")
        rows = {m.id: m for m in client.member_list()}
        assert rows["n4"].voter and rows["n4"].api_address == str(
            spare.nodes["n4"].config.api_address)
        shown = cli("status", "--json", "--config", str(voters[0]))   # the config lacks n4
        assert shown.returncode == 0, shown.stderr
        assert {s["id"] for s in json.loads(shown.stdout)} == {"n1", "n2", "n3", "n4"}
        # a client built before the change learns the new endpoint from the membership
        with Client(cluster.endpoints, token=cluster.token) as learner:
            assert spare.nodes["n4"].endpoint in learner.sync_endpoints()
            assert len(learner.endpoints) == 4

        async def async_view() -> tuple[list[str], list[str]]:
            async with AsyncClient(cluster.endpoints, token=cluster.token) as aclient:
                ids = sorted(m.id for m in await aclient.member_list())
                return ids, await aclient.sync_endpoints()
        ids, endpoints = asyncio.run(async_view())
        assert ids == ["n1", "n2", "n3", "n4"] and spare.nodes["n4"].endpoint in endpoints

        # refusals: one line on stderr, exit 2; HTTP 400 with a JSON message
        for args, words in ((("add", "--config", str(n4_config)), "exists already"),
                            (("remove", "nX", "--config", str(voters[0])), "no member named"),
                            (("add", "n9", "--config", str(voters[0])), "not both"),
                            (("add", "n9", "--raft-address", "127.0.0.1:1", "--endpoints",
                              cluster.endpoints[0]), "needs --config")):
            refused = cli("member", *args)
            assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
            assert words in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
            assert "Traceback" not in refused.stderr
        answer = raw_post(cluster, leader, "/v1/members/remove", {"member": leader})
        assert answer.status_code == 400, answer.text
        assert answer.json()["reason"] == "remove_leader"
        assert "leader transfer" in answer.json()["message"]
        for body in ({"member": "n5", "raft_address": "nowhere", "api_address": "127.0.0.1:9"},
                     {"member": "", "raft_address": "127.0.0.1:8", "api_address": "127.0.0.1:9"},
                     {"member": "n5", "raft_address": str(spare.nodes["n4"].config.raft_address),
                      "api_address": "127.0.0.1:9"},
                     {"raft_address": 5}):
            answer = raw_post(cluster, leader, "/v1/members/add", body)
            assert answer.status_code == 400, (body, answer.text)
            assert answer.json()["error"] == "invalid_request" and answer.json()["message"]
        with pytest.raises(InvalidRequest):
            client.remove_member("nX")

        # remove through the client: the cluster is three again and still commits
        after = client.remove_member("n4")
        assert sorted(m.id for m in after) == ["n1", "n2", "n3"]
        spare.nodes["n4"].stop()
        client.put("after/remove", 2)
        assert member_ids(client) == ["n1", "n2", "n3"]
        assert sorted(client.sync_endpoints()) == sorted(cluster.endpoints)
        assert cluster.exited() == []


def test_a_second_change_while_one_is_pending_is_refused(cluster_pool: ClusterPool) -> None:
    # A long leader fallback: the leader keeps leading while the add cannot commit.
    cluster, spare, _, _ = launch(cluster_pool, "pending",
                                  raft_table={"leader_fallback_timeout_s": 30.0})
    leader = cluster.wait_for_leader(timeout=30)
    paused, other = [n for n in cluster.nodes if n != leader]
    n4 = spare.nodes["n4"].config
    cluster.nodes[paused].pause()
    try:
        # 4 voters need 3: the leader, one follower and a node not running cannot commit it
        first = raw_post(cluster, leader, "/v1/members/add",
                         {"member": "n4", "raft_address": str(n4.raft_address),
                          "api_address": str(n4.api_address), "timeout": 1.0})
        assert first.status_code == 504, first.text
        second = raw_post(cluster, leader, "/v1/members/remove", {"member": other})
        assert second.status_code == 400, second.text
        assert second.json()["reason"] == "change_pending"
    finally:
        cluster.nodes[paused].resume()
    with cluster.client(timeout=10.0) as client:
        wait_until(lambda: "n4" in member_ids(client), 20, "the pending add applies once the "
                                                           "paused follower is back")
        client.put("k", 1)                        # 3 of 4 voters up: still a majority
        assert sorted(m.id for m in client.remove_member("n4")) == ["n1", "n2", "n3"]


def test_membership_survives_a_full_restart_and_a_config_mismatch_is_one_line(
        cluster_pool: ClusterPool) -> None:
    # Small compaction threshold: the second restart loads the membership from a snapshot.
    cluster, spare, _, _ = launch(cluster_pool, "restart",
                                  raft_table={"log_compaction_min_entries": 50})
    cluster.wait_for_leader(timeout=30)
    spare.nodes["n4"].start()
    with cluster.client(timeout=10.0) as client:
        client.add_member(spare.nodes["n4"].config)
        for i in range(10):
            client.put(f"a/{i}", i)
    every = ["n1", "n2", "n3", "n4"]
    nodes = {**cluster.nodes, **spare.nodes}
    for restart in ("journal", "snapshot"):
        if restart == "snapshot":
            with cluster.client(timeout=10.0) as client:
                for i in range(150):             # past the compaction threshold: snapshots
                    client.put(f"s/{i}", i)
        for node in nodes.values():
            node.stop()
        for node in nodes.values():
            node.log_path.write_text("")        # only this start's lines
        for node in nodes.values():
            node.start()
        members = Members([cluster, spare], every)
        wait_until(lambda: sum(s.role.value == "leader" for s in members.statuses().values())
                   == 1, 30, "a leader among the four after the restart")
        wait_until(lambda: everyone_lists([cluster, spare], every, every), 30,
                   f"all four members after a full restart ({restart})")
        with Client([nodes["n4"].endpoint], token=cluster.token, timeout=10.0) as client:
            client.put(f"restarted/{restart}", 1)
        for node_id in every:
            wait_until(lambda n=node_id: local_range(
                cluster if n in cluster.nodes else spare, n, "restarted/").get(
                f"restarted/{restart}") == 1, 20, f"{node_id} applies writes after the restart")
        # n1..n3's configs list three voters; the live membership has four: one line each.
        # n4's config (itself and n1..n3) agrees with the live membership: no line.
        for node_id, node in nodes.items():
            lines = [line for line in node.log_path.read_text().splitlines()
                     if MISMATCH in line and "live membership" in line]
            if node_id == "n4":
                assert lines == [], lines
            else:
                assert len(lines) == 1, (node_id, lines)
                assert "n4=" in lines[0] and "using the live membership" in lines[0]
    snapshots = [n for n in every if (nodes[n].data_dir / "raft.snapshot").exists()]
    assert snapshots, "no node wrote a snapshot: the snapshot path was not exercised"


def test_replace_a_dead_nodes_machine(cluster_pool: ClusterPool) -> None:
    cluster, spare, voters, (n4_config,) = launch(cluster_pool, "replace")
    leader = cluster.wait_for_leader(timeout=30)
    victim = next(n for n in cluster.nodes if n != leader)
    survivors = sorted(n for n in cluster.nodes if n != victim)
    with cluster.client(timeout=10.0) as client:
        written = {}
        for i in range(0, CATCH_UP_KEYS, 100):
            batch = {f"data/{j:06d}": j for j in range(i, min(i + 100, CATCH_UP_KEYS))}
            for key, value in batch.items():
                client.put(key, value)
            written.update(batch)
    cluster.nodes[victim].kill()                 # the machine is gone
    with cluster.client(timeout=10.0) as client:
        # 4 voters with one dead and the new one not up could not commit: refused (as etcd)
        wait_until(lambda: victim not in {m.id for m in client.member_list() if m.connected}
                   or None, 20, "the leader sees the dead node disconnected")
        with pytest.raises(InvalidRequest) as refused:
            client.add_member(spare.nodes["n4"].config)
        assert refused.value.details["reason"] == "quorum_at_risk"
    drop_peers(n4_config, [victim])              # the new machine's peers: the survivors
    removed = cli("member", "remove", victim, "--config", str(voters[0]))
    assert removed.returncode == 0, removed.stderr
    n4 = spare.nodes["n4"]
    assert not n4.data_dir.exists()              # an empty data dir
    n4.start()
    started = time.monotonic()
    added = cli("member", "add", "--config", str(n4_config))
    assert added.returncode == 0, added.stderr

    def caught_up() -> bool:
        return len(local_range(spare, "n4", "data/")) == len(written)
    wait_until(caught_up, 60, "the new node holds every key")
    print(f"\nmembership: n4 caught up with {len(written)} keys "
          f"{time.monotonic() - started:.2f} s after 'member add' was run")
    with cluster.client(timeout=10.0) as client:
        client.put("data/after", "x")
        members = {m.id: m for m in client.member_list()}
        assert sorted(members) == sorted([*survivors, "n4"])

        def healthy() -> bool:
            """Three connected voters, all at the leader's last index, as the leader says."""
            leader = next((s for s in client.cluster_status(timeout=3.0)
                           if s.role.value == "leader"), None)
            if leader is None:
                return False
            with Client([leader.endpoint], token=cluster.token, timeout=3.0) as direct:
                rows = direct.member_list()
            return (sorted(r.id for r in rows) == sorted([*survivors, "n4"])
                    and all(r.voter and r.connected for r in rows)
                    and len({r.match_index for r in rows}) == 1)
        wait_until(healthy, 30, "three connected voters, all at the leader's index")
        # the new node is a voter by name too: leadership moves to it
        assert client.transfer_leadership("n4", timeout=15.0).leader == "n4"
    for node_id in [*survivors, "n4"]:
        holder = spare if node_id == "n4" else cluster
        wait_until(lambda n=node_id, h=holder: local_range(h, n, "data/") == {
            **written, "data/after": "x"}, 30, f"{node_id} holds all the data")


def test_member_list_shows_read_replicas_as_non_voters(cluster_pool: ClusterPool) -> None:
    paths = write_cluster_configs(cluster_pool.root / "replicas" / "configs", 3, replicas=1)
    cluster = cluster_pool.launch(paths)
    leader = cluster.wait_for_leader(timeout=30)
    with Client([cluster.nodes[leader].endpoint], token=cluster.token, timeout=5.0) as client:
        def replica_listed() -> bool:
            rows = {m.id: m for m in client.member_list()}
            return "r1" in rows and not rows["r1"].voter and rows["r1"].membership == "replica"
        wait_until(replica_listed, 20, "the leader lists the connected replica r1")
        rows = {m.id: m for m in client.member_list()}
        assert sorted(rows) == ["n1", "n2", "n3", "r1"]
        assert rows["r1"].api_address == str(cluster.nodes["r1"].config.api_address)
        assert all(rows[n].voter for n in ("n1", "n2", "n3"))
        # sync_endpoints keeps the voters only (read replicas are the client's own choice)
        assert len(client.sync_endpoints()) == 3


def test_a_single_node_cluster_grows_to_three(cluster_pool: ClusterPool) -> None:
    voters, spares = configs_with_spares(cluster_pool.root / "grow" / "configs", 1, 2)
    cluster = cluster_pool.launch(voters)
    spare = cluster_pool.launch(spares, start=False)
    with cluster.client(timeout=10.0) as client:
        client.put("alone", 1)
        for node_id in ("n2", "n3"):
            spare.nodes[node_id].start()
            client.add_member(spare.nodes[node_id].config, timeout=20.0)
            wait_until(lambda n=node_id: local_range(spare, n, "alone") == {"alone": 1}, 20,
                       f"{node_id} catches up")
        assert member_ids(client) == ["n1", "n2", "n3"]
        client.put("three", 3)
    for node_id in ("n2", "n3"):
        wait_until(lambda n=node_id: local_range(spare, n, "three") == {"three": 3}, 20,
                   f"{node_id} takes writes")


def test_a_removed_running_node_stops_itself_and_nodes_follow_the_membership(
        cluster_pool: ClusterPool) -> None:
    cluster, spare, voters, _ = launch(cluster_pool, "removed")
    leader = cluster.wait_for_leader(timeout=30)
    victim = next(n for n in cluster.nodes if n != leader)
    n4 = spare.nodes["n4"]
    n4.start()            # not added yet: it asks, is told it is no member, and waits
    wait_until(lambda: "not a member of the cluster yet" in n4.log_path.read_text(), 30,
               "the fresh n4 says it waits for 'member add'")
    assert n4.alive and REMOVED_LINE not in n4.log_path.read_text()
    with cluster.client(timeout=10.0) as client:
        wait_until(lambda: all(n.up for n in client.nodes()), 20, "every node up")
        assert sorted(n.id for n in client.nodes()) == ["n1", "n2", "n3"]
        events: queue.Queue[NodeEvent] = queue.Queue()
        monitor = client.monitor_nodes(interval=0.2, timeout=90)
        threading.Thread(target=lambda: [events.put(e) for e in monitor], daemon=True).start()

        client.add_member(n4.config)
        next_event(events, NodeEvent("nodeup", "n4"), 30)
        assert sorted(n.id for n in client.nodes()) == ["n1", "n2", "n3", "n4"]
        client.put("before/remove", 1)
        wait_until(lambda: local_range(cluster, victim, "before/") == {"before/remove": 1}, 20,
                   f"{victim} applied a write (it has been a working member)")

        removed = cli("member", "remove", victim, "--config", str(voters[0]))
        assert removed.returncode == 0, removed.stderr
        assert "stops by itself" in removed.stdout and "exit code 3" in removed.stdout
        started = time.monotonic()
        process = cluster.nodes[victim]
        wait_until(lambda: not process.alive, 30, f"the removed {victim} exits by itself")
        took = time.monotonic() - started
        assert process.exit_code == 3, process.exit_code
        lines = [line for line in process.log_path.read_text().splitlines()
                 if REMOVED_LINE in line]
        assert len(lines) == 1 and victim in lines[0] and "stopping" in lines[0], lines
        next_event(events, NodeEvent("nodedown", victim), 20)
        print(f"\nmembership: removed {victim} exited with code 3 {took:.2f} s after "
              f"'member remove' returned")

        client.put("after/remove", 2)             # the cluster serves on: 3 voters of 3
        assert sorted(n.id for n in client.nodes()) == sorted(
            n for n in ["n1", "n2", "n3", "n4"] if n != victim)
        assert member_ids(client) == sorted(n for n in ["n1", "n2", "n3", "n4"] if n != victim)
    assert [n.id for n in cluster.exited()] == [victim] and spare.exited() == []


def next_event(events: "queue.Queue[NodeEvent]", wanted: NodeEvent, timeout: float) -> None:
    """Wait for ``wanted`` (other events before it are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted} within {timeout:g}s"
        try:
            if events.get(timeout=left) == wanted:
                return
        except queue.Empty:
            pass
