"""A cluster on three "hosts": network namespaces this test creates, each with its own
address (10.200.0.1-3), every node on the same default ports (7101 raft, 7201 HTTP, 7301
native), configs written by ``consensus-store init`` naming the hosts by address or by DNS
name (each namespace's own /etc/hosts) (issue #12, items 4 and 9).

The test process is outside those networks: it talks to the cluster through the CLI run in a
namespace (``ip netns exec``), as a client on one of the hosts would.  Skipped with the reason
where namespaces cannot be created (not root, no ``ip``, no permission).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from consensus_store.cli.main import main
from consensus_store.testing import netns

from .support import ClusterPool, wait_until

_REASON = netns.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
CLI_TIMEOUT_S = 30.0


def cli(hosts: netns.NamespaceHosts, position: int, *arguments: str) -> Any:
    """``consensus-store ARGUMENTS --json`` on host ``position``: the parsed output."""
    done = subprocess.run([*hosts.exec_prefix(position), sys.executable, "-m", "consensus_store",
                           *arguments, "--json", "--timeout", "3"],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 0, (arguments, done.returncode, done.stderr)
    return json.loads(done.stdout)


HOSTNAMES = ["db1.cluster.test", "db2.cluster.test", "db3.cluster.test"]


@pytest.mark.parametrize("by_name", [False, True], ids=["ip-addresses", "dns-names"])
def test_a_cluster_of_three_namespace_hosts(tmp_path: Path, cluster_pool: ClusterPool,
                                            capsys, by_name: bool) -> None:
    with netns.NamespaceHosts(3, hostnames=HOSTNAMES) as hosts:
        names = HOSTNAMES if by_name else hosts.addresses
        spec = ",".join(f"{node_id}={host}" for node_id, host in zip("abc", names))
        out = tmp_path / "configs"
        assert main(["init", "--nodes", spec, "--out", str(out),
                     "--data-root", str(tmp_path / "data")]) == 0
        assert names[2] in capsys.readouterr().out
        config = {name: str(out / f"{name}.toml") for name in "abc"}
        cluster = cluster_pool.launch([Path(config[name]) for name in "abc"], start=False)
        try:
            for position, node in enumerate(cluster.nodes.values()):
                node.wrapper = hosts.exec_prefix(position)
            cluster.start()
            run_the_cluster(cluster, hosts, config, names)
        finally:
            cluster.stop()            # before the namespaces go: processes hold them


def run_the_cluster(cluster: Any, hosts: netns.NamespaceHosts, config: dict[str, str],
                    names: list[str]) -> None:
    def settled() -> dict[str, Any] | None:
        exits = cluster.check_exits()
        assert not exits, f"a node exited: {exits}"
        statuses = cli(hosts, 0, "status", "--config", config["a"])
        leaders = {s["leader"] for s in statuses}
        if len(leaders) != 1 or None in leaders or any(s["role"] == "down" for s in statuses):
            return None
        return {s["id"]: s for s in statuses}
    statuses = wait_until(settled, 60.0, what="three nodes up, all following one leader")
    assert {i: s["addresses"]["raft"] for i, s in statuses.items()} == {
        node_id: f"{host}:7101" for node_id, host in zip("abc", names)}
    assert statuses["c"]["endpoint"].startswith(f"tcp://{names[2]}:7301")

    assert cli(hosts, 1, "put", "netns/greeting", "hello", "--config", config["b"])
    answer = cli(hosts, 2, "get", "netns/greeting", "--consistency", "linearizable",
                 "--config", config["c"])
    assert answer["value"] == "hello"

    leader = next(s["leader"] for s in statuses.values())
    others = [name for name in "abc" if name != leader]
    cluster.nodes[leader].kill()
    first = "abc".index(others[0])
    wait_until(lambda: cli(hosts, first, "put", "netns/after", "failover",
                           "--config", config[others[0]]), 30.0,
               what="a write after the leader's host lost its node",
               transient=(AssertionError, subprocess.TimeoutExpired))
    cluster.nodes[leader].start()
    own = "abc".index(leader)
    endpoint = f"http://{names[own]}:7201"    # its own node only, read locally
    wait_until(lambda: cli(hosts, own, "get", "netns/after", "--consistency", "local",
                           "--endpoints", endpoint, "--token", cluster.token
                           )["value"] == "failover", 30.0,
               what=f"restarted {leader} caught up", transient=(AssertionError,
                                                                subprocess.TimeoutExpired))
