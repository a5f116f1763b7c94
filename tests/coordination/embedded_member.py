"""A process running an embedded Node that joins a group through its node session."""
from __future__ import annotations

import json
import sys
import threading

from consensus_store.config import load_config
from consensus_store.node import Node


def main(config_path: str, group: str) -> None:
    node = Node(load_config(config_path), session_ttl=1.5)
    node.start()
    node.groups.create(group)
    member = node.groups.join(group, member="embedded", meta={"via": node.config.id})
    print(json.dumps({"event": "joined", "node": member.node, "session": member.session}),
          flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(*sys.argv[1:])
