"""``put(key, value, session=...)`` makes an ephemeral key (it goes when the session ends or
expires) from ``Client`` and the embedded API layer; ``client.sessions()`` and
``consensus-store sessions`` list open sessions (admin role)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from consensus_store import AsyncClient
from consensus_store.client import Client
from consensus_store.errors import Forbidden, InvalidRequest
from consensus_store.config import load_config
from consensus_store.launcher import LocalCluster, write_cluster_configs
from consensus_store.node import Node

from .support import REPO, wait_until

READ_TOKEN = "ephemeral-test-read-token-0123456789"


def cli(cluster: LocalCluster, *argv: str, token: str | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "consensus_store", *argv, "--endpoints",
                           ",".join(cluster.endpoints), f"--token={token or cluster.token}"],
                          capture_output=True, text=True, timeout=60)


def test_ephemeral_key_goes_when_its_session_closes(cluster: LocalCluster) -> None:
    with cluster.client() as client:
        session = client.session(ttl=5)
        kv = client.put("eph/closed", {"n": 1}, session=session)
        assert client.get("eph/closed").value == {"n": 1} and kv.version == 1
        plain = client.put("eph/plain", 1)              # no session: stays
        listed = {s["id"]: s for s in client.sessions()}
        assert listed[session.id]["keys"] == 1
        session.close()
        assert client.get("eph/closed", consistency="linearizable") is None
        assert client.get("eph/plain").mod_revision == plain.mod_revision
        with pytest.raises(InvalidRequest):
            client.put("eph/bad", 1, session=42)         # not a Session


def start_holder(cluster: LocalCluster, key: str, ttl: float, *mode: str
                 ) -> tuple[subprocess.Popen, int]:
    """A holder process and its session id, once it holds ``key``."""
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.coordination.ephemeral_holder",
         ",".join(cluster.endpoints), cluster.token, key, str(ttl), *mode],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    line = holder.stdout.readline()             # the holder prints once the key is in
    if not line.startswith("ready "):
        holder.kill()
        holder.wait(10)
        raise AssertionError(f"holder did not start: {line!r}")
    return holder, int(line.split()[1])


def test_ephemeral_key_goes_when_its_owner_is_killed(cluster: LocalCluster) -> None:
    """A process holding the key dies with kill -9: its session expires after its TTL (the
    leader's lease keeper), and the key goes with it."""
    ttl = 1.5
    holder, session_id = start_holder(cluster, "eph/killed", ttl)
    try:
        with cluster.client() as client:
            assert client.get("eph/killed").value == "held"
            assert session_id in {s["id"] for s in client.sessions()}
            os.kill(holder.pid, signal.SIGKILL)       # the process we started, by its PID
            holder.wait(10)
            wait_until(lambda: client.get("eph/killed", consistency="linearizable") is None,
                       ttl + 10, "the killed owner's key to expire with its session")
            assert session_id not in {s["id"] for s in client.sessions()}
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(10)


def test_async_owner_killed_loses_its_key_and_lock(cluster: LocalCluster) -> None:
    """The same through AsyncClient: its session (keepalive task), ephemeral put and lock go
    when the process is killed -9, and an async client then gets the lock."""
    ttl = 1.5
    holder, session_id = start_holder(cluster, "eph/async", ttl, "async")

    async def after_kill() -> None:
        async with AsyncClient(cluster.endpoints, token=cluster.token) as client:
            assert (await client.get("eph/async")).value == "held"
            lock = client.lock("eph/async")
            assert not await lock.acquire(blocking=False)          # the holder has it
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(10)
            assert await lock.acquire(timeout=ttl + 10)             # once its session expired
            assert await client.get("eph/async", consistency="linearizable") is None
            assert session_id not in {s["id"] for s in await client.sessions()}
            await lock.release()
    try:
        asyncio.run(asyncio.wait_for(after_kill(), 40))
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(10)


def test_sessions_cli_and_role(cluster: LocalCluster) -> None:
    with cluster.client() as client:
        session = client.session(ttl=7)
        client.put("eph/cli", 1, session=session)
        listed = json.loads(cli(cluster, "sessions", "--json").stdout)
        mine = next(s for s in listed if s["id"] == session.id)
        assert mine == {"id": session.id, "ttl": 7, "node": session.node, "keys": 1}
        table = cli(cluster, "sessions")
        assert table.returncode == 0 and str(session.id) in table.stdout
        assert "sessions" in table.stdout
        session.close()
    tokens = cluster.nodes[next(iter(cluster.nodes))].config.tokens_file
    with open(tokens, "a") as out:                   # every node reads this file (reloaded)
        out.write(f'\n[[tokens]]\nname = "reader"\ntoken = "{READ_TOKEN}"\nrole = "read"\n')
    with cluster.client() as admin:
        with Client(cluster.endpoints, token=READ_TOKEN) as reader:
            def refused() -> bool:
                try:
                    reader.sessions()
                except Forbidden:
                    return True
                return False
            wait_until(refused, 15, "a read token to be refused the sessions list")
        assert isinstance(admin.sessions(), list)
    denied = cli(cluster, "sessions", token=READ_TOKEN)
    assert denied.returncode == 1 and denied.stderr.count("\n") == 1
    assert "forbidden" in denied.stderr


def test_embedded_node_ephemeral_put_and_sessions(tmp_path: Path) -> None:
    """The embedded ``Node`` shares the API layer: put(session=) and sessions() too."""
    node = Node(load_config(write_cluster_configs(tmp_path / "configs", 1)[0]))
    node.start()
    try:
        wait_until(lambda: node.status()["role"] == "leader", 20, "the one node to lead")
        session = node.session(ttl=5)
        node.put("emb/eph", 1, session=session)
        assert [s["keys"] for s in node.sessions() if s["id"] == session.id] == [1]
        session.close()
        assert node.get("emb/eph") is None and node.sessions() == []
    finally:
        node.stop()
