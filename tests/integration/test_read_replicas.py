"""Read replicas (docs/replicas.md) with real processes: 3 voters, 2 replicas (r1, r2) and r3, a
replica whose peer secret is wrong.  Every node snapshots every few dozen entries, so a
replica's restart goes through its own snapshot and its catching up through the leader's.

The tests share one cluster and run in file order: the last of them kills two voters.  The
``up --replicas`` test at the end runs its own cluster.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from consensus_store.client import Client
from consensus_store.errors import ConsensusStoreError
from consensus_store.launcher import LocalCluster, write_cluster_configs
from consensus_store.node.engine.storage import SNAPSHOT_NAME
from consensus_store.testing.cluster import node_state

from .support import ClusterPool, raw_post, statuses, wait_until

VOTERS = ("n1", "n2", "n3")
REPLICAS = ("r1", "r2")
OUTSIDER = "r3"          # a replica configured with a wrong peer secret
COMPACTION = {"log_compaction_min_entries": 40, "log_compaction_min_time_s": 0.2}


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> Iterator[LocalCluster]:
    directory = module_pool.root / "replicas" / "configs"
    # Frequent snapshots: a replica snapshots too, and one that was down gets the leader's.
    paths = write_cluster_configs(directory, 3, replicas=3, durability="process",
                                  raft_table=COMPACTION)
    wrong = directory / "wrong_secret"
    descriptor = os.open(wrong, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("not-the-cluster-secret-at-all-0123456789\n")
    outsider = directory / f"{OUTSIDER}.toml"
    text = outsider.read_text()
    assert 'peer_secret_file = "peer_secret"' in text
    outsider.write_text(text.replace('peer_secret_file = "peer_secret"',
                                     'peer_secret_file = "wrong_secret"'))
    yield module_pool.launch(paths)


def endpoint(cluster: LocalCluster, node_id: str) -> str:
    return cluster.nodes[node_id].endpoint


def voters_client(cluster: LocalCluster, **options: Any) -> Client:
    return Client([endpoint(cluster, n) for n in VOTERS], token=cluster.token, **options)


def leader_of(cluster: LocalCluster) -> str:
    return cluster.wait_for_leader(timeout=20.0)


def same_data(cluster: LocalCluster, node_id: str, reference: str) -> bool:
    return node_state(cluster, node_id) == node_state(cluster, reference)


def test_replicas_receive_every_write(cluster: LocalCluster) -> None:
    leader = leader_of(cluster)
    with voters_client(cluster) as client:
        for i in range(60):
            client.put(f"every/{i:03d}", {"i": i})
        client.delete("every/000")
        client.txn(compare=[{"key": "every/001", "target": "value", "value": {"i": 1}}],
                   success=[{"op": "put", "key": "every/txn", "value": "yes"}])
        client.get("every/001", consistency="linearizable")       # a barrier on the voters
    for replica in REPLICAS:
        wait_until(lambda r=replica: same_data(cluster, r, leader), 15.0,
                   what=f"{replica} holds exactly the leader's records and revisions")
    assert "every/txn" in node_state(cluster, "r1")


def test_replica_serves_local_and_session_reads(cluster: LocalCluster) -> None:
    with voters_client(cluster) as client:
        written = client.put("session/key", "fresh")
    # A session read on the replica waits for the index the client has seen, then answers.
    answer = raw_post(cluster, "r1", "/v1/kv/get",
                      {"key": "session/key", "consistency": "session",
                       "min_index": written.mod_revision})
    assert answer.status_code == 200, answer.text
    assert answer.json()["header"]["node"] == "r1"
    assert answer.json()["kv"]["value"] == "fresh"
    local = raw_post(cluster, "r2", "/v1/kv/get", {"key": "every/002", "consistency": "local"})
    assert local.status_code == 200 and local.json()["header"]["node"] == "r2"
    assert local.json()["kv"]["value"] == {"i": 2}
    # A client told about the replicas sends writes to the voters and reads to the replicas.
    with voters_client(cluster) as client:
        client.use_read_replicas([endpoint(cluster, r) for r in REPLICAS])
        served_by = set()
        for i in range(6):
            client.put(f"routed/{i}", i)
            result = client.request("get", {"key": f"routed/{i}", "consistency": "session"}, 5.0)
            assert result["kv"]["value"] == i          # read-your-writes on a replica
            served_by.add(result["header"]["node"])
        assert served_by == set(REPLICAS)
        linearizable = client.request("get", {"key": "routed/0",
                                              "consistency": "linearizable"}, 5.0)
        assert linearizable["header"]["node"] in VOTERS


def test_config_of_a_replica_makes_a_client_that_writes_to_voters(cluster: LocalCluster) -> None:
    with Client.from_config(cluster.nodes["r1"].config.path, protocol="http") as client:
        assert client.endpoints[-1] == endpoint(cluster, "r1")
        kv = client.put("from-config/key", 1)
        result = client.request("get", {"key": "from-config/key", "consistency": "session"}, 5)
        assert result["header"]["node"] == "r1" and result["kv"]["mod_revision"] == kv.mod_revision


def test_writes_and_linearizable_reads_on_a_replica_are_forwarded(cluster: LocalCluster) -> None:
    leader = leader_of(cluster)
    answer = raw_post(cluster, "r1", "/v1/kv/put", {"key": "forwarded/w", "value": "via r1"})
    assert answer.status_code == 200, answer.text
    revision = answer.json()["kv"]["mod_revision"]
    with Client([endpoint(cluster, leader)], token=cluster.token) as client:
        kv = client.get("forwarded/w", consistency="linearizable")
        assert kv is not None and (kv.value, kv.mod_revision) == ("via r1", revision)
    read = raw_post(cluster, "r2", "/v1/kv/get",
                    {"key": "forwarded/w", "consistency": "linearizable"})
    assert read.status_code == 200 and read.json()["kv"]["value"] == "via r1"


def test_status_shows_replicas_not_voting_with_their_lag(cluster: LocalCluster) -> None:
    leader = leader_of(cluster)

    def every_voter_lists_both() -> dict[str, Any] | None:
        raw = {n: raw_status(cluster, n) for n in (*VOTERS, *REPLICAS)}
        return raw if all(sorted(r["id"] for r in raw[v]["replicas"]) == list(REPLICAS)
                          for v in VOTERS) else None

    raw = wait_until(every_voter_lists_both, 10.0, what="every voter lists r1 and r2")
    current = statuses(cluster)
    for replica in REPLICAS:
        assert current[replica].membership == "replica"
        assert current[replica].leader == leader
    for voter in VOTERS:
        assert raw[voter]["membership"] == "voter"
    on_leader = {r["id"]: r for r in raw[leader]["replicas"]}
    for replica in REPLICAS:
        assert isinstance(on_leader[replica]["lag"], int) and on_leader[replica]["lag"] >= 0
        assert on_leader[replica]["match_index"] > 0
        assert on_leader[replica]["endpoint"] == endpoint(cluster, replica)
        assert on_leader[replica]["native_address"] == str(
            cluster.nodes[replica].config.native_address)
        assert isinstance(raw[replica]["lag"], int) and raw[replica]["lag"] >= 0
        assert raw[replica]["replicas"] == []


def test_cli_status_from_a_voters_config_lists_the_replicas(cluster: LocalCluster,
                                                             tmp_path: Path) -> None:
    """A voter's config names no replica: status learns them from the live membership."""
    from .test_cli import run_cli
    config = next(p for p in cluster.config_paths if p.stem == VOTERS[0])  # type: ignore[attr-defined]
    wait_until(lambda: all(sorted(r["id"] for r in raw_status(cluster, v)["replicas"])
                           == list(REPLICAS) for v in VOTERS), 10.0,
               what="every voter lists r1 and r2")
    result = run_cli("status", f"--config={config}", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = {n["id"]: n for n in json.loads(result.stdout)}
    assert set(shown) == {*VOTERS, *REPLICAS}, shown.keys()
    for replica in REPLICAS:
        assert shown[replica]["membership"] == "replica" and shown[replica]["role"] != "down"


def raw_status(cluster: LocalCluster, node_id: str) -> dict[str, Any]:
    answer = httpx.get(endpoint(cluster, node_id) + "/v1/status", timeout=5.0,
                       headers={"Authorization": f"Bearer {cluster.token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_replica_with_wrong_peer_secret_is_refused(cluster: LocalCluster) -> None:
    with voters_client(cluster) as client:
        client.put("outsider/probe", 1)
        client.get("outsider/probe", consistency="linearizable")
    wait_until(lambda: "outsider/probe" in node_state(cluster, "r1"), 10.0,
               what="r1 has the probe write")
    status = raw_status(cluster, OUTSIDER)
    assert status["leader"] is None and status["connected_peers"] == []
    assert status["keys"] == 0 and status["applied_index"] <= 1
    for voter in VOTERS:
        assert OUTSIDER not in [r["id"] for r in raw_status(cluster, voter)["replicas"]]
    logs = "".join(Path(cluster.nodes[v].log_path).read_text(errors="replace") for v in VOTERS)
    assert "dropping a raft port connection" in logs


def test_killed_replica_restarts_and_catches_up(cluster: LocalCluster) -> None:
    leader = leader_of(cluster)
    cluster.nodes["r1"].kill()
    with voters_client(cluster) as client:
        for i in range(150):
            client.put(f"while-down/{i:03d}", i)
        client.delete("every/005")
    cluster.nodes["r1"].start()
    wait_until(lambda: same_data(cluster, "r1", leader), 30.0,
               what="the restarted replica holds every write made while it was down")
    wait_until(lambda: "r1" in [r["id"] for r in raw_status(cluster, leader)["replicas"]], 10.0,
               what="the leader lists the restarted replica again")
    # It snapshots like any node (pysyncobj's read-only node writes its own).
    wait_until(lambda: (cluster.nodes["r1"].data_dir / SNAPSHOT_NAME).is_file(), 10.0,
               what="the replica wrote a snapshot")


def test_replicas_never_count_for_quorum(cluster: LocalCluster) -> None:
    leader = leader_of(cluster)
    survivor = leader
    for voter in VOTERS:
        if voter != survivor:
            cluster.nodes[voter].kill()
    for node_id in (survivor, "r1"):
        with Client([endpoint(cluster, node_id)], token=cluster.token, timeout=3.0) as client:
            with pytest.raises(ConsensusStoreError):
                client.put("no-quorum/key", node_id, timeout=3.0)
    # The replicas still answer local reads of what they hold, and the write never applied.
    for replica in REPLICAS:
        state = node_state(cluster, replica)
        assert "while-down/149" in state and "no-quorum/key" not in state


def test_up_runs_and_supervises_replicas(tmp_path: Path) -> None:
    """``consensus-store up --nodes 3 --replicas 1``: the replica comes up beside the voters,
    holds their writes, and a client made from its config writes through the voters."""
    def free_base() -> int:
        for _ in range(50):
            base = random.randrange(20000, 40000)
            try:
                for port in (base + offset + i for offset in (0, 100, 200) for i in range(4)):
                    with socket.socket() as probe:
                        probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
        raise RuntimeError("no free port range")

    base = free_base()
    up = subprocess.Popen([sys.executable, "-m", "consensus_store", "up", "--nodes", "3",
                           "--replicas", "1", "--base-port", str(base), "--data-dir",
                           str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={**os.environ, "COLUMNS": "200",
                                          "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        assert up.stdout is not None
        wait_until(lambda: (lines.append(up.stdout.readline()) or "cluster up" in lines[-1]
                            or up.poll() is not None), 60.0, what="'cluster up' printed")
        assert "3 nodes and 1 read replica," in lines[-1], "".join(lines)
        replica_config = tmp_path / "config" / "replica1.toml"
        with Client.from_config(replica_config, protocol="http", timeout=10.0) as client:
            kv = client.put("up/key", "v")
            answer = client.request("get", {"key": "up/key", "consistency": "session"}, 10.0)
            assert answer["header"]["node"] == "replica1"
            assert answer["kv"]["mod_revision"] == kv.mod_revision
            status = client.status(f"http://127.0.0.1:{base + 103}")
            assert status.membership == "replica" and status.leader is not None
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        try:
            out, _ = up.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            out, _ = up.communicate()
    assert up.returncode == 0, "".join(lines) + out
