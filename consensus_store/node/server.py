"""A whole node: one loop thread serves the client ports and ticks Raft.  Daemon and embedded.

The client ports (HTTP, native) are served with TLS when the config has ``[tls]``, with at most
``limits.max_*_connections`` each (``client_ports``: the process's open-files limit is raised to
its hard limit at start and the caps fit under it, with descriptors kept for Raft's files and
peers).

``Node`` is also the embedded API: the same write methods as ``Client`` (they go through this
node's proposer, so they are replicated like any client's), and reads straight from local memory.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import threading
from pathlib import Path
from typing import Any


from consensus_store.config import NodeConfig, load_config, node_api_token
from consensus_store.errors import ConfigError, Timeout, Unavailable
from consensus_store.event_loop import new_event_loop
from consensus_store.api import CoordinationApi, KVApi
from consensus_store.api.cluster import ClusterAdminApi
from consensus_store.api.membership import MembershipApi
from consensus_store.api.messaging import MessagingApi
from consensus_store.api.monitors import MonitorApi
from consensus_store.api.nodes import NodesApi
from consensus_store.api.watching import WatchApi
from consensus_store.models import Consistency, KeyValue
from consensus_store.node.client_ports import (ClientPort, ConnectionGate, connection_caps,
                                               raise_fd_limit)
from consensus_store.node.http_front import HttpFront
from consensus_store.node.leases import LeaseKeeper
from consensus_store.node.messaging import MessageHub
from consensus_store.node.native import NativeServer
from consensus_store.node.removal import RemovalWatch
from consensus_store.node.engine import Engine
from consensus_store.node.service import KVService
from consensus_store.node.snapshot_export import save_to_file
from consensus_store.node.watch import WatchHub
from consensus_store.tls import client_context, server_context

log = logging.getLogger("consensus_store.node")

TOKENS_CHECK_INTERVAL_S = 1.0    # how soon an edit of the tokens file takes effect


_IMMUTABLE = (str, int, float, bool, type(None))
# Built once: this test runs on every embedded read (Consistency is a str enum, so its members
# hash and compare like the plain words).
_READ_FROM_MEMORY = frozenset({None, Consistency.LOCAL, Consistency.SESSION})


def _private(value: Any) -> Any:
    """A value the caller may change without changing the replica's memory."""
    return value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)


class _ListenError(Exception):
    def __init__(self, key: str, address: object, error: OSError) -> None:
        super().__init__(key)
        self.key, self.address, self.reason = key, address, error.strerror or str(error)


class Node(KVApi, CoordinationApi, ClusterAdminApi, MessagingApi, NodesApi, MembershipApi,
           WatchApi, MonitorApi):
    """One cluster member running in this process.

    >>> node = Node.from_config("cluster_configs/local/node1.toml")   # started
    >>> node.put("greeting", "hello"); node.get("greeting").value
    >>> node.stop()
    """

    def __init__(self, config: NodeConfig, session_ttl: float = 10.0) -> None:
        """``session_ttl``: TTL of the node's own session (groups joined, names registered,
        locks and candidacies through this node), which ends when this process dies."""
        self.config = config
        self._ssl_server, ssl_peers = _tls_contexts(config)    # before anything starts
        self._init_coordination(session_ttl)
        self._loop = new_event_loop()
        self._watches = WatchHub(self._loop.call_soon, config.limits.watch_history_events,
                                 config.limits.watch_history_bytes, config.limits.max_watchers)
        self._engine = Engine(config, self._loop, on_events=self._watches.on_events,
                              on_reset=self._watches.on_reset)
        self._runner = self._engine.runner       # (tests reach the journal through it)
        api_by_node = {p.id: f"{config.scheme}://{p.api_address}" for p in config.peers}
        self._leases = LeaseKeeper(self._engine, api_by_node,
                                   node_api_token(config.peer_secret), ssl_context=ssl_peers)
        self._service = KVService(config, self._engine, self._watches, self._leases)
        self._service.messaging = MessageHub(config, self._engine, ssl_peers)
        self._removal = RemovalWatch(config, self._engine, node_api_token(config.peer_secret),
                                     ssl_peers)   # a removed node stops (removal.py)
        self._loop_thread = threading.Thread(target=self._loop.run_forever,
                                             name=f"api-{config.id}", daemon=True)
        self._http: HttpFront | None = None
        self._http_port: ClientPort | None = None
        self._fd_limit = 0                  # the open-files limit, once start() raised it
        self._native: NativeServer | None = None
        self._token_watch: asyncio.Task | None = None
        self._removal_task: asyncio.Task | None = None
        self._started = False

    @classmethod
    def from_config(cls, path: str | Path, *, data_dir: str | Path | None = None,
                    start: bool = True) -> "Node":
        config = load_config(path)
        if data_dir is not None:
            config = config.with_data_dir(Path(data_dir))
        node = cls(config)
        if start:
            node.start()
        return node

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._fd_limit = raise_fd_limit()
        self._loop_thread.start()
        self._engine.start()
        try:
            self._call(self._serve_api(), timeout=10)
        except _ListenError as exc:
            self.stop()
            raise ConfigError(f"{self.config.path}: {exc.key}: cannot listen on {exc.address}: "
                              f"{exc.reason}") from None
        self._started = True
        raft = (f"read replica of {', '.join(p.id for p in self.config.peers)}"
                if self.config.is_replica else f"raft on {self.config.raft_address}")
        log.info("node %s: %s, API on %s://%s", self.config.id, raft, self.config.scheme,
                 self.config.api_address)

    async def _serve_api(self) -> None:
        config, address = self.config, self.config.api_address
        self._http = HttpFront(self._service)
        caps = connection_caps(config.limits, self._fd_limit, config.native_address is not None)
        self._http_port = ClientPort(
            "HTTP", self._http.connection,
            ConnectionGate("HTTP", caps.http, caps.fd_ceiling), self._ssl_server)
        try:
            await self._http_port.listen(address)
        except OSError as exc:
            raise _ListenError("api_address", address, exc) from None
        if config.native_address is not None:   # pipelined native protocol (native.py)
            self._native = NativeServer(self._service)
            try:
                await self._native.start(ConnectionGate("native", caps.native, caps.fd_ceiling),
                                         self._ssl_server)
            except OSError as exc:
                raise _ListenError("native_address", self.config.native_address, exc) from None
        log.info("client ports: at most %d HTTP and %d native connections (open-files limit %d)",
                 caps.http, caps.native, self._fd_limit)
        self._leases.start()
        self._token_watch = asyncio.get_running_loop().create_task(self._watch_tokens())
        self._removal_task = asyncio.get_running_loop().create_task(self._removal.run())

    async def _watch_tokens(self) -> None:
        """Re-read the tokens file when it changes: a stat a second, no restart needed."""
        while True:
            await asyncio.sleep(TOKENS_CHECK_INTERVAL_S)
            self._reload_tokens()

    def _reload_tokens(self, force: bool = False) -> None:
        try:
            self._service.tokens.reload_if_changed(force)
        except Exception:  # noqa: BLE001 - the tokens in force stay; the next check tries again
            log.exception("tokens file reload failed")

    def reload_tokens(self) -> None:
        """Re-read the tokens file now, changed or not (SIGHUP).  Safe from any thread."""
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._reload_tokens, True)

    def stop(self) -> None:
        """Hand leadership over if this node leads (so that the others need not wait for an
        election timeout), release the node's session, stop serving, flush the journal.
        Idempotent."""
        if self._loop.is_closed():
            return
        was_started = self._started
        if was_started:
            successor = self._engine.hand_over()
            if successor is not None:
                log.info("node %s: handed leadership to %s", self.config.id, successor)
            self.close_session()
        if self._token_watch is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._token_watch.cancel)
        if self._removal_task is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._removal_task.cancel)
        if self._http is not None and self._loop.is_running():
            try:
                self._call(self._leases.stop(), timeout=5)
                self._call(self._service.messaging.stop(), timeout=5)
                if self._native is not None:
                    self._call(self._native.close(), timeout=5)
                if self._http_port is not None:
                    self._call(self._http_port.close(), timeout=5)
                self._call(self._http.close(), timeout=5)
            except Exception:  # noqa: BLE001 - stopping anyway
                log.exception("API shutdown failed")
        self._engine.stop()
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
        if not self._loop.is_running():
            self._loop.close()
        self._started = False
        if was_started:
            log.info("node %s stopped", self.config.id)

    def __enter__(self) -> "Node":
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- embedded API -------------------------------------------------------------------------
    def _call(self, coroutine: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise Timeout(f"no answer within {timeout:g}s") from None

    def request(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """One op through this node's own service (the ``Requester`` of ``consensus_store.api``)."""
        if not self._started:
            raise Unavailable("node is not running")
        wait = max(timeout or self.config.limits.request_timeout_s, body.get("wait", 0)) + 1.0
        result = self._call(self._service.handle(op, body, timeout), wait)
        result["header"] = self._service.header()
        return result

    def get(self, key: str, *, consistency: Consistency | str | None = None,
            timeout: float | None = None) -> KeyValue | None:
        """Local reads come straight from memory.  ``session`` is local here: this node's own
        writes return only after this node applied them."""
        if consistency in _READ_FROM_MEMORY:
            record = self._engine.machine.keyspace.records.get(key)
            if record is None:
                return None
            return KeyValue(key, _private(record[0]), *record[1:])
        return super().get(key, consistency=consistency, timeout=timeout)

    def get_value(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` from local memory (the fastest read there is)."""
        return _private(self._engine.machine.get_value(key, default))

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        return self._call(self._service.status(), timeout)

    @property
    def applied_index(self) -> int:
        return self._engine.applied_index

    def digest(self) -> str:
        """Digest of the replicated state (equal on converged replicas)."""
        if not self._engine.started:
            raise Unavailable("node is not running")
        return self._service.digest()["digest"]

    def snapshot_save(self, path: str | Path, *, consistency: str = "linearizable",
                      timeout: float | None = None) -> Any:
        """This node's state as a backup file, like ``Client.snapshot_save`` (docs/backup.md)."""
        if not self._started:
            raise Unavailable("node is not running")
        return save_to_file(self._service, Path(path), consistency,
                            timeout or self.config.limits.request_timeout_s, self._call)


def _tls_contexts(config: NodeConfig) -> tuple[Any, Any]:
    """(what the client ports serve with, what this node calls the other nodes' API with), or
    (None, None) without ``[tls]``.  A file that does not load is a ConfigError naming it."""
    tls = config.tls
    if tls is None:
        return None, None

    def fail(key: str, path: Path, problem: str) -> ConfigError:
        return ConfigError(f"{config.path}: tls.{key}: {path}: {problem}")

    served = server_context(tls.cert_file, tls.key_file, tls.client_ca_file, fail=fail)
    # the node presents its own certificate when the nodes require client certificates
    own = (tls.cert_file, tls.key_file) if tls.client_ca_file is not None else (None, None)
    calls = client_context(tls.ca_file, *own, fail=fail,
                           names=("ca_file", "cert_file", "key_file"))
    return served, calls
