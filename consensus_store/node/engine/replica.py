"""Read replicas: pysyncobj's read-only nodes, as the voters and the replica itself see them.

A replica is ``SyncObj(None, [every voter])`` (runner.py): it dials each voter and announces
itself as read-only, named by its id (peer_connection.py, ``REPLICA_PREFIX``).  The leader
replicates to it like to a follower but leaves its match index out of commits and ReadIndex
rounds, and it never votes or campaigns.  docs/replicas.md has the operator's view.

Private pysyncobj names used (pinned 0.3.17): ``_SyncObj__raftMatchIndex``,
``_SyncObj__leaderCommitIndex``; the transport's ``_connections``.  Runs on the node's loop.
"""
from __future__ import annotations

from typing import Any

from pysyncobj.tcp_connection import CONNECTION_STATE


def connected_replicas(store: Any, transport: Any) -> list[dict[str, Any]]:
    """The replicas connected to this voter, by id, with the API endpoint and native address
    each announced (None if none).  On the leader each has the index it has
    acknowledged (``match_index``) and ``lag``, the leader's commit index minus that index;
    elsewhere both are None (only the leader tracks them)."""
    leading = store._isLeader()
    commit, match = store.raftCommitIndex, store._SyncObj__raftMatchIndex
    announced: dict[Any, dict[str, str | None]] = getattr(transport, "replicas_announced", {})
    found = []
    for node in store.readonlyNodes:
        connection = transport._connections.get(node)
        if connection is None or connection.state != CONNECTION_STATE.CONNECTED:
            continue
        acked = match.get(node) if leading else None
        said = announced.get(node, {})
        found.append({"id": said.get("id") or f"readonly-{node.id}",
                      "endpoint": said.get("endpoint"),
                      "native_address": said.get("native_address"), "match_index": acked,
                      "lag": max(0, commit - acked) if acked is not None else None})
    return sorted(found, key=lambda replica: replica["id"])


def replica_lag(store: Any) -> int | None:
    """On a replica: the last commit index the leader sent minus what this replica has
    applied (None until a leader has been heard from)."""
    leader_commit = store._SyncObj__leaderCommitIndex
    if leader_commit is None or store._getLeader() is None:
        return None
    return max(0, leader_commit - store.raftLastApplied)
