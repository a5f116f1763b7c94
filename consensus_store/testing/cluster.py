"""Proxied clusters: config generation (``write_proxied_cluster_configs``), ``ProxiedCluster``
(node processes whose Raft traffic goes through one ``FaultProxy``, with kill / pause / restart),
and per-node helpers (``node_client``, ``local_records``, ``node_state``, ``node_digest``,
``raft_status``, ``raft_diagnostics``); the first four also serve a plain ``LocalCluster``.

Only processes started here are ever signalled, always by their own PID (via ``launcher``).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterable

from consensus_store.launcher import LocalCluster, free_ports, write_credentials
from consensus_store.testing.polling import poll_until
from consensus_store.testing.proxy import HOST, NODE_PORT_RANGE, FaultProxy, pick_ports

log = logging.getLogger("consensus_store.testing")


def _toml_node(node_id: str, raft: str, api: str, native: str,
               credentials: list[str]) -> list[str]:
    return [f'id = "{node_id}"', f'raft_address = "{raft}"', f'api_address = "{api}"',
            f'native_address = "{native}"', f'data_dir = "data/{node_id}"', *credentials, ""]


def write_proxied_cluster_configs(directory: Path, size: int, proxy: FaultProxy, *,
                                  secret: str | None = None,
                                  raft_table: dict[str, float] | None = None,
                                  extra_toml: str = "", seed: int | None = None) -> list[Path]:
    """One config per node of a loopback cluster whose every Raft link goes through ``proxy``.

    For each pair the dialer (greater address string) gets the proxy address of the pair as the
    other node's ``raft_address``; the acceptor keeps the dialer's real address (it must
    recognise the address the dialer announces).  Node ids are n1..nN.
    """
    directory.mkdir(parents=True, exist_ok=True)
    raft_ports = pick_ports(size, NODE_PORT_RANGE)     # unseeded: concurrent runs differ
    client_ports = free_ports(2 * size)
    api_ports, native_ports = client_ports[:size], client_ports[size:]
    credentials = write_credentials(directory, secret)
    ids = [f"n{i + 1}" for i in range(size)]
    raft = {node_id: f"{HOST}:{port}" for node_id, port in zip(ids, raft_ports)}
    api = {node_id: f"{HOST}:{port}" for node_id, port in zip(ids, api_ports)}
    native = {node_id: f"{HOST}:{port}" for node_id, port in zip(ids, native_ports)}
    # seen_by[a][b]: the raft address of b written in a's config
    seen_by: dict[str, dict[str, str]] = {a: {b: raft[b] for b in ids if b != a} for a in ids}
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            dialer, acceptor = (a, b) if raft[a] > raft[b] else (b, a)
            address = proxy.add_link(dialer, acceptor, raft[acceptor])
            if not raft[dialer] > address:
                raise AssertionError(f"{dialer} ({raft[dialer]}) would not dial proxy {address}")
            if raft[acceptor] > raft[dialer]:
                raise AssertionError(f"{acceptor} would dial {dialer} directly")
            seen_by[dialer][acceptor] = address
    paths = []
    for node_id in ids:
        lines = _toml_node(node_id, raft[node_id], api[node_id], native[node_id], credentials)
        for peer in ids:
            if peer != node_id:
                lines += ["[[peers]]", f'id = "{peer}"', f'raft_address = "{seen_by[node_id][peer]}"',
                          f'api_address = "{api[peer]}"', f'native_address = "{native[peer]}"', ""]
        if raft_table:
            lines += ["[raft]"] + [f"{k} = {v}" for k, v in raft_table.items()] + [""]
        if extra_toml:
            lines.append(extra_toml.strip())
        path = directory / f"{node_id}.toml"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


class ProxiedCluster:
    """Node processes on 127.0.0.1 whose Raft traffic all goes through one ``FaultProxy``.

    Use as a context manager: ``close`` stops every node it started (SIGCONT + SIGTERM, then
    SIGKILL, by PID) and the proxy.
    """

    def __init__(self, root: Path, size: int, *, raft_table: dict[str, float] | None = None,
                 extra_toml: str = "", seed: int | None = None) -> None:
        self.root = Path(root)
        self.proxy = FaultProxy(seed=seed)
        try:
            self.config_paths = write_proxied_cluster_configs(
                self.root / "configs", size, self.proxy, raft_table=raft_table,
                extra_toml=extra_toml, seed=seed)
            self.cluster = LocalCluster(self.config_paths, data_root=self.root / "data",
                                        log_dir=self.root / "logs")
        except BaseException:
            self.proxy.close()
            raise
        self.paused: set[str] = set()

    # ---- shortcuts -------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return list(self.cluster.nodes)

    @property
    def nodes(self) -> dict[str, Any]:
        return self.cluster.nodes

    @property
    def token(self) -> str:
        return self.cluster.token

    @property
    def endpoints(self) -> list[str]:
        return self.cluster.endpoints

    @property
    def native_endpoints(self) -> list[str]:
        """The nodes' native-protocol endpoints (client connections are not proxied)."""
        return [f"tcp://{n.config.native_address}" for n in self.cluster.nodes.values()]

    def endpoint(self, node_id: str) -> str:
        return self.cluster.nodes[node_id].endpoint

    def client(self, node_ids: Iterable[str] | None = None, **options: Any) -> Any:
        from consensus_store.client import Client
        endpoints = ([self.endpoint(n) for n in node_ids] if node_ids is not None
                     else self.endpoints)
        return Client(endpoints, token=self.token, **options)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self, leader_timeout: float = 30.0) -> str:
        self.cluster.start()
        return self.wait_for_leader(leader_timeout)

    def close(self) -> None:
        try:
            for node in self.cluster.nodes.values():
                try:
                    node.stop()
                except Exception:  # noqa: BLE001 - stop the others anyway
                    log.exception("stopping %s", node.id)
        finally:
            self.proxy.close()

    def __enter__(self) -> "ProxiedCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- process faults ------------------------------------------------------------------------
    def kill(self, node_id: str) -> None:
        self.paused.discard(node_id)
        self.cluster.nodes[node_id].kill()

    def restart(self, node_id: str) -> None:
        node = self.cluster.nodes[node_id]
        if not node.alive:
            node.start()

    def pause(self, node_id: str) -> None:
        self.cluster.nodes[node_id].pause()
        self.paused.add(node_id)

    def resume(self, node_id: str) -> None:
        self.cluster.nodes[node_id].resume()
        self.paused.discard(node_id)

    def resume_all(self) -> None:
        for node_id in list(self.paused):
            self.resume(node_id)

    def restart_all(self) -> None:
        for node_id in self.ids:
            self.restart(node_id)

    # ---- observation -----------------------------------------------------------------------------
    def statuses(self, timeout: float = 1.0, node_ids: Iterable[str] | None = None) -> dict[str, Any]:
        """``/v1/status`` of each reachable live node (unreachable ones are left out)."""
        from consensus_store.errors import ConsensusStoreError
        result = {}
        with self.client(timeout=timeout) as client:
            for node_id in (node_ids if node_ids is not None else self.ids):
                node = self.cluster.nodes[node_id]
                if not node.alive or node_id in self.paused:
                    continue
                try:
                    result[node_id] = client.status(node.endpoint, timeout=timeout)
                except (ConsensusStoreError, OSError):
                    continue
        return result

    def leader(self, timeout: float = 1.0) -> str | None:
        """The node that says it leads and that a majority of nodes (itself included) follow."""
        current = self.statuses(timeout)
        leaders = {s.id for s in current.values() if s.role.value == "leader"}
        for leader in leaders:
            if sum(s.leader == leader for s in current.values()) > len(self.ids) // 2:
                return leader
        return None

    def wait_for_leader(self, timeout: float = 30.0) -> str:
        found = poll_until(lambda: self.leader(), timeout, interval=0.1)
        if found is None:
            raise TimeoutError(f"no leader within {timeout:g}s ({self.describe()})")
        return found

    def describe(self) -> str:
        states = []
        for node_id, node in self.cluster.nodes.items():
            state = "paused" if node_id in self.paused else ("up" if node.alive else "down")
            states.append(f"{node_id}:{state}")
        return " ".join(states) + f"; network {self.proxy.describe()}"


def node_client(cluster: ProxiedCluster | LocalCluster, node_id: str, **options: Any) -> Any:
    """A client that talks to exactly one node (of a proxied or a plain local cluster)."""
    from consensus_store.client import Client
    return Client([cluster.nodes[node_id].endpoint], token=cluster.token, **options)


def local_records(cluster: ProxiedCluster | LocalCluster, node_id: str, prefix: str = "",
                  timeout: float = 3.0) -> list[Any]:
    """Every record under ``prefix`` one node holds, read locally (no consensus round)."""
    with node_client(cluster, node_id, timeout=timeout) as client:
        return list(client.range(prefix, consistency="local", timeout=timeout).kvs)


def node_state(cluster: ProxiedCluster | LocalCluster, node_id: str, timeout: float = 3.0
               ) -> dict[str, tuple[Any, int]]:
    """{key: (value, mod_revision)} of every key one node holds (local read, that node only)."""
    return {kv.key: (kv.value, kv.mod_revision)
            for kv in local_records(cluster, node_id, timeout=timeout)}


def node_digest(cluster: ProxiedCluster | LocalCluster, node_id: str, timeout: float = 3.0
                ) -> tuple[str, int, dict[str, str]]:
    """(digest of the whole replicated state, the index it covers, digest of each part)."""
    with node_client(cluster, node_id, timeout=timeout) as client:
        result = client._request("digest", {}, timeout)
    return result["digest"], result["index"], result["parts"]


def raft_status(cluster: ProxiedCluster, node_id: str, timeout: float = 3.0) -> dict[str, Any]:
    """pysyncobj's own ``getStatus()`` of one node (next/match indexes, log length...), asked
    directly on its raft port (not through the proxy), like ``syncobj_admin -status``."""
    from consensus_store.node.engine.peer_frames import ask_raft_port
    config = cluster.nodes[node_id].config
    result: dict[str, Any] = {}
    done = threading.Event()

    def ask() -> None:
        try:
            address = config.raft_address
            answer = ask_raft_port(address.host, address.port, config.peer_secret, ["status"],
                                   timeout)
            result.update(answer if isinstance(answer, dict) else {"answer": answer})
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            done.set()

    threading.Thread(target=ask, daemon=True).start()
    if not done.wait(timeout + 1):
        return {"error": "no answer"}
    return {k: (str(v) if not isinstance(v, (int, float, str, type(None))) else v)
            for k, v in result.items()}


def raft_diagnostics(cluster: ProxiedCluster) -> str:
    keys = ("state", "raft_term", "leader", "log_len", "commit_idx", "last_applied",
            "leader_commit_idx")
    lines = []
    for node_id in cluster.ids:
        status = raft_status(cluster, node_id)
        short = {k: status.get(k) for k in keys if k in status}
        peers = {k.replace("_server_127.0.0.1:", "@"): v for k, v in status.items()
                 if k.startswith(("next_node_idx_server", "match_idx_server",
                                  "partner_node_status_server"))}
        lines.append(f"  {node_id} ({cluster.nodes[node_id].config.raft_address}): {short} "
                     f"{peers} {status.get('error', '')}")
    return "\n".join(lines)
