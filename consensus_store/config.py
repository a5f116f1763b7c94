"""TOML node config -> frozen, validated dataclasses.

One file describes one node of a cluster.  Every key is documented in README.md ("Config
reference").  Unknown keys are errors, so a typo never passes silently; every error is a
``ConfigError`` whose message names the file and the key.  ``SyncObjConf`` is built from this in
exactly one place: ``consensus_store.node.engine.raft.syncobj_conf``.  Addresses (``HOST:PORT``,
their canonical form and pysyncobj's spelling) are ``addresses.py``'s, re-exported here.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import logging
import stat
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from consensus_store.addresses import Address, RaftAddress, parse_address, parse_raft_address
from consensus_store.errors import ConfigError

MAX_KEY_BYTES = 4096
MIN_SECRET_CHARS = 16

log = logging.getLogger("consensus_store.config")

# sha256 of the peer secret shipped in cluster_configs/local/: refused off loopback.
DEV_PEER_SECRET_SHA256 = "d280c4b45179561ae8b2a049365cb5f24280991d2dfe7a01c51620e09d9bd553"


class Role(enum.Enum):
    """What a client token may do (README, "Security")."""
    READ = "read"             # reads, status, watches
    READWRITE = "readwrite"   # + writes, sessions and coordination through its own sessions
    ADMIN = "admin"           # + digest, membership, other clients' sessions

    def allows(self, needed: "Role") -> bool:
        return _ROLE_RANK[self] >= _ROLE_RANK[needed]


_ROLE_RANK = {Role.READ: 0, Role.READWRITE: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class ClientToken:
    name: str
    token: str = field(repr=False)
    role: Role


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the HTTP and native client ports (peer traffic has its own AEAD)."""
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None     # set: clients must present a certificate it signed
    ca_file: Path | None = None            # what signed the nodes' certificates: clients from
                                           # this config and the nodes' own calls trust it


@dataclass(frozen=True)
class Peer:
    id: str
    raft_address: RaftAddress
    api_address: Address
    native_address: Address | None = None


@dataclass(frozen=True)
class RaftTiming:
    heartbeat_interval_s: float = 0.1
    election_timeout_min_s: float = 0.5
    election_timeout_max_s: float = 1.2
    leader_fallback_timeout_s: float = 0.5
    connection_timeout_s: float = 1.5
    connection_retry_s: float = 0.5
    log_compaction_min_entries: int = 20_000
    log_compaction_min_time_s: float = 300.0
    log_compaction_max_bytes: int = 64 * 1024 * 1024


REQUEST_OVERHEAD_BYTES = 64 * 1024   # room for a request's key and fields beside its value


@dataclass(frozen=True)
class Limits:
    max_value_bytes: int = 1024 * 1024
    request_timeout_s: float = 10.0
    session_read_wait_s: float = 5.0
    # Counts the state machine enforces (429 limit_exceeded): the node that takes a request
    # stamps its own values into the command, so every replica answers alike; apply also
    # holds each to a ceiling fixed in code (consensus_store/state/limits.py).
    max_sessions: int = 10_000
    max_groups: int = 10_000
    max_members_per_group: int = 10_000
    max_members: int = 100_000                # in all groups
    max_names: int = 100_000
    max_lock_waiters_per_lock: int = 10_000   # its holder included
    max_lock_waiters: int = 100_000           # in all locks
    max_candidates_per_election: int = 10_000
    # A range read's reply (more: count > len(kvs) when cut); txn reads have fixed bounds.
    max_range_keys: int = 10_000
    max_range_bytes: int = 4 * 1024 * 1024
    # Each node's watch history (older revisions answer 410 compacted).
    watch_history_events: int = 100_000
    watch_history_bytes: int = 16 * 1024 * 1024
    max_watchers: int = 20_000             # long-polls and streams at once (more: 503)
    max_http_connections: int = 1000       # per port; more are closed at accept
    max_native_connections: int = 1000
    header_timeout_s: float = 10.0         # an HTTP request's headers, from its first byte
    body_timeout_s: float = 30.0           # an HTTP request's body, once its headers are in
    idle_timeout_s: float = 30.0           # a connection between requests (HTTP keep-alive)
    max_in_flight_bytes: int = 16 * 1024 * 1024   # native requests running on one connection

    @property
    def max_request_bytes(self) -> int:
        """An HTTP body or native frame: one value at the limit, with its key and fields."""
        return self.max_value_bytes + REQUEST_OVERHEAD_BYTES

    @property
    def max_entry_bytes(self) -> int:
        """The largest log entry a node proposes: a request's command plus the node's own
        fields; larger group-commit batches are split, a larger single command gets 413."""
        return self.max_request_bytes + REQUEST_OVERHEAD_BYTES


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    id: str
    raft_address: RaftAddress
    api_address: Address
    data_dir: Path
    peer_secret: str = field(repr=False)    # between nodes only; never a client credential
    tokens_file: Path                       # client tokens; the node reloads it when it changes
    tokens: tuple[ClientToken, ...] = field(repr=False)
    peers: tuple[Peer, ...]
    raft: RaftTiming = field(default_factory=RaftTiming)
    limits: Limits = field(default_factory=Limits)
    log_level: str = "info"
    native_address: Address | None = None   # pipelined binary protocol; None: HTTP only
    durability: str = "fsync"                # on disk on a majority before ack; or "process"
    tls: TlsConfig | None = None
    role: str = "voter"      # or "replica": non-voting, read-only (docs/replicas.md)

    @property
    def is_replica(self) -> bool:
        return self.role == "replica"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def admin_token(self) -> str | None:
        """The first admin token (what ``Client.from_config`` and the local tools use)."""
        return next((t.token for t in self.tokens if t.role is Role.ADMIN), None)

    @property
    def api_endpoints(self) -> list[str]:
        """Every node's client API URL, this node's first."""
        return [f"{self.scheme}://{a}" for a in (self.api_address, *(p.api_address for p in self.peers))]

    @property
    def native_endpoints(self) -> list[str]:
        """Every node's native-protocol URL (``tcp://host:port``), if all nodes serve one."""
        addresses = [self.native_address] + [p.native_address for p in self.peers]
        if any(a is None for a in addresses):
            return []
        return [f"{'tls' if self.tls else 'tcp'}://{a}" for a in addresses]

    def with_data_dir(self, data_dir: Path) -> "NodeConfig":
        return replace(self, data_dir=data_dir)


_TOP_KEYS = {"id", "raft_address", "api_address", "native_address", "data_dir", "peer_secret",
             "peer_secret_file", "tokens_file", "log_level", "durability", "peers", "raft",
             "limits", "tls", "role"}
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "ca_file"}
_TOKEN_KEYS = {"name", "token", "role"}
DURABILITY_MODES = ("process", "fsync")
NODE_ROLES = ("voter", "replica")
_PEER_KEYS = {"id", "raft_address", "api_address", "native_address"}
_LOG_LEVELS = ("debug", "info", "warning", "error")


class _Reader:
    """Typed access to one table of the file, with errors naming file and key."""

    def __init__(self, path: Path, table: dict[str, Any], prefix: str = "") -> None:
        self.path, self.table, self.prefix = path, table, prefix

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.prefix}{key}: {problem}")

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.table:
            if key not in allowed:
                raise self.fail(key, "unknown key")

    def str(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if value is None:
            raise self.fail(key, "missing")
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string")
        return value

    def address(self, key: str) -> Address:
        return parse_address(self.str(key), lambda msg: self.fail(key, msg))

    def raft_address(self, key: str) -> RaftAddress:
        return parse_raft_address(self.str(key), lambda msg: self.fail(key, msg))

    def optional_address(self, key: str) -> Address | None:
        return self.address(key) if key in self.table else None

    def number(self, key: str, default: float | int, *, integer: bool = False) -> Any:
        value = self.table.get(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
            raise self.fail(key, f"must be a positive {'integer' if integer else 'number'}")
        return value


def load_config(path: str | Path) -> NodeConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path) -> NodeConfig:
    top = _Reader(path, raw)
    if "secret" in raw or "secret_file" in raw:
        key = "secret" if "secret" in raw else "secret_file"
        raise top.fail(key, "replaced by 'peer_secret_file' (between nodes) and 'tokens_file' "
                            "(client tokens with roles): see README, Security")
    top.check_keys(_TOP_KEYS)
    tokens_file = _resolve(path, top.str("tokens_file"))
    node_id = top.str("id")
    config = NodeConfig(
        path=path, id=node_id, raft_address=top.raft_address("raft_address"),
        api_address=top.address("api_address"),
        data_dir=_resolve(path, top.str("data_dir")),
        peer_secret=_read_secret(top, path), tokens_file=tokens_file,
        tokens=load_tokens(tokens_file, lambda msg: top.fail("tokens_file", msg)),
        peers=_read_peers(top, path), tls=_read_tls(top, path),
        raft=_read_table(top, "raft", RaftTiming), limits=_read_table(top, "limits", Limits),
        log_level=top.str("log_level", "info"),
        native_address=top.optional_address("native_address"),
        durability=top.str("durability", "fsync"),
        role=top.str("role", "voter"),
    )
    if config.role not in NODE_ROLES:
        raise top.fail("role", f"must be one of {', '.join(NODE_ROLES)}")
    if config.is_replica and not config.peers:
        raise top.fail("role", "a replica needs the cluster's voters as [[peers]]")
    if config.durability not in DURABILITY_MODES:
        raise top.fail("durability", f"must be one of {', '.join(DURABILITY_MODES)}")
    if config.log_level not in _LOG_LEVELS:
        raise top.fail("log_level", f"must be one of {', '.join(_LOG_LEVELS)}")
    _check_cluster(config, top)
    _check_timing(config.raft, _Reader(path, {}, "raft."))
    _check_secrets(config, top)
    return config


def _resolve(config_path: Path, text: str) -> Path:
    candidate = Path(text).expanduser()
    return candidate if candidate.is_absolute() else (config_path.parent / candidate).resolve()


def _read_secret(top: _Reader, path: Path) -> str:
    has_inline, has_file = "peer_secret" in top.table, "peer_secret_file" in top.table
    if has_inline == has_file:
        raise top.fail("peer_secret_file", "give exactly one of 'peer_secret_file' or 'peer_secret'")
    if has_inline:
        secret, key = top.str("peer_secret"), "peer_secret"
    else:
        key = "peer_secret_file"
        secret_path = _resolve(path, top.str(key))
        secret = _read_secret_file(secret_path, lambda msg: top.fail(key, msg))
    if len(secret) < MIN_SECRET_CHARS:
        raise top.fail(key, f"must be at least {MIN_SECRET_CHARS} characters")
    return secret


def _read_secret_file(secret_path: Path, fail: Any) -> str:
    try:
        text = secret_path.read_text(encoding="utf-8").strip()
        mode = secret_path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {secret_path}: {exc.__class__.__name__}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by group or others (mode %o): chmod 600 it",
                    secret_path, stat.S_IMODE(mode))
    return text


def load_tokens(tokens_path: Path, fail: Any) -> tuple[ClientToken, ...]:
    """Client tokens from a TOML file of ``[[tokens]]`` tables (name, token, role).  Used at
    start and by the node's reload; ``fail(message)`` builds the error to raise."""
    text = _read_secret_file(tokens_path, fail)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"{tokens_path}: not valid TOML: {exc}") from None
    tables = raw.get("tokens")
    if set(raw) - {"tokens"} or not isinstance(tables, list) or not tables:
        raise fail(f"{tokens_path}: must hold only [[tokens]] tables, at least one")
    tokens: list[ClientToken] = []
    for position, table in enumerate(tables):
        reader = _Reader(tokens_path, table if isinstance(table, dict) else {},
                         f"tokens[{position}].")
        if not isinstance(table, dict):
            raise fail(f"{tokens_path}: tokens[{position}] must be a table")
        reader.check_keys(_TOKEN_KEYS)
        name, token, role_name = reader.str("name"), reader.str("token"), reader.str("role")
        if len(token) < MIN_SECRET_CHARS:
            raise reader.fail("token", f"must be at least {MIN_SECRET_CHARS} characters")
        if not token.isascii() or not token.isprintable() or " " in token:
            raise reader.fail("token", "must be printable ASCII without spaces")
        try:
            role = Role(role_name)
        except ValueError:
            raise reader.fail("role", "must be one of read, readwrite, admin") from None
        if name == "node":
            raise reader.fail("name", "'node' is reserved for the nodes' own credential")
        if any(t.name == name for t in tokens):
            raise reader.fail("name", f"duplicate token name {name!r}")
        if any(hmac.compare_digest(t.token, token) for t in tokens):
            raise reader.fail("token", "the same token is listed twice")
        tokens.append(ClientToken(name, token, role))
    return tuple(tokens)


def node_api_token(peer_secret: str) -> str:
    """The admin credential nodes use on each other's client API (e.g. forwarded keepalives):
    derived from the peer secret, so no client token is shared with the nodes' own traffic."""
    return hmac.new(peer_secret.encode(), b"consensus_store node api token v1",
                    hashlib.sha256).hexdigest()


def _read_tls(top: _Reader, path: Path) -> TlsConfig | None:
    table = top.table.get("tls")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise top.fail("tls", "must be a table")
    reader = _Reader(path, table, "tls.")
    reader.check_keys(_TLS_KEYS)
    files = {}
    for key in sorted(_TLS_KEYS):
        if key in ("client_ca_file", "ca_file") and key not in table:
            continue
        file_path = _resolve(path, reader.str(key))
        if not file_path.is_file():
            raise reader.fail(key, f"{file_path} is not a readable file")
        files[key] = file_path
    return TlsConfig(**files)


def _is_loopback(address: Address) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; any other DNS name may resolve anywhere: it is not."""
    if address.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.host).is_loopback
    except ValueError:
        return False


def _check_secrets(config: NodeConfig, top: _Reader) -> None:
    if any(hmac.compare_digest(t.token, config.peer_secret) for t in config.tokens):
        raise top.fail("tokens_file", "a client token equals the peer secret: they must differ "
                                      "(a client token must never open the peer port)")
    dev = hashlib.sha256(config.peer_secret.encode()).hexdigest() == DEV_PEER_SECRET_SHA256
    addresses = [config.raft_address, config.api_address, config.native_address]
    if dev and not all(_is_loopback(a) for a in addresses if a is not None):
        raise top.fail("peer_secret_file", "the shipped development secret is refused on a "
                                           "non-loopback address: generate a fresh one "
                                           "(README, Security)")


def _read_peers(top: _Reader, path: Path) -> tuple[Peer, ...]:
    peers_raw = top.table.get("peers", [])      # none: a single-node cluster
    if not isinstance(peers_raw, list):
        raise top.fail("peers", "must be an array of [[peers]] tables")
    peers = []
    for position, table in enumerate(peers_raw):
        reader = _Reader(path, table if isinstance(table, dict) else {}, f"peers[{position}].")
        if not isinstance(table, dict):
            raise reader.fail("", "must be a table")
        reader.check_keys(_PEER_KEYS)
        peers.append(Peer(reader.str("id"), reader.raft_address("raft_address"),
                          reader.address("api_address"), reader.optional_address("native_address")))
    return tuple(peers)


def _read_table(top: _Reader, name: str, cls: type) -> Any:
    table = top.table.get(name, {})
    reader = _Reader(top.path, table if isinstance(table, dict) else {}, f"{name}.")
    if not isinstance(table, dict):
        raise top.fail(name, "must be a table")
    reader.check_keys({f.name for f in fields(cls)})
    values = {f.name: reader.number(f.name, f.default, integer=isinstance(f.default, int))
              for f in fields(cls)}
    return cls(**values)


def _check_cluster(config: NodeConfig, top: _Reader) -> None:
    ids = [config.id] + [p.id for p in config.peers]
    for position, peer_id in enumerate(ids[1:]):
        if ids.count(peer_id) > 1:
            raise top.fail(f"peers[{position}].id", f"duplicate node id {peer_id!r}")
    seen: dict[tuple[str, int], str] = {}    # (host, port): a raft and an API address clash
    owners = [("raft_address", config.raft_address), ("api_address", config.api_address),
              ("native_address", config.native_address)]
    for position, peer in enumerate(config.peers):
        owners += [(f"peers[{position}].raft_address", peer.raft_address),
                   (f"peers[{position}].api_address", peer.api_address),
                   (f"peers[{position}].native_address", peer.native_address)]
    for key, address in owners:
        if address is None:
            continue
        where = (address.host, address.port)
        if where in seen:
            raise top.fail(key, f"address {address.authority} is already used by {seen[where]}")
        seen[where] = key


def _check_timing(timing: RaftTiming, reader: _Reader) -> None:
    if timing.election_timeout_min_s <= 3 * timing.heartbeat_interval_s:
        raise reader.fail("election_timeout_min_s", "must exceed 3 x heartbeat_interval_s")
    if timing.election_timeout_max_s < timing.election_timeout_min_s:
        raise reader.fail("election_timeout_max_s", "must be >= election_timeout_min_s")
    if timing.leader_fallback_timeout_s <= timing.heartbeat_interval_s:
        raise reader.fail("leader_fallback_timeout_s", "must exceed heartbeat_interval_s")
    if timing.connection_timeout_s < timing.election_timeout_max_s:
        raise reader.fail("connection_timeout_s", "must be >= election_timeout_max_s")
