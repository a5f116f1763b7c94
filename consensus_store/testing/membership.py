"""Test tooling for membership changes: configs of a cluster plus spare nodes to add later, and
a view of the nodes that are members now for the fault suite's checks (checks.py).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from consensus_store.client import Client
from consensus_store.launcher import LocalCluster, write_cluster_configs


def drop_peers(path: Path, ids: Iterable[str]) -> None:
    """Remove the ``[[peers]]`` tables of ``ids`` from a config written by
    ``write_cluster_configs`` (each table ends with a blank line)."""
    text = path.read_text()
    for node_id in ids:
        text = re.sub(r'\[\[peers\]\]\nid = "%s"\n(?:[^\n]+\n)*\n' % re.escape(node_id), "",
                      text)
    path.write_text(text)


def configs_with_spares(directory: Path, voters: int, spares: int,
                        raft_table: dict[str, float] | None = None
                        ) -> tuple[list[Path], list[Path]]:
    """Configs of ``voters`` nodes n1..nN that know only each other, and of ``spares`` more
    (n(N+1)...) whose [[peers]] are those voters: nodes to add with ``member add``."""
    paths = write_cluster_configs(directory, voters + spares, raft_table=raft_table)
    voter_ids = [f"n{i + 1}" for i in range(voters)]
    spare_ids = [f"n{voters + i + 1}" for i in range(spares)]
    for path in paths:
        own = path.stem
        drop_peers(path, [s for s in spare_ids if s != own])
    return paths[:voters], paths[voters:]


class Members:
    """The nodes of ``clusters`` that are members now, shaped as the fault checks expect of a
    cluster (``ids``, ``nodes``, ``token``, ``statuses``)."""

    def __init__(self, clusters: Iterable[LocalCluster], ids: Iterable[str]) -> None:
        every: dict[str, Any] = {}
        for cluster in clusters:
            every.update(cluster.nodes)
            self.token = cluster.token
        self.ids = list(ids)
        self.nodes = {node_id: every[node_id] for node_id in self.ids}

    def client(self, **options: Any) -> Client:
        return Client([self.nodes[n].endpoint for n in self.ids], token=self.token, **options)

    def statuses(self, timeout: float = 1.0, node_ids: Iterable[str] | None = None
                 ) -> dict[str, Any]:
        wanted = list(node_ids or self.ids)
        with Client([self.nodes[n].endpoint for n in wanted], token=self.token) as client:
            return {s.id: s for s in client.cluster_status(timeout=timeout)
                    if s.error is None and s.id in wanted}
