"""Helpers for the integration tests: real node processes on 127.0.0.1.

Every cluster is started through ``ClusterPool.start`` so that it is always stopped by a fixture
finalizer (SIGCONT + SIGTERM, then SIGKILL by PID: only processes these tests started).  Tests
wait on conditions with ``wait_until`` (poll with a deadline), never with a fixed sleep.  The
per-node helpers and the poll loop are the package's (``consensus_store.testing.cluster`` and
``consensus_store.testing.polling``), re-exported here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from consensus_store.client import Client
from consensus_store.launcher import LocalCluster, write_cluster_configs
from consensus_store.testing.cluster import local_records, node_client
from consensus_store.testing.polling import wait_until

__all__ = ["ClusterPool", "append_toml", "followers", "full_local_state", "local_range",
           "node_client", "prefer_endpoint", "raw_post", "statuses", "wait_converged",
           "wait_until"]

# Clusters alive right now: their node logs are attached to the report of a failing test.
_ACTIVE: list[LocalCluster] = []


def append_toml(paths: list[Path], text: str) -> None:
    """Append TOML tables (e.g. ``[limits]``) to generated configs."""
    for path in paths:
        path.write_text(path.read_text() + "\n" + text.strip() + "\n")


def statuses(cluster: LocalCluster, timeout: float = 1.0) -> dict[str, Any]:
    """``/v1/status`` of every live node, by node id."""
    result = {}
    with cluster.client() as client:
        for node_id, node in cluster.nodes.items():
            if node.alive:
                result[node_id] = client.status(node.endpoint, timeout=timeout)
    return result


def followers(cluster: LocalCluster, leader: str) -> list[str]:
    return [node_id for node_id in cluster.nodes if node_id != leader]


def local_range(cluster: LocalCluster, node_id: str, prefix: str = "") -> dict[str, Any]:
    """{key: value} of ``prefix`` as one node sees it locally (no consensus round)."""
    return {kv.key: kv.value for kv in local_records(cluster, node_id, prefix)}


def full_local_state(cluster: LocalCluster, node_id: str) -> list[tuple]:
    """Every record (with revisions) one node holds locally."""
    return local_records(cluster, node_id)


def wait_converged(cluster: LocalCluster, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until every live node reports the same applied index and revision."""
    def same() -> dict[str, Any] | None:
        current = statuses(cluster)
        live = [n for n in cluster.nodes.values() if n.alive]
        if len(current) != len(live):
            return None
        marks = {(s.applied_index, s.revision) for s in current.values()}
        return current if len(marks) == 1 else None
    return wait_until(same, timeout, what="applied_index/revision equal on every node")


class ClusterPool:
    """Starts clusters under one directory; ``close`` stops every one of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clusters: list[LocalCluster] = []
        self._count = 0

    def write_configs(self, size: int = 3, *, name: str | None = None, extra_toml: str = "",
                      raft_table: dict[str, float] | None = None) -> list[Path]:
        base = self.root / (name or f"cluster{self._count}")
        self._count += 1
        paths = write_cluster_configs(base / "configs", size, raft_table=raft_table)
        if extra_toml:
            append_toml(paths, extra_toml)
        return paths

    def launch(self, paths: list[Path], *, start: bool = True,
               leader_timeout: float = 20.0) -> LocalCluster:
        """A LocalCluster of ``paths`` (all or some of a cluster's configs), stopped at close."""
        base = paths[0].parent.parent
        cluster = LocalCluster(paths, data_root=base / "data", log_dir=base / "logs")
        cluster.config_paths = list(paths)   # type: ignore[attr-defined]
        self.clusters.append(cluster)
        _ACTIVE.append(cluster)
        if start:
            cluster.start()
            cluster.wait_for_leader(timeout=leader_timeout)
        return cluster

    def start(self, size: int = 3, *, name: str | None = None, extra_toml: str = "",
              raft_table: dict[str, float] | None = None, start: bool = True,
              leader_timeout: float = 20.0) -> LocalCluster:
        paths = self.write_configs(size, name=name, extra_toml=extra_toml, raft_table=raft_table)
        return self.launch(paths, start=start, leader_timeout=leader_timeout)

    def close(self) -> None:
        errors = []
        for cluster in self.clusters:
            try:
                cluster.stop()
            except Exception as exc:  # noqa: BLE001 - stop the other clusters anyway
                errors.append(exc)
            if cluster in _ACTIVE:
                _ACTIVE.remove(cluster)
        if errors:
            raise errors[0]


def raw_post(cluster: LocalCluster, node_id: str, path: str, body: Any,
             timeout: float = 10.0) -> httpx.Response:
    """One HTTP request to one node, no retries (for protocol-level checks)."""
    return httpx.post(cluster.nodes[node_id].endpoint + path, json=body, timeout=timeout,
                      headers={"Authorization": f"Bearer {cluster.token}"})


def prefer_endpoint(client: Client, index: int, *, verify: bool = False) -> None:
    """Send the client's next requests to ``client.endpoints[index]``: what its failover does
    after an error on the current endpoint.  (Tests only: reaches into the client's state.)"""
    core = getattr(client, "_core", None)
    if core is not None and hasattr(core, "preferred"):
        core.preferred = index
    elif hasattr(client, "_preferred"):
        client._preferred = index   # type: ignore[attr-defined]
    else:
        raise AssertionError("Client keeps no preferred endpoint any more: update this helper")
    if verify:   # status() without an endpoint asks the preferred one
        answered = client.status(timeout=2.0).endpoint.rstrip("/")
        assert answered == client.endpoints[index].rstrip("/"), (answered, index)
