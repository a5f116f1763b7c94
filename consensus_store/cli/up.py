"""``consensus-store up``: the local cluster as separate processes, in the foreground."""
from __future__ import annotations

import signal
import socket
import threading
import tomllib
from pathlib import Path

from rich.console import Console

from consensus_store.config import load_config
from consensus_store.errors import ConfigError
from consensus_store.launcher import LocalCluster


def run_up(config_dir: Path, data_dir: Path | None) -> int:
    console = Console(stderr=False)
    paths = node_config_paths(config_dir)
    if not paths:
        raise ConfigError(f"{config_dir}: no *.toml node configs")
    for name in ("peer_secret", "tokens.toml"):   # git checks files out 0644
        if (config_dir / name).is_file():
            (config_dir / name).chmod(0o600)
    configs = [load_config(p) for p in paths]
    for config in configs:
        for address in (config.raft_address, config.api_address, config.native_address):
            if address is not None:
                _require_free(config.path, address.host, address.port)
    cluster = LocalCluster(paths, data_root=data_dir.resolve() if data_dir else None)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    cluster.start()
    try:
        leader = cluster.wait_for_leader(timeout=30)
        _print_usage(console, cluster, configs[0].path, leader)
        while not stop.wait(1.0):
            for node in cluster.exited():
                console.print(f"[red]{node.id} exited with {node.process.returncode}[/]; "
                              f"see {node.log_path}")
                stop.set()
    finally:
        console.print("stopping the cluster…")
        cluster.stop()
    console.print("stopped")
    return 0


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
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise ConfigError(f"{config_path}: {host}:{port} is in use (is the cluster already "
                              "up?)") from None


def _print_usage(console: Console, cluster: LocalCluster, config: Path, leader: str) -> None:
    console.print(f"[bold green]cluster up[/]: {len(cluster.nodes)} nodes, leader {leader}")
    for node in cluster.nodes.values():
        console.print(f"  {node.id}: {node.endpoint}  raft {node.config.raft_address}  "
                      f"data {node.data_dir}  log {node.log_path}", soft_wrap=True)
    first = next(iter(cluster.nodes.values()))
    configs_tokens, token = first.config.tokens_file, first.config.admin_token
    console.print(f"""
Try it (client tokens in {configs_tokens}):
  consensus-store put greeting hello && consensus-store get greeting
  consensus-store status
  curl -s -H "Authorization: Bearer {token}" \\
       -d '{{"key": "greeting"}}' {first.endpoint}/v1/kv/get
  python -c 'from consensus_store import Client; \\
c = Client.from_config("{config}"); print(c.get("greeting"))'
Ctrl-C stops all nodes (data is kept).""", highlight=False, soft_wrap=True)
