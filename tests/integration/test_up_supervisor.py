"""`consensus-store up --nodes 3` as a user runs it: kill -9 the leader's process and the
cluster keeps taking writes while the supervisor restarts the dead node, which catches up;
Ctrl-C stops everything."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consensus_store.client import Client
from consensus_store.models import Role

pytestmark = pytest.mark.timeout(180)


def _free_base_port(size: int) -> int:
    """A base port whose raft, HTTP and native ports (base+i, +100, +200) are all free."""
    for _ in range(50):
        base = random.randrange(20000, 40000)
        ports = [base + offset + i for offset in (0, 100, 200) for i in range(size)]
        try:
            for port in ports:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


def _wait_for_line(process: subprocess.Popen, lines: list[str], needle: str,
                   timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not printed within {timeout}s; output:\n{''.join(lines)}")


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_up_restarts_a_killed_leader_while_the_others_serve(tmp_path: Path) -> None:
    base = _free_base_port(3)
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    up = subprocess.Popen([sys.executable, "-m", "consensus_store", "up", "--nodes", "3",
                           "--base-port", str(base), "--data-dir", str(tmp_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        _wait_for_line(up, lines, "cluster up", 60)
        config = tmp_path / "config" / "node1.toml"
        with Client.from_config(config, timeout=5.0) as client:
            client.put("before", 1)
            leader = next(s for s in client.cluster_status(timeout=2.0) if s.role is Role.LEADER)
            port = base + 100 + int(leader.id.removeprefix("node")) - 1
            pid = next(p for p in _children(up.pid)
                       if f"node{int(leader.id.removeprefix('node'))}.toml" in
                       Path(f"/proc/{p}/cmdline").read_text())
            os.kill(pid, signal.SIGKILL)
            exited = _wait_for_line(up, lines, "exited with code -9", 10)
            assert leader.id in exited and "restarting in 1s" in exited
            # The majority elects a leader and serves while the dead node is down.
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.put("during", 2)
                    break
                except Exception:   # noqa: BLE001 - retried until the new leader answers
                    if time.monotonic() > deadline:
                        raise
            _wait_for_line(up, lines, f"{leader.id} restarted", 15)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                statuses = {s.id: s for s in client.cluster_status(timeout=2.0)
                            if s.role is not Role.DOWN}
                leaders = [s for s in statuses.values() if s.role is Role.LEADER]
                if leader.id in statuses and len(leaders) == 1 and \
                        statuses[leader.id].applied_index >= leaders[0].commit_index:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"{leader.id} did not catch up: {statuses}")
        with Client([f"http://127.0.0.1:{port}"], token=_token(tmp_path)) as only_restarted:
            assert only_restarted.get("during", consistency="local").value == 2
        nodes = _children(up.pid)
        assert len(nodes) == 3
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        try:
            out, _ = up.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            out, _ = up.communicate()
        lines.append(out or "")
    assert up.returncode == 0, "".join(lines)
    assert "stopped" in lines[-1]
    for pid in nodes:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _token(data_root: Path) -> str:
    text = (data_root / "config" / "tokens.toml").read_text()
    return text.split('token = "', 1)[1].split('"', 1)[0]
