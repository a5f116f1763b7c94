"""An embedded node owns a session: when its process dies, what it owned goes too."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from consensus_store.launcher import LocalCluster, write_cluster_configs

from .support import REPO, wait_until


def test_dead_embedded_nodes_members_vanish(tmp_path: Path) -> None:
    paths = write_cluster_configs(tmp_path / "configs", 3)
    daemons = LocalCluster(paths[:2], data_root=tmp_path / "data")
    daemons.start()
    embedded = subprocess.Popen(
        [sys.executable, "-m", "tests.coordination.embedded_member", str(paths[2]), "pool"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert embedded.stdout is not None
        joined = json.loads(embedded.stdout.readline())
        assert joined["node"] == "n3"          # the session was opened through the embedded node
        with daemons.client() as client:
            members = client.groups.members("pool", consistency="linearizable")
            assert [(m.id, m.node) for m in members] == [("embedded", "n3")]
            embedded.kill()
            embedded.wait()
            wait_until(lambda: client.groups.members("pool") == [], 20,
                       "the dead embedded node's member to vanish")
            assert client.put("still", "writable").value == "writable"   # 2 of 3 remain
    finally:
        if embedded.poll() is None:
            embedded.kill()
            embedded.wait()
        daemons.stop()
