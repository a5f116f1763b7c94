"""``consensus-store snapshot restore``: seed an empty data dir of a new cluster's node from a
backup file (backup_file.py), as ``etcdctl snapshot restore`` does.  Offline: the node is not
running.

What it writes is the snapshot a node would have taken itself (``raft.snapshot`` in
storage.py's checksummed format, read with its checks at start-up): the restored state, with
pysyncobj's last two entries set to no-ops at indexes A-1 and A (A: the backup's applied index)
in term 0, like the no-op a fresh node starts with at index 1.  Every node restored from the
same file so holds the same log prefix; the first leader then appends at A+1 in term 1, and
every later write gets a revision above the backup's (revisions never go back).  No journal and
no term/vote file: the node makes them as a fresh node does.

Sessions are kept with their keys, as etcd keeps leases: the new leader grants every session a
fresh full TTL (node/leases.py), and a session no client keeps alive expires after it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pysyncobj.node import TCPNode

from consensus_store import backup_file as backup
from consensus_store.config import NodeConfig
from consensus_store.errors import ConfigError
from consensus_store.node.engine.peer_messages import NO_OP
from consensus_store.node.engine.snapshots import PlainMachine
from consensus_store.node.engine.storage import (SNAPSHOT_NAME, describe_os_error,
                                                 encode_snapshot, prepare_data_dir,
                                                 replace_file)
from consensus_store.state.machine import SNAPSHOT_FORMAT

FIRST_TERM = 0             # the term of pysyncobj's first entry on a fresh node
MIN_INDEX = 2              # the snapshot names two entries, the earlier at index >= 1


@dataclass(frozen=True)
class Restored:
    header: backup.BackupHeader
    data_dir: Path
    index: int             # the snapshot's last index: the next write's revision is above it


def read_backup(path: Path) -> tuple[backup.BackupHeader, dict]:
    """The verified header and plain state of a backup file (BackupDamaged: exit 2)."""
    try:
        with open(path, "rb") as file:
            return backup.decode(file, str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the backup: {describe_os_error(exc)}") from None


def restore_data_dir(backup_path: Path, config: NodeConfig,
                     data_dir: Path | None = None) -> Restored:
    """Write the snapshot of ``backup_path`` into the node's data dir (``data_dir`` overrides
    the config's), which must be absent or empty; raises ConfigError (one line) if not, or
    if the file is damaged."""
    target = Path(data_dir if data_dir is not None else config.data_dir).expanduser()
    _refuse_unless_empty(target)
    header, state = read_backup(backup_path)
    index = max(header.applied_index, MIN_INDEX)
    state.update(format=SNAPSHOT_FORMAT, applied_index=index)
    no_op = bytes([NO_OP])        # pysyncobj's no-op entry
    previous, last = (no_op, index - 1, FIRST_TERM), (no_op, index, FIRST_TERM)
    # the voters, as a fresh node of this config starts with (a read replica is none of them)
    voters = [str(peer.raft_address) for peer in config.peers]
    if not config.is_replica:
        voters.append(str(config.raft_address))
    cluster = {TCPNode(address) for address in voters}
    # pysyncobj's snapshot tuple: (its own replicated attributes, last entry, the one before,
    # the cluster); our only replicated attribute is the machine (raft.py).
    snapshot = ({"machine": PlainMachine(state)}, last, previous, cluster)
    try:
        prepare_data_dir(target)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot create the data dir: "
                          f"{describe_os_error(exc)}") from None
    replace_file(str(target / SNAPSHOT_NAME), encode_snapshot(snapshot), sync=True)
    return Restored(header, target, index)


def _refuse_unless_empty(target: Path) -> None:
    try:
        entries = os.listdir(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read the data dir: "
                          f"{describe_os_error(exc)}") from None
    if entries:
        more = f" and {len(entries) - 1} more" if len(entries) > 1 else ""
        raise ConfigError(f"{target}: data dir is not empty (it holds {sorted(entries)[0]}"
                          f"{more}); restore seeds a new node only: move it aside or pick an "
                          f"empty one")
