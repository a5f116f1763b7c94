"""Run cluster nodes as separate processes: ``consensus-store up`` and the tests use this.

Only processes started here are ever signalled, always by their own PID.
"""
from __future__ import annotations

import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from consensus_store.client import Client
from consensus_store.config import NodeConfig, load_config
from consensus_store.errors import Timeout
from consensus_store.models import Role


@dataclass
class NodeProcess:
    config: NodeConfig
    data_dir: Path
    log_path: Path
    process: subprocess.Popen | None = None
    fd_limit: int | None = None       # RLIMIT_NOFILE (soft and hard) of the process, if set
    # A command the node runs under, which must exec it (so its PID stays the node's): e.g.
    # ("ip", "netns", "exec", NAME) for a node in a network namespace of its own.
    wrapper: tuple[str, ...] = ()
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def endpoint(self) -> str:
        return f"{self.config.scheme}://{self.config.api_address}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """How the process ended (negative: killed by that signal), or None while it runs."""
        return None if self.process is None else self.process.poll()

    def start(self) -> None:
        if self.alive:
            return
        if self._log_file is not None:     # a restart after a crash: the old handle is spent
            self._log_file.close()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        command = [*self.wrapper, sys.executable, "-m", "consensus_store", "node", "--config",
                   str(self.config.path), "--data-dir", str(self.data_dir)]
        limit = self.fd_limit
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=None if limit is None else
                                        lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                                   (limit, limit)))

    def _signal(self, signum: int) -> None:
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process is None:
            return None
        self._signal(signal.SIGCONT)   # a paused process cannot handle SIGTERM
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self._reap()

    def kill(self) -> None:
        """kill -9: no clean-up at all, like a crash."""
        self._signal(signal.SIGKILL)
        self._reap()

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _reap(self) -> int | None:
        code = self.process.wait() if self.process is not None else None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code


class LocalCluster:
    """A cluster of node processes described by one config file per node."""

    def __init__(self, config_paths: list[Path], data_root: Path | None = None,
                 log_dir: Path | None = None) -> None:
        configs = [load_config(p) for p in config_paths]
        self.nodes: dict[str, NodeProcess] = {}
        for config in configs:
            data_dir = data_root / config.id if data_root else config.data_dir
            logs = log_dir or (data_root or data_dir.parent)
            self.nodes[config.id] = NodeProcess(config, data_dir, logs / f"{config.id}.log")
        self.token = configs[0].admin_token
        self.tls = configs[0].tls

    @property
    def endpoints(self) -> list[str]:
        return [n.endpoint for n in self.nodes.values()]

    @property
    def voters(self) -> int:
        """How many nodes vote (read replicas do not)."""
        return sum(not n.config.is_replica for n in self.nodes.values())

    @property
    def tls_options(self) -> dict[str, Any]:
        """What a client of this cluster needs for TLS (``Client.from_config``'s choice)."""
        if self.tls is None:
            return {}
        options: dict[str, Any] = {"cacert": self.tls.ca_file}
        if self.tls.client_ca_file is not None:
            options.update(cert=self.tls.cert_file, key=self.tls.key_file)
        return options

    def client(self, **options: Any) -> Client:
        return Client(self.endpoints, token=self.token, **{**self.tls_options, **options})

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_leader(self, timeout: float = 20.0, exclude: set[str] = frozenset()) -> str:
        """Id of a node that says it leads and that the other live nodes follow."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                live = [s for s in client.cluster_status(timeout=1.0) if s.role is not Role.DOWN]
                leaders = {s.id for s in live if s.role is Role.LEADER} - set(exclude)
                if len(leaders) == 1:
                    leader = leaders.pop()
                    voters = [s for s in live if s.membership != "replica"]
                    if sum(s.leader == leader for s in voters) > self.voters // 2:
                        return leader
                time.sleep(0.1)
        raise Timeout(f"no leader within {timeout:g}s")

    def exited(self) -> list[NodeProcess]:
        """Nodes whose process has ended (a crash, unless we stopped it)."""
        return [n for n in self.nodes.values()
                if n.process is not None and n.process.poll() is not None]

    def check_exits(self) -> list[str]:
        """Nodes whose process ended on its own (a crash), with their exit codes."""
        return [f"{n.id} exited with {n.process.returncode}" for n in self.exited()]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free on ``host`` right now (the OS picks them; tiny race until they are bound)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(family)
            sock.bind((host, 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


def write_credentials(directory: Path, peer_secret: str | None = None,
                      token: str | None = None) -> list[str]:
    """Write a fresh peer secret and an admin client token (files 0600) into ``directory``;
    returns the config lines that name them."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    peer_secret = peer_secret or secrets.token_urlsafe(32)
    token = token or secrets.token_urlsafe(32)
    files = {"peer_secret": peer_secret + "\n",
             "tokens.toml": f'[[tokens]]\nname = "admin"\ntoken = "{token}"\nrole = "admin"\n'}
    for name, text in files.items():
        write_private(directory / name, text)
    return ['peer_secret_file = "peer_secret"', 'tokens_file = "tokens.toml"']


def write_private(path: Path, text: str) -> None:
    """Write ``text`` into a file only its owner may read (mode 0600, also when it existed)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, 0o600)            # an existing file keeps its mode otherwise


def write_tls_files(directory: Path, node_ids: list[str], client_certs: bool = False
                    ) -> dict[str, list[str]]:
    """A throwaway CA and one certificate per node under ``directory/tls`` (plus ``client``);
    returns each node's ``[tls]`` table as config lines."""
    from consensus_store.testing.certs import CertificateAuthority
    folder = directory / "tls"
    ca = CertificateAuthority.create()
    ca_file = ca.write_ca(folder)
    ca.write(folder, "client", hosts=[])
    tables = {}
    for node_id in node_ids:
        files = ca.write(folder, node_id)
        lines = ["[tls]", f'cert_file = "{files.cert}"', f'key_file = "{files.key}"',
                 f'ca_file = "{ca_file}"']
        if client_certs:
            lines.append(f'client_ca_file = "{ca_file}"')
        tables[node_id] = lines + [""]
    return tables


def write_cluster_configs(directory: Path, size: int = 3, secret: str | None = None,
                          raft_table: dict[str, float] | None = None,
                          durability: str = "fsync", tls: bool = False,
                          client_certs: bool = False, host: str = "127.0.0.1",
                          replicas: int = 0) -> list[Path]:
    """Write one config per node for a fresh loopback cluster on free ports, voters n1..nN
    then ``replicas`` read replicas r1..rM (docs/replicas.md).  ``tls``: the
    client ports serve TLS with certificates of a throwaway CA (``write_tls_files``);
    ``client_certs``: and require client certificates it signed.  ``host``: what every address
    names (``localhost``, ``::1``: a bare IPv6 literal, written bracketed)."""
    directory.mkdir(parents=True, exist_ok=True)
    probe_host = "127.0.0.1" if host == "localhost" else host   # what localhost binds first
    ports = free_ports(3 * (size + replicas), probe_host)
    at = f"[{host}]" if ":" in host else host
    ids = [f"n{i + 1}" for i in range(size)] + [f"r{i + 1}" for i in range(replicas)]
    everyone = [(node_id, *ports[3 * i:3 * i + 3]) for i, node_id in enumerate(ids)]
    nodes = everyone[:size]                 # the voters: every config's [[peers]]
    credentials = write_credentials(directory, secret)
    tls_tables = write_tls_files(directory, ids, client_certs) if tls else {}
    paths = []
    for position, (node_id, raft_port, api_port, native_port) in enumerate(everyone):
        role = ['role = "replica"'] if position >= size else []
        lines = [f'id = "{node_id}"', *role, f'raft_address = "{at}:{raft_port}"',
                 f'api_address = "{at}:{api_port}"',
                 f'native_address = "{at}:{native_port}"', f'data_dir = "data/{node_id}"',
                 *credentials, f'durability = "{durability}"', ""]
        for peer_id, peer_raft, peer_api, peer_native in nodes:
            if peer_id != node_id:
                lines += ["[[peers]]", f'id = "{peer_id}"', f'raft_address = "{at}:{peer_raft}"',
                          f'api_address = "{at}:{peer_api}"',
                          f'native_address = "{at}:{peer_native}"', ""]
        lines += tls_tables.get(node_id, [])
        if raft_table:
            lines += ["[raft]"] + [f"{k} = {v}" for k, v in raft_table.items()]
        path = directory / f"{node_id}.toml"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths

