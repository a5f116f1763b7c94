"""``consensus-store member list | add | remove``: the cluster's membership, as ``etcdctl member``.

``member add --config NEW.toml`` reads the new node's id and addresses from its config (and,
as every client command's ``--config``, the endpoints and token: the new config's [[peers]] are
the current members); ``member add ID --raft-address A --api-address B [--native-address C]``
names them instead.  ``member remove ID`` (a running removed node stops by itself, exit code 3:
node/removal.py).  Exit 2 for a refused change (unknown id, id in use,
the leader itself, another change pending), as for any bad input.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, Callable

from rich.console import Console

from consensus_store.errors import InvalidRequest

ACTIONS = ("list", "add", "remove")


def add_parser(client_command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    sub = client_command("member", "the cluster's members: 'member list', 'member add --config "
                         "NEW.toml' (or ID --raft-address --api-address), 'member remove ID' "
                         "(admin token to change)")
    sub.add_argument("action", choices=ACTIONS)
    sub.add_argument("id", nargs="?", metavar="ID", help="add: the new node's id (without "
                     "--config); remove: the member to remove")
    sub.add_argument("--raft-address", help="add: the new node's raft HOST:PORT")
    sub.add_argument("--api-address", help="add: the new node's HTTP API HOST:PORT")
    sub.add_argument("--native-address", help="add: the new node's native HOST:PORT (optional)")


def new_member(args: argparse.Namespace) -> Any:
    """What ``member add`` adds: the --config file's node, or the fields given."""
    named = {"id": args.id, "raft_address": args.raft_address,
             "api_address": args.api_address, "native_address": args.native_address}
    if args.config is not None:
        if any(named.values()):
            raise InvalidRequest("member add takes either --config NEW.toml or ID with "
                                 "--raft-address and --api-address, not both")
        from consensus_store.config import load_config
        return load_config(args.config)
    if not args.id or not args.raft_address or not args.api_address:
        raise InvalidRequest("member add needs --config NEW.toml (the new node's config), or "
                             "ID --raft-address HOST:PORT --api-address HOST:PORT")
    return {k: v for k, v in named.items() if v is not None}


def learn_members(client: Any) -> None:
    """Before ``status`` and the dashboard: ask the live membership for nodes the client's
    config does not name (added since, and read replicas); the endpoints stay as they are
    when no node answers."""
    from consensus_store.errors import ConsensusStoreError
    try:
        client.sync_endpoints(timeout=2.0, read_replicas=True)
    except ConsensusStoreError:
        pass


def run_member(client: Any, args: argparse.Namespace, console: Any) -> None:
    if args.action == "list":
        if args.id is not None or args.raft_address or args.api_address:
            raise InvalidRequest("member list takes no ID or addresses")
        members = client.member_list(from_leader=True, timeout=args.timeout)
        _show(args, console, members, None)
    elif args.action == "add":
        member = new_member(args)
        members = client.add_member(member, timeout=args.timeout)
        added = member["id"] if isinstance(member, dict) else member.id
        _show(args, console, members, f"added {added}: start it (empty data dir, its [[peers]] "
                                      f"the members) if it is not running; it catches up from "
                                      f"the leader")
    else:
        if not args.id or args.raft_address or args.api_address or args.native_address:
            raise InvalidRequest("member remove takes one ID and no addresses")
        members = client.remove_member(args.id, timeout=args.timeout)
        _show(args, console, members, f"removed {args.id}: its node, if running, stops by "
                                      f"itself within seconds (exit code 3); clear its "
                                      f"data dir before it joins again")


def _show(args: argparse.Namespace, console: Any, members: list[Any], note: str | None) -> None:
    if args.json:
        print(json.dumps([dataclasses.asdict(m) for m in members]))
        return
    if note:
        print(note)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=120)     # a pipe: not rich's 80 columns, addresses whole
    console.print(members_table(members))


def members_table(members: list[Any]) -> Any:
    from rich.table import Table
    table = Table(title="members")
    for column in ("id", "membership", "connected", "match index", "raft", "api", "native"):
        table.add_column(column)
    for m in members:
        table.add_row(m.id, m.membership, "yes" if m.connected else "no",
                      "" if m.match_index is None else str(m.match_index), m.raft_address,
                      m.api_address, m.native_address or "")
    return table
