"""``consensus-store repair``: cut a torn journal tail after a crash, and nothing else.

A torn tail is what a crash can leave at the end of the journal: a last record cut short, or a
last record failing its checksum with nothing valid after it.  Its entries were never
acknowledged by this node with ``durability = "fsync"`` (an entry is synced before it is), and
with ``"process"`` the rest of the cluster still has them: the node gets them again from the
leader.  Damage anywhere else (a record in the middle, the snapshot, the term/vote file) is
refused: cutting it would drop entries the node may have acknowledged.
"""
from __future__ import annotations

import os
from pathlib import Path

from consensus_store.errors import ConfigError
from consensus_store.node.engine.journal import replace_journal_file, scan_journal
from consensus_store.node.engine.storage import (JOURNAL_NAME, META_NAME, SNAPSHOT_NAME, MetaFile,
                                          describe_os_error, fsync_directory_of,
                                          fsync_fd, snapshot_payload)


def repair_data_dir(data_dir: Path) -> list[str]:
    """Cut a torn journal tail; one line per thing removed.  StorageCorrupt when it refuses
    (nothing is changed then), ConfigError when there is no data dir."""
    if not data_dir.is_dir():
        raise ConfigError(f"{data_dir}: no such data dir")
    snapshot = data_dir / SNAPSHOT_NAME
    if snapshot.exists():                        # check everything before changing anything
        snapshot_payload(str(snapshot), snapshot.read_bytes())
    MetaFile(str(data_dir / META_NAME), sync=True).load()
    journal = str(data_dir / JOURNAL_NAME)
    scan = scan_journal(journal)
    damage = scan.damage
    if damage is None:
        return []
    if not damage.torn:
        raise scan.error(journal)
    last = f"index {scan.entries[-1][1]}" if scan.entries else "no entry"
    removed = (f"removed the torn tail of {journal}: {damage.reason} at offset "
               f"{damage.offset}; {scan.size - damage.offset} bytes to the end of the file "
               f"(the journal now ends at {last})")
    try:
        if scan.legacy:       # pysyncobj's format: the good records, rewritten in ours
            fd, _ = replace_journal_file(journal, scan.entries, sync=True)
            os.close(fd)
            return [removed, f"converted {journal} to checksummed records "
                             f"({len(scan.entries)} entries kept)"]
        fd = os.open(journal, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, damage.offset)   # 0 (a torn header): a new journal
            fsync_fd(fd, journal)
        finally:
            os.close(fd)
        fsync_directory_of(journal)
    except OSError as exc:
        raise ConfigError(f"{journal}: cannot cut the torn tail: "
                          f"{describe_os_error(exc)}") from None
    return [removed]

