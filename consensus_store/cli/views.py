"""Pure functions from status objects to rich renderables (tested by rendering to text)."""
from __future__ import annotations

from typing import Any, Iterable

from rich.table import Table
from rich.text import Text

from consensus_store.models import KeyValue, Member, NodeStatus, Role

ROLE_STYLE = {Role.LEADER: "bold green", Role.FOLLOWER: "cyan", Role.CANDIDATE: "yellow",
              Role.DOWN: "bold red"}
_NUMERIC = ("term", "commit", "applied", "lag", "log", "keys")


def status_table(statuses: Iterable[NodeStatus], title: str = "consensus-store cluster") -> Table:
    """Every node: a down one under its id, with why it could not be asked."""
    table = Table(title=title)
    for column in ("node", "role", "votes", "term", "commit", "applied", "lag", "log", "leader",
                   "peers", "keys", "reachable"):
        table.add_column(column, justify="right" if column in _NUMERIC else "left")
    for status in statuses:
        role = Text(status.role.value, style=ROLE_STYLE[status.role])
        if status.role is Role.DOWN:
            table.add_row(status.id, role, status.votes, "", "", "", "", "", "", "", "",
                          Text(f"no: {status.reason or status.error or '?'}", style="red"))
            continue
        table.add_row(status.id, role, status.votes, str(status.term), str(status.commit_index),
                      str(status.applied_index), optional(status.lag), str(status.log_length),
                      status.leader or "-", ", ".join(status.connected_peers) or "-",
                      str(status.keys), "yes")
    return table


def addresses_table(statuses: Iterable[NodeStatus]) -> Table:
    """Where each node listens (a down node's addresses as the client's config or another
    node's status names them) and the endpoint this client used."""
    table = Table(title="addresses")
    for column in ("node", "raft", "api", "native", "endpoint"):
        table.add_column(column)
    for status in statuses:
        table.add_row(status.id, status.raft_address or "-", status.api_address or "-",
                      status.native_address or "-", status.endpoint)
    return table


def optional(value: object) -> str:
    return "-" if value is None else str(value)


def kv_table(kvs: Iterable[KeyValue]) -> Table:
    table = Table(show_header=True)
    for column in ("key", "value", "create_rev", "mod_rev", "version"):
        table.add_column(column)
    for kv in kvs:
        table.add_row(kv.key, _short(kv.value), str(kv.create_revision), str(kv.mod_revision),
                      str(kv.version))
    return table


def _short(value: object, width: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def list_table(title: str, items: Iterable[str]) -> Table:
    table = Table(title=f"{title}s")
    table.add_column(title)
    for item in items:
        table.add_row(item)
    return table


def members_table(group: str, members: Iterable[Member]) -> Table:
    table = Table(title=f"members of {group}")
    for column in ("member", "node", "joined at", "session", "meta"):
        table.add_column(column)
    for m in members:
        table.add_row(m.id, m.node, str(m.revision), str(m.session), _short(m.meta))
    return table


def names_table(names: Iterable[dict[str, Any]]) -> Table:
    table = Table(title="registered names")
    for column in ("name", "value", "node", "session"):
        table.add_column(column)
    for n in names:
        table.add_row(n["name"], _short(n.get("value")), n.get("node", ""), str(n["session"]))
    return table


def locks_table(locks: Iterable[dict[str, Any]]) -> Table:
    table = Table(title="locks")
    for column in ("lock", "holder session", "token", "owner", "waiting"):
        table.add_column(column)
    for lock in locks:
        holder = lock["holder"] or {}
        table.add_row(lock["name"], str(holder.get("session", "-")), str(holder.get("token", "-")),
                      _short(holder.get("owner")), str(len(lock["waiters"])))
    return table


def election_table(state: dict[str, Any]) -> Table:
    leader = state.get("leader") or {}
    table = Table(title=f"election {state['name']}: leader {leader.get('member', '-')} "
                        f"(token {leader.get('token', '-')})")
    for column in ("candidate", "priority", "node", "since", "leader"):
        table.add_column(column)
    for c in state["candidates"]:
        table.add_row(c["member"], str(c["priority"]), c["node"], str(c["revision"]),
                      "yes" if c["member"] == leader.get("member") else "")
    return table
