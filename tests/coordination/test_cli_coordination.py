"""consensus-store groups | members | names | locks | leader, with and without --json."""
from __future__ import annotations

import json
import subprocess
import sys

from consensus_store.launcher import LocalCluster


def cli(cluster: LocalCluster, *argv: str) -> subprocess.CompletedProcess:
    endpoints = ",".join(cluster.endpoints)
    return subprocess.run([sys.executable, "-m", "consensus_store", *argv, "--endpoints",
                           endpoints, f"--token={cluster.token}"], capture_output=True, text=True,
                          timeout=60)


def test_cli_shows_every_primitive(cluster: LocalCluster) -> None:
    with cluster.client(session_ttl=5) as client:
        client.groups.create("cli-pool")
        member = client.groups.join("cli-pool", member="w1", meta={"port": 80})
        client.register_name("cli-name", {"pid": 7})
        lock = client.lock("cli-lock", owner="me")
        assert lock.acquire(timeout=10)
        leader = client.election("cli-election").campaign("cand-1", priority=2, timeout=10)

        groups = json.loads(cli(cluster, "groups", "--json").stdout)
        assert "cli-pool" in groups
        members = json.loads(cli(cluster, "members", "cli-pool", "--json").stdout)
        assert [(m["id"], m["meta"], m["revision"]) for m in members] == \
            [("w1", {"port": 80}, member.revision)]
        names = json.loads(cli(cluster, "names", "--json").stdout)
        assert {"name": "cli-name", "value": {"pid": 7}}.items() <= \
            next(n for n in names if n["name"] == "cli-name").items()
        locks = json.loads(cli(cluster, "locks", "--json").stdout)
        held = next(entry for entry in locks if entry["name"] == "cli-lock")
        assert held["holder"]["token"] == lock.token and held["holder"]["owner"] == "me"
        election = json.loads(cli(cluster, "leader", "cli-election", "--json").stdout)
        assert election["leader"]["member"] == "cand-1"
        assert election["leader"]["token"] == leader.token

        for argv in (["groups"], ["members", "cli-pool"], ["names"], ["locks"],
                     ["leader", "cli-election"]):
            done = cli(cluster, *argv)
            assert done.returncode == 0, done.stderr
            assert done.stderr == ""
        assert "cand-1" in cli(cluster, "leader", "cli-election").stdout
        lock.release()
