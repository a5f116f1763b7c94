"""``consensus-store init``: the config files of a cluster on real hosts, written on one machine.

``--nodes a=host1,b=host2,c=[fd00::3]`` -> in ``--out DIR``: one ``ID.toml`` per node naming
the others as peers, a fresh random ``peer_secret`` and a ``tokens.toml`` with one admin client
token.  Every file is 0600 (the directory 0700); the configs name the two secret files by a
relative path, so a host needs its own config and the two secret files side by side
(docs/deployment.md).  Every refusal is a ``ConfigError``: one line, exit 2.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from consensus_store.addresses import Address, parse_host
from consensus_store.config import load_config
from consensus_store.errors import ConfigError
from consensus_store.launcher import write_credentials, write_private

DEFAULT_RAFT_PORT, DEFAULT_API_PORT, DEFAULT_NATIVE_PORT = 7101, 7201, 7301
DEFAULT_DATA_ROOT = Path("/var/lib/consensus-store")
INSTALL_DIR = "/etc/consensus-store"           # where docs/deployment.md puts the files
INSTALLED_CONFIG = "node.toml"                 # the name the systemd unit reads on every host
SECRET_FILES = ("peer_secret", "tokens.toml")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")   # also a file name


@dataclass(frozen=True)
class Ports:
    raft: int = DEFAULT_RAFT_PORT
    api: int = DEFAULT_API_PORT
    native: int = DEFAULT_NATIVE_PORT


@dataclass(frozen=True)
class PlannedNode:
    id: str
    host: str          # canonical (config.parse_host): IPv6 without brackets

    def address(self, port: int) -> str:
        return Address(self.host, port).authority


def parse_nodes(spec: str) -> list[PlannedNode]:
    """``ID=HOST,...`` -> nodes; HOST is a DNS name, an IPv4 or a bracketed IPv6 address."""
    nodes: list[PlannedNode] = []
    for item in (part.strip() for part in spec.split(",")):
        node_id, sep, host = item.partition("=")
        node_id, host = node_id.strip(), host.strip()
        if not sep or not node_id or not host:
            raise ConfigError(f"--nodes: {item!r} is not ID=HOST (e.g. a=db1.example.com)")
        if not _NODE_ID.fullmatch(node_id):
            raise ConfigError(f"--nodes: node id {node_id!r}: use letters, digits, '.', '_' "
                              "and '-' (at most 63), starting with a letter or digit")
        if any(n.id == node_id for n in nodes):
            raise ConfigError(f"--nodes: duplicate node id {node_id!r}")
        nodes.append(PlannedNode(node_id, _parse_node_host(node_id, host)))
    for position, node in enumerate(nodes):
        for other in nodes[:position]:
            if other.host == node.host:
                raise ConfigError(f"--nodes: {other.id} and {node.id} are both on "
                                  f"{host_text(node.host)}: every node gets the same ports, so "
                                  "each needs its own host")
    return nodes


def _parse_node_host(node_id: str, text: str) -> str:
    def fail(message: str) -> ConfigError:
        return ConfigError(f"--nodes: {node_id}: {message}")
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        if ":" not in inner:
            raise fail(f"{text!r}: brackets are for IPv6 addresses only")
        return parse_host(inner, fail, text)
    if ":" in text:
        raise fail(f"{text!r}: give a host without a port (ports: --raft-port, --api-port, "
                   "--native-port), an IPv6 address in brackets: c=[fd00::3]")
    return parse_host(text, fail)


def host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_ports(ports: Ports) -> None:
    for name, port in (("raft", ports.raft), ("api", ports.api), ("native", ports.native)):
        if not 0 < port < 65536:
            raise ConfigError(f"--{name}-port: {port}: must be from 1 to 65535")
    if len({ports.raft, ports.api, ports.native}) != 3:
        raise ConfigError("--raft-port, --api-port and --native-port must differ")


def _check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out: {out} is not empty (--force overwrites the files init "
                          "writes there)")


def config_text(node: PlannedNode, nodes: list[PlannedNode], ports: Ports,
                data_root: Path, credential_lines: list[str]) -> str:
    size = len(nodes)
    lines = [f"# Node {node.id} of a {size}-node cluster, written by `consensus-store init`.",
             "# Beside it on its host: peer_secret and tokens.toml (docs/deployment.md).",
             f'id = "{node.id}"',
             f'raft_address = "{node.address(ports.raft)}"',
             f'api_address = "{node.address(ports.api)}"',
             f'native_address = "{node.address(ports.native)}"',
             f'data_dir = "{data_root / node.id}"', *credential_lines, ""]
    for peer in nodes:
        if peer.id != node.id:
            lines += ["[[peers]]", f'id = "{peer.id}"',
                      f'raft_address = "{peer.address(ports.raft)}"',
                      f'api_address = "{peer.address(ports.api)}"',
                      f'native_address = "{peer.address(ports.native)}"', ""]
    return "\n".join(lines)


def run_init(spec: str, out: Path, *, ports: Ports = Ports(),
             data_root: Path = DEFAULT_DATA_ROOT, force: bool = False) -> list[Path]:
    """Write the cluster's files into ``out``; returns the node configs, checked by loading
    each one.  Prints the next steps."""
    nodes = parse_nodes(spec)
    _check_ports(ports)
    if not data_root.is_absolute():
        raise ConfigError(f"--data-root: {data_root}: must be an absolute path (a config's "
                          "relative path is read from the config's own directory)")
    _check_out_dir(out, force)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out, 0o700)
    credential_lines = write_credentials(out)
    paths = []
    for node in nodes:
        path = out / f"{node.id}.toml"
        write_private(path, config_text(node, nodes, ports, data_root, credential_lines))
        paths.append(path)
    for path in paths:
        load_config(path)            # what a node will read: refuse now, not on the host
    print(next_steps(nodes, out, ports))
    return paths


def next_steps(nodes: list[PlannedNode], out: Path, ports: Ports) -> str:
    width = max(len(host_text(n.host)) for n in nodes)
    copies = "\n".join(f"  {host_text(n.host):<{width}}  {n.id}.toml as {INSTALLED_CONFIG}, "
                       f"{', '.join(SECRET_FILES)}" for n in nodes)
    return f"""wrote a {len(nodes)}-node cluster into {out} (every file 0600):
  {', '.join(n.id + '.toml' for n in nodes)}: one config per node
  peer_secret: the secret between the nodes; tokens.toml: the admin client token

Copy from {out} to each host's {INSTALL_DIR}/ (owner: the service user, mode 0600):
{copies}
Then on each host:  systemctl enable --now consensus-store   (docs/deployment.md)
Open between the hosts: {ports.raft}/tcp (raft, nodes only); for clients: {ports.api}/tcp (HTTP),
{ports.native}/tcp (native).
Check from here:  consensus-store status --config {out / (nodes[0].id + '.toml')}
Keep peer_secret and tokens.toml secret: with them one can join the cluster or act as admin."""
