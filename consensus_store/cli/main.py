"""``consensus-store``: run nodes, start the local cluster, read and write from the shell.

Exit codes: 0 success; 1 the operation failed (not found, unavailable, compare failed);
2 bad usage, input or config (one line on stderr, never a traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from consensus_store.errors import ConfigError, ConsensusStoreError, InvalidRequest

EXIT_FAILED, EXIT_USAGE = 1, 2
LOCAL_CONFIG_DIR = Path("cluster_configs") / "local"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="consensus-store", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    node = commands.add_parser("node", help="run one node from its TOML config")
    node.add_argument("--config", required=True, type=Path)
    node.add_argument("--data-dir", type=Path, help="override the config's data_dir")

    repair = commands.add_parser("repair", help="cut a torn journal tail left by a crash "
                                 "(refuses any other damage)")
    repair.add_argument("--data-dir", required=True, type=Path, help="the node's data dir")

    up = commands.add_parser("up", help="run a local cluster in the foreground, restarting "
                             "nodes that exit")
    up.add_argument("--config-dir", type=Path, help=f"default: {LOCAL_CONFIG_DIR}")
    up.add_argument("--data-dir", type=Path,
                    help="where nodes keep data, one folder per node (default: each config's "
                         "data_dir, ~/.local/share/consensus-store/local/NODE; with --nodes N: "
                         "~/.local/share/consensus-store/up-N, configs in its config/)")
    up.add_argument("--nodes", type=int, choices=(1, 3, 5),
                    help="run an N-node cluster from configs generated in the data dir "
                         "(fresh peer secret and admin token) instead of --config-dir")
    up.add_argument("--replicas", type=int, default=0, metavar="M",
                    help="with --nodes: also run M read replicas (non-voting, serve local and "
                         "session reads; default 0)")
    up.add_argument("--no-restart", action="store_true",
                    help="leave a node that exits down (default: restart it with back-off)")
    up.add_argument("--base-port", type=int, default=7101,
                    help="with --nodes: raft ports from here, HTTP +100, native +200 "
                         "(default 7101)")

    _init_parser(commands)

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--endpoints", help="comma-separated API URLs: http(s)://HOST:PORT or "
                         "tcp://, tls://HOST:PORT (env CONSENSUS_STORE_ENDPOINTS; default: the "
                         "local cluster)")
        sub.add_argument("--cacert", type=Path, help="PEM file of the CA that signed the nodes' "
                         "certificates, for https:// and tls:// (env CONSENSUS_STORE_CACERT; "
                         "default: the config's tls.ca_file, else the system's)")
        sub.add_argument("--token", help="client token (env CONSENSUS_STORE_TOKEN)")
        sub.add_argument("--config", type=Path, help="take endpoints and token from a node config "
                         "(env CONSENSUS_STORE_CONFIG)")
        sub.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    put = client_command("put", "set a key")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--value-json", action="store_true", help="parse VALUE as JSON")
    get = client_command("get", "read a key")
    get.add_argument("key")
    _consistency(get)
    delete = client_command("delete", "delete a key (or every key under --prefix)")
    delete.add_argument("key")
    delete.add_argument("--prefix", action="store_true", help="KEY is a prefix")
    range_ = client_command("range", "list keys under a prefix")
    range_.add_argument("prefix", nargs="?", default="")
    range_.add_argument("--limit", type=int, default=0)
    _consistency(range_)
    client_command("groups", "list process groups")
    members = client_command("members", "list a group's members")
    members.add_argument("group")
    from consensus_store.cli import member
    member.add_parser(client_command)     # the cluster's own members (cli/member.py)
    client_command("names", "list registered names")
    client_command("locks", "list locks with holder, fencing token and waiters")
    client_command("sessions", "list open sessions: id, TTL, node, keys owned (admin token)")
    leader = client_command("leader", "show an election's leader and candidates; 'leader "
                            "transfer [ID]' moves Raft leadership to voter ID (default: the "
                            "most caught-up one; admin token)")
    leader.add_argument("name", help="an election's name, or the word transfer")
    leader.add_argument("target", nargs="?", metavar="ID",
                        help="with transfer: the node to hand leadership to")
    status = client_command("status", "show every node: role, votes, term, indexes, lag, "
                            "addresses (a node that cannot be reached: under its id, role down, "
                            "and why)")
    status.add_argument("--watch", action="store_true", help="the live dashboard (q quits); with "
                        "--json: one JSON array of every node's status per line")
    _interval(status)
    dashboard = client_command("dashboard", "live full-screen view of the cluster: nodes, rates, "
                               "groups, elections, locks, names, sessions, events (q quits, "
                               "p pauses, tab moves the focus)")
    dashboard.add_argument("--once", action="store_true", help="print one frame and exit")
    _interval(dashboard)
    from consensus_store.cli import snapshot
    snapshot.add_arguments(client_command("snapshot", "save FILE: back up the state of the node "
                                          "reached (admin token); restore FILE --config "
                                          "NODE.toml: seed a new cluster's node from it"))
    return parser


def _init_parser(commands: Any) -> None:
    from consensus_store.cli import init
    sub = commands.add_parser("init", help="write the configs of a cluster on real hosts: one "
                              "per node, a fresh peer secret and an admin token (files 0600)")
    sub.add_argument("--nodes", required=True, metavar="ID=HOST,...",
                     help="e.g. a=db1.example.com,b=10.0.0.2,c=[fd00::3]")
    sub.add_argument("--out", required=True, type=Path, help="directory to write them into")
    sub.add_argument("--raft-port", type=int, default=init.DEFAULT_RAFT_PORT,
                     help=f"on every host (default {init.DEFAULT_RAFT_PORT})")
    sub.add_argument("--api-port", type=int, default=init.DEFAULT_API_PORT,
                     help=f"HTTP API, on every host (default {init.DEFAULT_API_PORT})")
    sub.add_argument("--native-port", type=int, default=init.DEFAULT_NATIVE_PORT,
                     help=f"native protocol, on every host (default {init.DEFAULT_NATIVE_PORT})")
    sub.add_argument("--data-root", type=Path, default=init.DEFAULT_DATA_ROOT,
                     help="each node's data_dir is DATA_ROOT/ID "
                          f"(default {init.DEFAULT_DATA_ROOT})")
    sub.add_argument("--force", action="store_true", help="write into a non-empty --out")


def _interval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=_positive_seconds, default=0.5,
                        help="seconds between refreshes (default 0.5)")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0.05 and 3600 seconds")
    return value


def _consistency(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consistency", choices=("local", "session", "linearizable"),
                        default="session")


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "node":
            from consensus_store.cli.run_node import run_node
            return run_node(args.config, args.data_dir)
        if args.command == "repair":
            return _repair(args.data_dir)
        if args.command == "init":
            from consensus_store.cli.init import Ports, run_init
            run_init(args.nodes, args.out, force=args.force, data_root=args.data_root,
                     ports=Ports(args.raft_port, args.api_port, args.native_port))
            return 0
        if args.command == "up":
            from consensus_store.cli.up import run_up
            return run_up(args.config_dir, args.data_dir, nodes=args.nodes,
                          restart=not args.no_restart, base_port=args.base_port,
                          default_config_dir=_local_config_dir, replicas=args.replicas)
        if args.command == "snapshot":
            from consensus_store.cli.snapshot import run
            return run(args, _make_client)
        return _run_client_command(args)
    except (ConfigError, InvalidRequest) as exc:
        print(f"consensus-store: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except ConsensusStoreError as exc:
        print(f"consensus-store: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): no traceback, and none at exit when Python
        # flushes stdout into the closed pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _repair(data_dir: Path) -> int:
    """One line per thing removed; a refusal is a ConfigError (exit 2, one line)."""
    from consensus_store.node.engine.repair import repair_data_dir
    removed = repair_data_dir(data_dir)
    for line in removed:
        print(line)
    if not removed:
        print(f"nothing to repair in {data_dir}")
    return 0


def _local_config_dir() -> Path:
    """cluster_configs/local from the working directory, else from the source checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / LOCAL_CONFIG_DIR / "node1.toml").is_file():
            return base / LOCAL_CONFIG_DIR
    raise ConfigError(f"cannot find {LOCAL_CONFIG_DIR}; pass --config-dir or --config")


def _make_client(args: argparse.Namespace) -> Any:
    from consensus_store.client import Client
    config = args.config or os.environ.get("CONSENSUS_STORE_CONFIG")
    endpoints = args.endpoints or os.environ.get("CONSENSUS_STORE_ENDPOINTS")
    token = args.token or os.environ.get("CONSENSUS_STORE_TOKEN")
    cacert = args.cacert or os.environ.get("CONSENSUS_STORE_CACERT") or None
    options: dict[str, Any] = {"timeout": args.timeout}
    if cacert is not None:
        options["cacert"] = cacert
    if endpoints:
        return Client([e.strip() for e in endpoints.split(",") if e.strip()], token=token,
                      **options)
    if config is None:
        config = _local_config_dir() / "node1.toml"
    if token:   # the config's endpoints and TLS settings, another token
        options["token"] = token
    return Client.from_config(config, **options)


def _run_client_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from consensus_store.cli import views
    console = Console()
    with _make_client(args) as client:
        if args.command == "put":
            value: Any = args.value
            if args.value_json:
                try:
                    value = json.loads(args.value)
                except ValueError as exc:
                    raise InvalidRequest(f"VALUE is not valid JSON: {exc}") from None
            kv = client.put(args.key, value)
            _emit(args, kv._asdict(), f"OK revision {kv.mod_revision}")
        elif args.command == "get":
            kv = client.get(args.key, consistency=args.consistency)
            if kv is None:
                if args.json:
                    print("null")
                print(f"consensus-store: key {args.key!r} not found", file=sys.stderr)
                return EXIT_FAILED
            if args.json:
                print(json.dumps(kv._asdict()))
            else:
                print(kv.value if isinstance(kv.value, str) else json.dumps(kv.value))
        elif args.command == "delete":
            deleted = (client.delete_prefix(args.key) if args.prefix
                       else int(client.delete(args.key)))
            _emit(args, {"deleted": deleted}, f"deleted {deleted}")
        elif args.command == "range":
            result = client.range(args.prefix, limit=args.limit, consistency=args.consistency)
            if args.json:
                print(json.dumps({"kvs": [kv._asdict() for kv in result.kvs],
                                  "count": result.count}))
            else:
                console.print(views.kv_table(result.kvs))
                console.print(f"{len(result.kvs)} of {result.count} keys")
        elif args.command == "member":
            from consensus_store.cli.member import run_member
            run_member(client, args, console)
        elif args.command in COORDINATION_COMMANDS:
            body, render = COORDINATION_COMMANDS[args.command](client, args)
            print(json.dumps(body)) if args.json else console.print(render)
        elif args.command in ("dashboard", "status"):
            return _status_or_dashboard(client, args, console)
    return 0


def _status_or_dashboard(client: Any, args: argparse.Namespace, console: Any) -> int:
    from rich.console import Console
    from consensus_store.cli import views
    from consensus_store.cli.member import learn_members
    learn_members(client)        # nodes added since the config was written, read replicas
    if args.command == "dashboard" or args.watch:
        from consensus_store.cli import dashboard
        if args.command == "status" and args.json:
            return dashboard.watch_statuses_json(client, args.interval)
        return dashboard.run_dashboard(client, console, interval_s=args.interval,
                                       once=getattr(args, "once", False), json_output=args.json)
    statuses = client.cluster_status()
    if args.json:
        print(json.dumps([s.to_json() for s in statuses]))
    else:
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(width=120)    # a pipe: not rich's 80 columns
        console.print(views.status_table(statuses))
        console.print(views.addresses_table(statuses))
    return 0


def _groups(client: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    from consensus_store.cli import views
    groups = client.groups.which_groups()
    return groups, views.list_table("group", groups)


def _members(client: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    from consensus_store.cli import views
    members = client.groups.members(args.group)
    return [dataclasses.asdict(m) for m in members], views.members_table(args.group, members)


def _names(client: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    from consensus_store.cli import views
    names = client.names()
    return names, views.names_table(names)


def _locks(client: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    from consensus_store.cli import views
    locks = client.locks()
    return locks, views.locks_table(locks)


def _leader(client: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    from consensus_store.cli import views
    if args.name == LEADER_TRANSFER:
        moved = client.transfer_leadership(args.target, timeout=args.timeout)
        return dataclasses.asdict(moved), f"leader {moved.leader} (term {moved.term})"
    if args.target is not None:
        raise InvalidRequest(f"leader takes one election name, not {args.target!r} too (to "
                             f"move Raft leadership: leader {LEADER_TRANSFER} ID)")
    state = {k: v for k, v in client.election(args.name).state().items() if k != "header"}
    return state, views.election_table(state)


def _sessions(client: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    from rich.table import Table
    sessions = client.sessions(timeout=args.timeout)
    table = Table(title="sessions")
    for column in ("session", "ttl s", "node", "keys"):
        table.add_column(column)
    for s in sessions:
        table.add_row(str(s["id"]), f"{s['ttl']:g}", s["node"], str(s["keys"]))
    return sessions, table


# ``leader NAME`` shows an election; ``leader transfer [ID]`` moves Raft leadership (the word
# is taken: an election named "transfer" is shown by the dashboard, not by this command).
LEADER_TRANSFER = "transfer"
COORDINATION_COMMANDS = {"groups": _groups, "members": _members, "names": _names,
                         "locks": _locks, "leader": _leader, "sessions": _sessions}


def _emit(args: argparse.Namespace, body: dict[str, Any], text: str) -> None:
    print(json.dumps(body) if args.json else text)


if __name__ == "__main__":
    raise SystemExit(main())
