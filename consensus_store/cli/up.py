"""``consensus-store up``: a local cluster as separate processes, in the foreground, kept
running by a supervisor (``supervisor.py``): a node that exits is reported and restarted while
the others keep serving."""
from __future__ import annotations

import signal
import socket
import threading
import tomllib
from pathlib import Path
from typing import Callable

from rich.console import Console

from consensus_store.cli.supervisor import Supervisor
from consensus_store.config import load_config
from consensus_store.errors import ConfigError
from consensus_store.launcher import LocalCluster, write_credentials

CLUSTER_SIZES = (1, 3, 5)
MAX_REPLICAS = 5                  # read replicas beside the voters (docs/replicas.md)
DEFAULT_BASE_PORT = 7101          # raft 7101.., HTTP 7201.., native 7301.. as in cluster_configs/local
CHECK_INTERVAL_S = 0.5


def run_up(config_dir: Path | None, data_dir: Path | None, *, nodes: int | None = None,
           restart: bool = True, base_port: int = DEFAULT_BASE_PORT,
           default_config_dir: Callable[[], Path] | None = None, replicas: int = 0) -> int:
    """``nodes``: run a cluster of that size (and ``replicas`` read replicas) from configs
    generated under the data dir; otherwise the configs in ``config_dir`` (or
    ``default_config_dir()``)."""
    console = Console(stderr=False)
    if replicas and nodes is None:
        raise ConfigError("--replicas: needs --nodes (or write replica configs into "
                          "--config-dir yourself: docs/replicas.md)")
    if not 0 <= replicas <= MAX_REPLICAS:
        raise ConfigError(f"--replicas: {replicas}: must be between 0 and {MAX_REPLICAS}")
    if nodes is not None:
        data_root = (data_dir or Path(f"~/.local/share/consensus-store/up-{nodes}")).expanduser()
        config_dir = generated_configs(data_root.resolve(), nodes, base_port)
        paths = [config_dir / f"node{i + 1}.toml" for i in range(nodes)]
        paths += replica_configs(config_dir, data_root.resolve(), nodes, replicas, base_port)
        data_dir = None                   # the generated configs name their data dirs
    else:
        if config_dir is None:
            if default_config_dir is None:
                raise ConfigError("up: no --config-dir given")
            config_dir = default_config_dir()
        paths = node_config_paths(config_dir)
    if not paths:
        raise ConfigError(f"{config_dir}: no *.toml node configs")
    for name in ("peer_secret", "tokens.toml"):   # git checks files out 0644
        if (config_dir / name).is_file():
            (config_dir / name).chmod(0o600)
    configs = [load_config(p) for p in paths]
    for config in configs:
        raft = () if config.is_replica else (config.raft_address,)   # a replica never listens
        for address in (*raft, config.api_address, config.native_address):
            if address is not None:
                _require_free(config.path, address.host, address.port)
    cluster = LocalCluster(paths, data_root=data_dir.resolve() if data_dir else None)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    cluster.start()
    try:
        leader = cluster.wait_for_leader(timeout=30)
        _print_usage(console, cluster, configs[0].path, leader, restart)
        supervisor = Supervisor(list(cluster.nodes.values()),
                                lambda line: console.print(line, soft_wrap=True, highlight=False),
                                restart=restart)
        while not stop.wait(CHECK_INTERVAL_S):
            supervisor.check()
    finally:
        console.print("stopping the cluster…")
        cluster.stop()
    console.print("stopped")
    return 0


def generated_configs(data_root: Path, size: int, base_port: int) -> Path:
    """``data_root/config``: one config per node of a ``size``-node loopback cluster, with a
    fresh peer secret and admin token (files 0600); written once, then reused (with the data)."""
    if size not in CLUSTER_SIZES:
        raise ConfigError(f"--nodes: {size}: a local cluster has 1, 3 or 5 nodes")
    highest = 65535 - 200 - size
    if not 1024 <= base_port <= highest:
        raise ConfigError(f"--base-port: {base_port}: must be between 1024 and {highest}")
    directory = data_root / "config"
    if (directory / "node1.toml").is_file():
        return directory
    credential_lines = write_credentials(directory)     # a fresh secret and admin token
    ids = [f"node{i + 1}" for i in range(size)]

    def addresses(i: int) -> list[str]:
        return [f'raft_address = "127.0.0.1:{base_port + i}"',
                f'api_address = "127.0.0.1:{base_port + 100 + i}"',
                f'native_address = "127.0.0.1:{base_port + 200 + i}"']
    for i, node_id in enumerate(ids):
        lines = [f"# Node {i + 1} of a {size}-node local cluster written by `consensus-store up "
                 f"--nodes {size}`.", f'id = "{node_id}"', *addresses(i),
                 f'data_dir = "{data_root / node_id}"', *credential_lines, ""]
        for j, peer_id in enumerate(ids):
            if peer_id != node_id:
                lines += ["[[peers]]", f'id = "{peer_id}"', *addresses(j), ""]
        lines += ["[raft]", "heartbeat_interval_s = 0.1", "election_timeout_min_s = 0.5",
                  "election_timeout_max_s = 1.2"]
        (directory / f"{node_id}.toml").write_text("\n".join(lines) + "\n")
    return directory


def replica_configs(directory: Path, data_root: Path, size: int, count: int,
                    base_port: int) -> list[Path]:
    """``directory/replica1.toml`` … : read replicas of the ``size`` voters that
    ``generated_configs`` wrote there, on the ports after theirs; written once, then reused."""
    if base_port + size + count + 200 > 65535:
        raise ConfigError(f"--base-port: {base_port}: no room for {count} replicas")
    voters = [load_config(directory / f"node{i + 1}.toml") for i in range(size)]
    paths = []
    for k in range(count):
        path, i = directory / f"replica{k + 1}.toml", size + k
        paths.append(path)
        if path.is_file():
            continue
        lines = [f"# Read replica {k + 1} of the {size}-node local cluster, written by "
                 f"`consensus-store up --replicas`: it never votes (docs/replicas.md).",
                 f'id = "replica{k + 1}"', 'role = "replica"',
                 f'raft_address = "127.0.0.1:{base_port + i}"     # its name; it never listens',
                 f'api_address = "127.0.0.1:{base_port + 100 + i}"',
                 f'native_address = "127.0.0.1:{base_port + 200 + i}"',
                 f'data_dir = "{data_root / f"replica{k + 1}"}"',
                 'peer_secret_file = "peer_secret"', 'tokens_file = "tokens.toml"', ""]
        for voter in voters:
            lines += ["[[peers]]", f'id = "{voter.id}"', f'raft_address = "{voter.raft_address}"',
                      f'api_address = "{voter.api_address}"',
                      f'native_address = "{voter.native_address}"', ""]
        lines += ["[raft]", "heartbeat_interval_s = 0.1", "election_timeout_min_s = 0.5",
                  "election_timeout_max_s = 1.2"]
        path.write_text("\n".join(lines) + "\n")
    return paths


def node_config_paths(config_dir: Path) -> list[Path]:
    """The node configs among ``config_dir/*.toml`` (a tokens file lives there too)."""
    paths = []
    for path in sorted(config_dir.glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            raw = {}       # not ours to skip: load_config names the problem
        if not ("tokens" in raw and "id" not in raw):
            paths.append(path)
    return paths


def _require_free(config_path: Path, host: str, port: int) -> None:
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:     # IPv4 first where a name has both, as the node's raft listener prefers
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"{config_path}: cannot resolve {host}: {exc.strerror}") from None
    family, *_, where = min(found, key=lambda info: info[0] != socket.AF_INET)
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError:
            raise ConfigError(f"{config_path}: {shown} is in use (is the cluster already "
                              "up?)") from None


def _print_usage(console: Console, cluster: LocalCluster, config: Path, leader: str,
                 restart: bool) -> None:
    replicas = sum(node.config.is_replica for node in cluster.nodes.values())
    also = f" and {replicas} read replica{'s' if replicas > 1 else ''}" if replicas else ""
    console.print(f"[bold green]cluster up[/]: {len(cluster.nodes) - replicas} nodes{also}, "
                  f"leader {leader}")
    for node in cluster.nodes.values():
        raft = "read replica" if node.config.is_replica else f"raft {node.config.raft_address}"
        console.print(f"  {node.id}: {node.endpoint}  {raft}  "
                      f"data {node.data_dir}  log {node.log_path}", soft_wrap=True)
    first = next(iter(cluster.nodes.values()))
    configs_tokens, token = first.config.tokens_file, first.config.admin_token
    console.print(f"""
Try it (client tokens in {configs_tokens}):
  export CONSENSUS_STORE_CONFIG={config}
  consensus-store put greeting hello && consensus-store get greeting
  consensus-store status
  curl -s -H "Authorization: Bearer {token}" \\
       -d '{{"key": "greeting"}}' {first.endpoint}/v1/kv/get
  python -c 'from consensus_store import Client; \\
c = Client.from_config("{config}"); print(c.get("greeting"))'
{"A node that exits is restarted (kill one to watch the others serve)"
 if restart else "A node that exits stays down (--no-restart)"}; Ctrl-C stops all nodes (data is kept).""",
                  highlight=False, soft_wrap=True)
