"""Pure functions from status objects to rich renderables (tested by rendering to text)."""
from __future__ import annotations

from typing import Iterable

from rich.table import Table
from rich.text import Text

from consensus_store.models import KeyValue, NodeStatus, Role

_ROLE_STYLE = {Role.LEADER: "bold green", Role.FOLLOWER: "cyan", Role.CANDIDATE: "yellow",
               Role.DOWN: "bold red"}


def status_table(statuses: Iterable[NodeStatus], title: str = "consensus-store cluster") -> Table:
    table = Table(title=title)
    for column in ("node", "role", "term", "commit", "applied", "log", "leader", "peers",
                   "keys", "reachable"):
        table.add_column(column, justify="right" if column in ("term", "commit", "applied",
                                                                "log", "keys") else "left")
    for status in statuses:
        role = Text(status.role.value, style=_ROLE_STYLE[status.role])
        if status.role is Role.DOWN:
            table.add_row(status.id, role, "", "", "", "", "", "", "",
                          Text(f"no: {status.endpoint}", style="red"))
            continue
        table.add_row(status.id, role, str(status.term), str(status.commit_index),
                      str(status.applied_index), str(status.log_length), status.leader or "-",
                      ", ".join(status.connected_peers) or "-", str(status.keys), "yes")
    return table


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
