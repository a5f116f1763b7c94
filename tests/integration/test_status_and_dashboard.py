"""``status`` and ``dashboard`` against a real 3-node cluster with a node killed (kill -9 of a
process this test started, by its PID): the killed node is shown down under its configured id
with the reason, the live ones with their lag; the dashboard's panels show the coordination
state; ``status --watch --json`` emits JSON lines."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from consensus_store.launcher import LocalCluster, free_ports

from .support import ClusterPool, followers
from .test_cli import CLI, run_cli

READ_TOKEN = "reader-token-0123456789abcdef"


@pytest.fixture
def cluster(cluster_pool: ClusterPool) -> LocalCluster:
    paths = cluster_pool.write_configs(3, name="dashboard")
    with open(paths[0].parent / "tokens.toml", "a") as tokens:
        tokens.write(f'[[tokens]]\nname = "reader"\ntoken = "{READ_TOKEN}"\nrole = "read"\n')
    return cluster_pool.launch(paths)


def test_a_killed_node_is_down_under_its_id_in_status_and_the_dashboard(
        cluster: LocalCluster, tmp_path: Path) -> None:
    config = [f"--config={cluster.config_paths[0]}"]   # type: ignore[attr-defined]
    leader = cluster.wait_for_leader()
    with cluster.client(session_ttl=30) as client:
        client.groups.create("workers")
        client.groups.join("workers", "w1")
        client.register_name("scheduler", {"pid": 1})
        assert client.lock("db").acquire(timeout=5)
        client.election("primary").campaign("alpha", priority=1)
        victim = followers(cluster, leader)[0]
        cluster.nodes[victim].kill()

        status = run_cli("status", *config, "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        nodes = {n["id"]: n for n in json.loads(status.stdout)}
        assert set(nodes) == set(cluster.nodes)
        down = nodes[victim]
        assert (down["role"], down["reason"]) == ("down", "connection refused"), down
        assert down["addresses"]["raft"] == str(cluster.nodes[victim].config.raft_address)
        assert down["membership"] == "voter" and down["lag"] is None
        for node_id in set(nodes) - {victim}:
            assert nodes[node_id]["role"] in ("leader", "follower")
            assert isinstance(nodes[node_id]["lag"], int) and nodes[node_id]["lag"] >= 0

        frame = run_cli("dashboard", "--once", "--json", *config, cwd=tmp_path)
        assert frame.returncode == 0, frame.stderr
        snapshot = json.loads(frame.stdout)
        shown = {n["id"]: n for n in snapshot["nodes"]}
        assert shown[victim]["role"] == "down" and shown[victim]["reason"]
        assert snapshot["cluster"]["voters"] == 3 and snapshot["cluster"]["quorum"] is True
        assert any(f"node {victim} down" in e["text"] for e in snapshot["events"])
        panels = snapshot["coordination"]
        assert {"group": "workers", "members": 1} in panels["groups"]
        assert [(lock["name"], lock["waiters"]) for lock in panels["locks"]] == [("db", 0)]
        assert [e["leader"] for e in panels["elections"]] == ["alpha"]
        assert [n["name"] for n in panels["names"]] == ["scheduler"]
        assert client.default_session().id in [s["id"] for s in panels["sessions"]]

        text = run_cli("dashboard", "--once", *config, cwd=tmp_path)
        assert text.returncode == 0, text.stderr
        rows = [line for line in text.stdout.splitlines() if line.startswith(f"│ {victim} ")]
        assert len(rows) == 1 and "down" in rows[0] and "connection refused" in rows[0], \
            text.stdout

        # A read-only token sees everything but the sessions.
        reader = run_cli("dashboard", "--once", "--json", *config, f"--token={READ_TOKEN}",
                         cwd=tmp_path)
        assert reader.returncode == 0, reader.stderr
        assert json.loads(reader.stdout)["coordination"]["sessions_note"] == "needs admin"


def test_a_node_is_named_from_the_others_status_without_a_config(cluster: LocalCluster,
                                                                 tmp_path: Path) -> None:
    leader = cluster.wait_for_leader()
    victim = followers(cluster, leader)[0]
    cluster.nodes[victim].kill()
    target = ["--endpoints", ",".join(cluster.endpoints), f"--token={cluster.token}"]
    result = run_cli("status", *target, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    down = [n for n in json.loads(result.stdout) if n["role"] == "down"]
    assert [(n["id"], n["endpoint"]) for n in down] == [(victim, cluster.nodes[victim].endpoint)]


def test_status_watch_json_emits_one_array_per_refresh(cluster: LocalCluster,
                                                       tmp_path: Path) -> None:
    args = ["status", "--watch", "--json", "--interval", "0.2", "--endpoints",
            ",".join(cluster.endpoints), f"--token={cluster.token}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENSUS_STORE_")}
    process = subprocess.Popen(CLI + args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        for line in lines:
            assert {n["id"] for n in json.loads(line)} == set(cluster.nodes)
    finally:
        process.send_signal(signal.SIGINT)     # the process this test started, by its PID
        try:
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_the_dashboard_reports_joins_and_leaves_from_its_watch_across_a_killed_node(
        cluster: LocalCluster, tmp_path: Path) -> None:
    """A member that joins and leaves within one refresh is still reported (the watch saw
    both), and the watch goes on after the node it polled is killed."""
    args = ["dashboard", "--json", "--interval", "0.2", "--endpoints",
            ",".join(cluster.endpoints), f"--token={cluster.token}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENSUS_STORE_")}
    process = subprocess.Popen(CLI + args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    def events_until(wanted: list[str], deadline_s: float = 30.0) -> dict[str, object]:
        assert process.stdout is not None
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "dashboard ended"
            snapshot = json.loads(line)
            texts = [e["text"] for e in snapshot["events"]]
            if snapshot["events_source"] == "watch" and all(any(w in t for t in texts)
                                                             for w in wanted):
                return snapshot
        raise AssertionError(f"no frame reported {wanted} within {deadline_s} s")

    try:
        leader = cluster.wait_for_leader()
        with cluster.client(session_ttl=30) as client:
            events_until([])                           # the watch has started
            client.groups.create("flash")
            client.groups.join("flash", "f1")
            client.groups.leave("flash", "f1")
            events_until(["group flash created", "f1 joined group flash (session",
                          "f1 left group flash (session"])
            cluster.nodes[leader].kill()             # a process this test started
            client.groups.join("flash", "f2")
            events_until([f"node {leader} down", "f2 joined group flash (session"])
    finally:
        process.send_signal(signal.SIGINT)     # the process this test started, by its PID
        try:
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_the_live_dashboard_stays_up_with_every_node_down_and_q_quits(tmp_path: Path) -> None:
    """In a terminal (a pseudo-terminal here): frames keep coming while nothing answers, tab
    and p change the view, q quits with exit 0 and the terminal's modes are restored."""
    import pty
    import select
    import termios
    endpoints = ",".join(f"http://127.0.0.1:{port}" for port in free_ports(3))
    argv = CLI + ["dashboard", "--endpoints", endpoints, "--token=t", "--interval", "0.2"]
    pid, fd = pty.fork()
    if pid == 0:   # the child: the dashboard on the pty's terminal
        os.environ.update(COLUMNS="140", LINES="60")
        os.chdir(tmp_path)
        os.execvp(argv[0], argv)
    modes = termios.tcgetattr(fd)[3]
    output = b""
    done = 0

    def read_until(wanted: bytes, seconds: float = 20.0) -> None:
        nonlocal output
        deadline = time.monotonic() + seconds
        while wanted not in output and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    output += os.read(fd, 65536)
                except OSError:
                    break
        assert wanted in output, output[-2000:]

    try:
        read_until(b"connection refused")
        frames = output.count(b"consensus-store  ")
        os.write(fd, b"\t")
        os.write(fd, b"p")
        read_until(b"PAUSED")
        assert output.count(b"consensus-store  ") > frames      # it kept drawing
        assert termios.tcgetattr(fd)[3] & termios.ICANON == 0   # cbreak while it runs
        os.write(fd, b"q")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    output += os.read(fd, 65536)
                except OSError:
                    pass
        assert done == pid and os.waitstatus_to_exitcode(status) == 0
        assert termios.tcgetattr(fd)[3] == modes                  # the terminal restored
    finally:
        if done != pid:
            os.kill(pid, signal.SIGKILL)      # the child this test forked, by its PID
            os.waitpid(pid, 0)
        os.close(fd)
