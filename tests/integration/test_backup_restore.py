"""Backup and restore with real node processes: ``snapshot save`` from a follower, ``snapshot
restore`` into a new 3-node cluster (every key, revision and coordination record equal, new
writes continue above the backup's revision), a save under a write load consistent at one
revision, and refusals (damaged or truncated file, non-empty data dir, non-admin token)."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from consensus_store.client import Client
from consensus_store.errors import ConsensusStoreError, InvalidRequest
from consensus_store.launcher import LocalCluster
from consensus_store import backup_file as backup
from consensus_store.state.digest import parts_of
from consensus_store.state.machine import SNAPSHOT_FORMAT
from consensus_store.testing.cluster import node_digest

from .support import ClusterPool, followers, node_client, wait_converged, wait_until

CLI = [sys.executable, "-m", "consensus_store"]
COORDINATION_READS = [("groups_list", {}), ("groups_members", {"group": "workers"}),
                      ("names_list", {}), ("names_whereis", {"name": "svc/db"}),
                      ("locks_list", {}), ("locks_status", {"name": "L"}),
                      ("elections_leader", {"name": "E"})]
LOAD_WRITERS, LOAD_KEYS, LOAD_MAX_WRITES, LOAD_MAX_S = 3, 25, 3000, 30.0


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def read_file(path: Path) -> tuple[backup.BackupHeader, dict[str, Any]]:
    with open(path, "rb") as file:
        return backup.decode(file, str(path))


def fill(client: Client) -> None:
    """Keys with many revisions, deletes and a txn; a session with an ephemeral key, a group,
    a name, a lock with a waiter, an election."""
    for round_ in range(3):
        for i in range(60):
            client.put(f"k/{i:03d}", {"i": i, "round": round_})
    for i in range(0, 60, 7):
        client.delete(f"k/{i:03d}")
    client.delete_prefix("k/05")
    client.request("txn", {"compare": [], "success": [{"op": "put", "key": "t/a", "value": 1},
                                                        {"op": "put", "key": "t/b", "value": 2}],
                           "failure": []}, 10.0)
    opened = [client.request("session_open", {"ttl": 120}, 10.0) for _ in range(2)]
    mine = [{"session": o["session"]["id"], "session_key": o["session_key"]} for o in opened]
    client.request("put", {"key": "eph/one", "value": "bound", **mine[0]}, 10.0)
    client.request("group_create", {"group": "workers"}, 10.0)
    client.request("group_join", {"group": "workers", "member": "w1", "meta": {"pid": 1},
                                  **mine[0]}, 10.0)
    client.request("name_register", {"name": "svc/db", "value": "10.0.0.1", **mine[0]}, 10.0)
    client.request("lock_acquire", {"name": "L", "owner": "first", **mine[0]}, 10.0)
    client.request("lock_acquire", {"name": "L", "owner": "second", **mine[1]}, 10.0)
    client.request("election_campaign", {"name": "E", "member": "m1", "meta": None,
                                         "priority": 1, **mine[1]}, 10.0)


def records(client: Client) -> dict[str, Any]:
    """Every key with its revisions, the coordination views and the sessions, read locally."""
    kvs = client.range("", consistency="local").kvs
    found: dict[str, Any] = {"kv": [(kv.key, kv.value, kv.create_revision, kv.mod_revision,
                                     kv.version) for kv in kvs]}
    for op, body in COORDINATION_READS:
        answer = client.request(op, {**body, "consistency": "local"}, 10.0)
        found[op] = {k: v for k, v in answer.items() if k not in ("header", "read_index")}
    found["sessions"] = sorted((s["id"], s["ttl"]) for s in
                               client.request("sessions", {}, 10.0)["sessions"])
    return found


def restore_cluster(pool: ClusterPool, file: Path, name: str) -> LocalCluster:
    """A new 3-node cluster whose every node is seeded from ``file`` with the CLI (the three
    at once: the free ports picked for the configs stay unbound meanwhile)."""
    paths = pool.write_configs(3, name=name)
    cluster = pool.launch(paths, start=False)
    restores = [subprocess.Popen([*CLI, "snapshot", "restore", str(file), "--config", str(path),
                                  "--data-dir", str(node.data_dir)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
                for path, node in zip(paths, cluster.nodes.values())]
    for restore in restores:
        out, err = restore.communicate(timeout=60)
        assert restore.returncode == 0, err
        assert out.startswith("restored revision"), out
    cluster.start()
    cluster.wait_for_leader(timeout=30.0)
    return cluster


def test_round_trip_from_a_follower_into_a_new_cluster(cluster_pool: ClusterPool,
                                                       tmp_path: Path) -> None:
    source = cluster_pool.start(3, name="source")
    leader = source.wait_for_leader()
    with source.client() as client:
        fill(client)
    marks = wait_converged(source)
    follower = followers(source, leader)[0]
    with node_client(source, follower) as client:
        before = records(client)
    digest, index, parts = node_digest(source, follower)

    file = tmp_path / "backup.csb"
    done = cli("snapshot", "save", str(file), "--endpoints", source.nodes[follower].endpoint,
               "--token", source.token, "--json")
    assert done.returncode == 0, done.stderr
    header, state = read_file(file)
    assert json.loads(done.stdout) == header.to_json()
    # (an election meanwhile may add a no-op entry: the index may grow, the state may not)
    assert header.node == follower and header.applied_index >= index
    assert parts_of({**state, "format": SNAPSHOT_FORMAT}) == parts
    assert header.revision == marks[follower].revision and header.sessions == 2
    saved = {key: record for key, record in state["keyspace"]["kv"]}
    assert [(k, *saved[k]) for k, *_ in before["kv"]] == before["kv"]
    assert len(saved) == len(before["kv"]) == header.keys
    assert sum(key.startswith("_cs/") for key in saved) >= 5    # coordination records
    assert oct(file.stat().st_mode & 0o777) == "0o600"

    restored = restore_cluster(cluster_pool, file, "restored")
    for node_id in restored.nodes:
        with node_client(restored, node_id) as client:
            assert wait_until(lambda: records(client) == before, 15.0,
                              what=f"{node_id} holds the backup's records")
        restored_digest, restored_index, restored_parts = node_digest(restored, node_id)
        assert restored_parts == parts and restored_digest == digest
        assert restored_index >= index

    with restored.client() as client:
        kv = client.put("after/restore", 1)
        assert kv.mod_revision > header.applied_index >= header.revision
        old = next(k for k in before["kv"] if k[0] == "k/001")
        again = client.put("k/001", "new")
        assert again.create_revision == old[2] and again.version == old[4] + 1
        assert again.mod_revision > kv.mod_revision


class Writers:
    """A few threads overwriting a few keys each, one write at a time, remembering every
    acknowledged (key, value, mod_revision) and every key whose last write's outcome is
    unknown."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.acked: list[tuple[str, int, int]] = []
        self.unknown: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(w,), daemon=True)
                        for w in range(LOAD_WRITERS)]

    def run(self, writer: int) -> None:
        started = time.monotonic()
        with self.cluster.client(timeout=10.0) as client:
            for i in range(LOAD_MAX_WRITES):
                if self.stop.is_set() or time.monotonic() - started > LOAD_MAX_S:
                    return
                key = f"load/{writer}/{i % LOAD_KEYS:02d}"
                try:
                    kv = client.put(key, i)
                except ConsensusStoreError:
                    with self.lock:
                        self.unknown.add(key)
                    continue
                with self.lock:
                    self.acked.append((key, i, kv.mod_revision))

    def __enter__(self) -> "Writers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30.0)


def assert_consistent_at(state: dict[str, Any], index: int,
                         acked: list[tuple[str, int, int]], unknown: set[str]) -> int:
    """Every load key in ``state`` is as the last acknowledged write at or below ``index``
    left it, and absent if there was none; returns how many keys were checked."""
    held = {key: record for key, record in state["keyspace"]["kv"] if key.startswith("load/")}
    last: dict[str, tuple[int, int]] = {}
    for key, value, revision in sorted(acked, key=lambda a: a[2]):
        if revision <= index:
            last[key] = (value, revision)
    later = {key for key, _, revision in acked if revision > index}
    checked = 0
    for key in {*held, *last, *later} - unknown:
        if key in last:
            value, revision = last[key]
            assert key in held, (key, index)
            assert (held[key][0], held[key][2]) == (value, revision), (key, held[key], index)
        else:
            assert key not in held, (key, held[key], index)
        checked += 1
    return checked


def test_save_under_a_write_load_is_consistent_at_one_revision(module_pool: ClusterPool,
                                                               tmp_path: Path) -> None:
    cluster = module_pool.start(3, name="loaded")
    leader = cluster.wait_for_leader()
    follower = followers(cluster, leader)[0]
    native = f"tcp://{cluster.nodes[follower].config.native_address}"
    headers = []
    with Writers(cluster) as writers:
        assert wait_until(lambda: len(writers.acked) > 100, 20.0, what="writes acknowledged")
        for round_ in range(3):
            file = tmp_path / f"load{round_}.csb"
            # a native endpoint: the client finds the node's HTTP address from its status
            with Client([native], token=cluster.token) as client:
                headers.append((client.snapshot_save(file), file))
            count = len(writers.acked)
            assert wait_until(lambda: len(writers.acked) > count + 30, 20.0,
                              what="more writes acknowledged")
    # a write that timed out on a loaded machine has no known revision: its key is skipped
    assert len(writers.unknown) < LOAD_WRITERS * LOAD_KEYS // 2, writers.unknown
    indexes = set()
    for header, file in headers:
        assert header.node == follower
        _, state = read_file(file)
        assert assert_consistent_at(state, header.applied_index, writers.acked,
                                    writers.unknown) >= LOAD_KEYS
        indexes.add(header.applied_index)
        mods = [record[2] for _, record in state["keyspace"]["kv"]]
        assert max(mods) <= header.revision <= header.applied_index
    assert len(indexes) == 3      # taken while the load ran: three different points


def test_refusals(module_pool: ClusterPool, tmp_path: Path) -> None:
    cluster = module_pool.start(3, name="refusals")
    with cluster.client() as client:
        for i in range(50):
            client.put(f"r/{i}", "x" * i)
        good = tmp_path / "good.csb"
        client.snapshot_save(good)
        local = client.snapshot_save(tmp_path / "local.csb", consistency="local")
        assert local.keys == 50 and read_file(tmp_path / "local.csb")[0] == local
        with pytest.raises(InvalidRequest):
            client.snapshot_save(tmp_path / "no.csb", consistency="eventual")
    native = [f"tcp://{node.config.native_address}" for node in cluster.nodes.values()]
    with Client(native, token=cluster.token) as client:
        with pytest.raises(InvalidRequest, match="stream"):       # the native protocol
            client.request("snapshot", {}, 5.0)
    paths = module_pool.write_configs(1, name="target")
    target = tmp_path / "target-data"

    data = good.read_bytes()
    middle = data.index(b'"r/25","xxx') + 9        # one byte of a value: only the hash sees it
    flipped = data[:middle] + b"y" + data[middle + 1:]
    cases = {"flipped": (flipped, "SHA-256 mismatch"),
             "truncated": (data[:len(data) * 2 // 3], "truncated"),
             "no trailer": (data[:data.rindex(b"sha256 ")], "truncated"),
             "not a backup": (b"hello\n", "not a consensus-store backup"),
             "empty": (b"", "no header")}
    for name, (content, reason) in cases.items():
        bad = tmp_path / f"{name}.csb"
        bad.write_bytes(content)
        done = cli("snapshot", "restore", str(bad), "--config", str(paths[0]),
                   "--data-dir", str(target))
        assert done.returncode == 2, (name, done)
        assert len(done.stderr.splitlines()) == 1 and reason in done.stderr, (name, done.stderr)
        assert not target.exists() or not os.listdir(target), name   # nothing written

    target.mkdir()
    (target / "raft.journal").write_bytes(b"x")
    done = cli("snapshot", "restore", str(good), "--config", str(paths[0]),
               "--data-dir", str(target))
    assert done.returncode == 2 and "not empty" in done.stderr, done
    assert len(done.stderr.splitlines()) == 1

    # a readwrite token: 403 with a JSON error over HTTP; the CLI says so in one line
    tokens = paths[0].parent / "tokens.toml"
    tokens.write_text(tokens.read_text() + '[[tokens]]\nname = "app"\ntoken = '
                      '"app-token-0123456789abcdef"\nrole = "readwrite"\n')
    endpoint = cluster.endpoints[0]
    source_tokens = Path(cluster.nodes[next(iter(cluster.nodes))].config.tokens_file)
    source_tokens.write_text(source_tokens.read_text() + '[[tokens]]\nname = "app"\ntoken = '
                             '"app-token-0123456789abcdef"\nrole = "readwrite"\n')
    headers = {"Authorization": "Bearer app-token-0123456789abcdef"}

    def refused() -> httpx.Response | None:
        response = httpx.post(endpoint + "/v1/snapshot", json={}, headers=headers, timeout=10)
        return response if response.status_code == 403 else None
    response = wait_until(refused, 15.0, what="the readwrite token is known and refused")
    assert response.json()["error"] == "forbidden"
    assert response.headers["content-type"].startswith("application/json")
    done = cli("snapshot", "save", str(tmp_path / "no.csb"), "--endpoints", endpoint,
               "--token", "app-token-0123456789abcdef")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done
    assert "forbidden" in done.stderr and not (tmp_path / "no.csb").exists()
    done = cli("snapshot", "save", str(tmp_path / "missing" / "x.csb"), "--endpoints", endpoint,
               "--token", cluster.token)
    assert done.returncode == 2 and "cannot write the backup" in done.stderr, done
    assert len(done.stderr.splitlines()) == 1
    bad = httpx.post(endpoint + "/v1/snapshot", json={"consistency": "eventual"},
                     headers={"Authorization": f"Bearer {cluster.token}"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"


def test_embedded_node_and_tls(cluster_pool: ClusterPool, tmp_path: Path) -> None:
    """``Node.snapshot_save`` of a single-node embedded cluster; ``Client.snapshot_save`` over
    https with client certificates (``Client.from_config``: native tls:// endpoints)."""
    from consensus_store.config import load_config
    from consensus_store.launcher import write_cluster_configs
    from consensus_store.node import Node
    from consensus_store.state import StateMachine
    from consensus_store.state.digest import digest_of, parts_of

    single = cluster_pool.write_configs(1, name="single")
    node = Node(load_config(single[0]))
    try:
        node.start()
        wait_until(lambda: node.status()["role"] == "leader", 20.0, what="a leader")
        for i in range(30):
            node.put(f"emb/{i}", i)
        assert gc.isenabled()
        header = node.snapshot_save(tmp_path / "embedded.csb")
        assert gc.isenabled()            # paused during the copy only
        _, state = read_file(tmp_path / "embedded.csb")
        machine = StateMachine()
        machine.__setstate__(state)
        assert digest_of(parts_of(machine.plain_state())) == node.digest()
        assert header.keys == 30 and header.node == "n1"
    finally:
        node.stop()

    paths = write_cluster_configs(tmp_path / "tls", 3, tls=True, client_certs=True)
    with LocalCluster(paths, data_root=tmp_path / "tls" / "data") as cluster:
        cluster.wait_for_leader(timeout=30.0)
        with Client.from_config(paths[1]) as client:
            assert client.endpoints[0].startswith("tls://")
            client.put("secure", 1)
            header = client.snapshot_save(tmp_path / "tls.csb")
        assert header.keys == 1 and read_file(tmp_path / "tls.csb")[0] == header


def test_a_dead_node_passes_the_save_on(cluster_pool: ClusterPool, tmp_path: Path) -> None:
    cluster = cluster_pool.start(3, name="failover")
    leader = cluster.wait_for_leader()
    dead, alive = followers(cluster, leader)
    with cluster.client() as client:
        client.put("before", 1)
    cluster.nodes[dead].kill()
    endpoints = [cluster.nodes[dead].endpoint, cluster.nodes[alive].endpoint]
    with Client(endpoints, token=cluster.token, timeout=5.0) as client:
        header = client.snapshot_save(tmp_path / "failover.csb")
    assert header.node == alive and header.keys == 1
    assert not (tmp_path / "failover.csb.part").exists()
