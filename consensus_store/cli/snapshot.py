"""``consensus-store snapshot save FILE`` and ``snapshot restore FILE --config NODE.toml``.

save: the backup of the state of the node the client reaches (admin token), consistent at one
revision, checked and written to FILE (docs/backup.md).  restore: offline, seeds the empty data
dir of one node of a new cluster; run it once per node with each node's config.  A damaged or
truncated file, a non-empty data dir or a bad config: one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from consensus_store.errors import ConfigError

ACTIONS = ("save", "restore")


def add_arguments(sub: argparse.ArgumentParser) -> None:
    """The snapshot command's own arguments (the client options are main's)."""
    sub.add_argument("action", choices=ACTIONS)
    sub.add_argument("file", type=Path, help="the backup file")
    sub.add_argument("--data-dir", type=Path,
                     help="restore: override the config's data_dir (as 'node --data-dir')")
    sub.add_argument("--local", action="store_true",
                     help="save: copy the node's state as it is, without first confirming "
                          "with the majority (a node cut off from it)")


def run(args: argparse.Namespace, make_client: Callable[[argparse.Namespace], Any]) -> int:
    if args.action == "restore":
        return _restore(args)
    consistency = "local" if args.local else "linearizable"
    with make_client(args) as client:
        header = client.snapshot_save(args.file, consistency=consistency,
                                      timeout=args.timeout)
    if args.json:
        print(json.dumps(header.to_json()))
    else:
        print(f"saved {args.file}: revision {header.revision} (index {header.applied_index}), "
              f"{header.keys} keys, {header.sessions} sessions, from {header.node}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from consensus_store.config import load_config
    from consensus_store.node.engine.restore import restore_data_dir
    if args.config is None:
        raise ConfigError("snapshot restore needs --config NODE.toml (the node to seed)")
    if args.local:
        raise ConfigError("--local is an option of snapshot save")
    config = load_config(args.config)
    restored = restore_data_dir(args.file, config, args.data_dir)
    header = restored.header
    if args.json:
        print(json.dumps({**header.to_json(), "data_dir": str(restored.data_dir),
                          "node": config.id}))
    else:
        print(f"restored revision {header.revision} (index {header.applied_index}), "
              f"{header.keys} keys, {header.sessions} sessions into {restored.data_dir} "
              f"for node {config.id}; start the node; new writes get revisions above "
              f"{restored.index}")
    return 0
