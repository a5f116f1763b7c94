"""The ``consensus-store`` command line against real clusters, and its error handling.

Exit codes (cli/main.py): 0 success; 1 the operation failed; 2 bad usage, input or config, with
exactly one line on stderr and never a traceback.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from consensus_store.launcher import LocalCluster, write_credentials

from .support import ClusterPool, followers, wait_until

_SCRIPT = Path(sys.executable).with_name("consensus-store")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "consensus_store"]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONSENSUS_STORE_")}
    clean.update(env or {})
    return subprocess.run(CLI + list(args), cwd=cwd, env=clean, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    return lines[0]


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return module_pool.start(3, name="cli")


@pytest.fixture
def target(cluster: LocalCluster) -> list[str]:
    return ["--endpoints", ",".join(cluster.endpoints), f"--token={cluster.token}"]


def test_put_get_delete_range_with_json_output(cluster: LocalCluster, target: list[str],
                                              tmp_path: Path) -> None:
    put = run_cli("put", "cli/a", "hello", *target, "--json", cwd=tmp_path)
    assert put.returncode == 0, put.stderr
    record = json.loads(put.stdout)
    assert record["key"] == "cli/a" and record["value"] == "hello" and record["version"] == 1
    assert isinstance(record["mod_revision"], int) and record["mod_revision"] > 0

    put = run_cli("put", "cli/b", '{"n": [1, 2], "ok": true}', "--value-json", *target, "--json",
                  cwd=tmp_path)
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["value"] == {"n": [1, 2], "ok": True}

    get = run_cli("get", "cli/a", *target, "--json", cwd=tmp_path)
    assert get.returncode == 0, get.stderr
    assert json.loads(get.stdout)["value"] == "hello"
    get = run_cli("get", "cli/b", *target, "--json", "--consistency", "linearizable", cwd=tmp_path)
    assert get.returncode == 0 and json.loads(get.stdout)["value"] == {"n": [1, 2], "ok": True}

    # The Python client sees what the CLI wrote.
    with cluster.client() as client:
        assert client.get("cli/a", consistency="linearizable").value == "hello"

    listing = run_cli("range", "cli/", *target, "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    body = json.loads(listing.stdout)
    assert body["count"] == 2
    assert [(kv["key"], kv["value"]) for kv in body["kvs"]] == [
        ("cli/a", "hello"), ("cli/b", {"n": [1, 2], "ok": True})]
    limited = json.loads(run_cli("range", "cli/", "--limit", "1", *target, "--json",
                                 cwd=tmp_path).stdout)
    assert limited["count"] == 2 and len(limited["kvs"]) == 1

    delete = run_cli("delete", "cli/a", *target, "--json", cwd=tmp_path)
    assert delete.returncode == 0 and json.loads(delete.stdout) == {"deleted": 1}
    delete = run_cli("delete", "cli/a", *target, "--json", cwd=tmp_path)
    assert delete.returncode == 0 and json.loads(delete.stdout) == {"deleted": 0}

    missing = run_cli("get", "cli/a", *target, "--json", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stdout.strip() == "null"
    assert "not found" in one_error_line(missing)

    run_cli("put", "cli/c", "1", *target, cwd=tmp_path)
    delete = run_cli("delete", "cli/", "--prefix", *target, "--json", cwd=tmp_path)
    assert delete.returncode == 0 and json.loads(delete.stdout) == {"deleted": 2}
    empty = json.loads(run_cli("range", "cli/", *target, "--json", cwd=tmp_path).stdout)
    assert empty == {"kvs": [], "count": 0}


def test_plain_output_config_file_and_environment(cluster: LocalCluster, target: list[str],
                                                  tmp_path: Path) -> None:
    put = run_cli("put", "cli/plain", "some text", *target, cwd=tmp_path)
    assert put.returncode == 0 and put.stdout.startswith("OK revision "), put.stdout
    get = run_cli("get", "cli/plain", *target, cwd=tmp_path)
    assert get.returncode == 0 and get.stdout == "some text\n"

    # Endpoints and token from a node config ...
    config = str(cluster.config_paths[1])   # type: ignore[attr-defined]
    get = run_cli("get", "cli/plain", "--config", config, "--json", cwd=tmp_path)
    assert get.returncode == 0, get.stderr
    assert json.loads(get.stdout)["value"] == "some text"
    # ... or from the environment.
    env = {"CONSENSUS_STORE_ENDPOINTS": ",".join(cluster.endpoints),
           "CONSENSUS_STORE_TOKEN": cluster.token}
    get = run_cli("get", "cli/plain", "--json", cwd=tmp_path, env=env)
    assert get.returncode == 0, get.stderr
    assert json.loads(get.stdout)["value"] == "some text"
    assert run_cli("delete", "cli/plain", *target, cwd=tmp_path).returncode == 0


def test_status_json_lists_every_node(cluster: LocalCluster, target: list[str],
                                      tmp_path: Path) -> None:
    leader = cluster.wait_for_leader()
    result = run_cli("status", *target, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)
    assert isinstance(nodes, list) and len(nodes) == 3
    assert {n["id"] for n in nodes} == set(cluster.nodes)
    assert sorted(n["role"] for n in nodes) == ["follower", "follower", "leader"]
    for n in nodes:
        assert n["endpoint"] == cluster.nodes[n["id"]].endpoint
        assert n["leader"] == leader
        assert n["error"] is None


def test_status_shows_a_killed_node_as_down(cluster_pool: ClusterPool, tmp_path: Path) -> None:
    cluster = cluster_pool.start(3, name="cli-down")
    leader = cluster.wait_for_leader()
    victim = followers(cluster, leader)[0]
    cluster.nodes[victim].kill()
    args = ["--endpoints", ",".join(cluster.endpoints), f"--token={cluster.token}", "--json"]
    result = run_cli("status", *args, cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    nodes = json.loads(result.stdout)
    assert len(nodes) == 3
    by_endpoint = {n["endpoint"]: n for n in nodes}
    down = by_endpoint[cluster.nodes[victim].endpoint]
    assert down["role"] == "down" and down["error"]
    live = [n for n in nodes if n is not down]
    assert {n["id"] for n in live} == set(cluster.nodes) - {victim}
    assert sorted(n["role"] for n in live) == ["follower", "leader"]
    # Writes still work through the CLI with one node down.
    put = run_cli("put", "cli/down", "x", *args, cwd=tmp_path)
    assert put.returncode == 0, put.stderr


def test_bad_cli_input_exits_2_with_one_line(cluster: LocalCluster, target: list[str],
                                             tmp_path: Path) -> None:
    cases = [
        ("put", "cli/bad", "{not json", "--value-json", *target),
        ("get", "cli/bad", "--config", str(tmp_path / "missing.toml")),
        ("get", "cli/bad", "--endpoints", cluster.endpoints[0], "--no-such-flag"),
        ("range", "cli/", "--limit", "many", *target),
        ("get", "cli/bad", "--consistency", "bogus", *target),
        ("put", "k" * 5000, "v", *target),                         # key too long (413)
        ("frobnicate",),
        (),
    ]
    for args in cases:
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args[:3], result.returncode, result.stderr)
        line = one_error_line(result)
        assert "error" in line, line
    with cluster.client() as client:
        assert client.get("cli/bad", consistency="linearizable") is None


def test_failed_operations_exit_1_with_one_line(cluster: LocalCluster, tmp_path: Path) -> None:
    wrong_token = run_cli("get", "cli/x", "--endpoints", ",".join(cluster.endpoints),
                          "--token", "wrong-token-wrong-token", cwd=tmp_path)
    assert wrong_token.returncode == 1, wrong_token.stderr
    assert "unauthorized" in one_error_line(wrong_token)

    with socket.socket() as sock:          # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    unreachable = run_cli("get", "cli/x", "--endpoints", dead, "--token", "t" * 16,
                          "--timeout", "1", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert unreachable.returncode == 1, unreachable.stderr
    one_error_line(unreachable)
    assert elapsed < 10, f"--timeout 1 took {elapsed:.1f}s"


# ---- node config errors ------------------------------------------------------------------------

GOOD = """\
id = "n1"
raft_address = "127.0.0.1:{raft}"
api_address = "127.0.0.1:{api}"
data_dir = "data"
peer_secret = "0123456789abcdef0123456789"
tokens_file = "tokens.toml"

[[peers]]
id = "n2"
raft_address = "127.0.0.1:{peer_raft}"
api_address = "127.0.0.1:{peer_api}"
"""

# (case id, change to the good config, text the error must name besides the file)
CONFIG_CASES: list[tuple[str, tuple[str, str], str]] = [
    ("missing-id", ('id = "n1"\n', ""), "id"),
    ("missing-raft-address", ('raft_address = "127.0.0.1:{raft}"\n', ""), "raft_address"),
    ("missing-secret", ('peer_secret = "0123456789abcdef0123456789"\n', ""), "peer_secret"),
    ("missing-tokens-file", ('tokens_file = "tokens.toml"\n', ""), "tokens_file"),
    ("peers-not-tables", ('[[peers]]\nid = "n2"\nraft_address = "127.0.0.1:{peer_raft}"\n'
                          'api_address = "127.0.0.1:{peer_api}"\n', 'peers = "n2"\n'), "peers"),
    ("unknown-top-key", ('data_dir = "data"\n', 'data_dir = "data"\ncolour = "red"\n'), "colour"),
    ("unknown-raft-key", ("[[peers]]", "[raft]\nheartbeat = 1\n\n[[peers]]"), "raft.heartbeat"),
    ("unknown-peer-key", ('id = "n2"\n', 'id = "n2"\nweight = 3\n'), "peers[0].weight"),
    ("address-without-port", ('raft_address = "127.0.0.1:{raft}"', 'raft_address = "127.0.0.1"'),
     "raft_address"),
    ("address-port-out-of-range", ('api_address = "127.0.0.1:{api}"',
                                   'api_address = "127.0.0.1:70000"'), "api_address"),
    ("address-hostname", ('api_address = "127.0.0.1:{api}"', 'api_address = "example.com:80"'),
     "api_address"),
    ("peer-address-not-string", ('raft_address = "127.0.0.1:{peer_raft}"', "raft_address = 5"),
     "peers[0].raft_address"),
    ("duplicate-id", ('id = "n2"', 'id = "n1"'), "peers[0].id"),
    ("duplicate-raft-port", ('raft_address = "127.0.0.1:{peer_raft}"',
                             'raft_address = "127.0.0.1:{raft}"'), "peers[0].raft_address"),
    ("api-port-equals-raft-port", ('api_address = "127.0.0.1:{api}"',
                                   'api_address = "127.0.0.1:{raft}"'), "api_address"),
    ("unreadable-secret-file", ('peer_secret = "0123456789abcdef0123456789"',
                                'peer_secret_file = "no-such-secret-file"'), "peer_secret_file"),
    ("secret-file-is-directory", ('peer_secret = "0123456789abcdef0123456789"',
                                  'peer_secret_file = "."'), "peer_secret_file"),
    ("short-secret", ('peer_secret = "0123456789abcdef0123456789"', 'peer_secret = "short"'),
     "peer_secret"),
    ("bad-log-level", ('data_dir = "data"\n', 'data_dir = "data"\nlog_level = "loud"\n'),
     "log_level"),
    ("negative-limit", ("[[peers]]", "[limits]\nmax_value_bytes = -1\n\n[[peers]]"),
     "limits.max_value_bytes"),
    ("bad-election-timeout", ("[[peers]]", "[raft]\nheartbeat_interval_s = 0.2\n"
                              "election_timeout_min_s = 0.5\n\n[[peers]]"),
     "raft.election_timeout_min_s"),
    ("invalid-toml", ('id = "n1"', 'id = "n1'), ""),
    ("data-dir-is-a-file", ('data_dir = "data"', 'data_dir = "a-file"'), "data_dir"),
    ("raft-port-in-use", ('raft_address = "127.0.0.1:{raft}"', 'raft_address = "127.0.0.1:{busy}"'),
     "raft_address"),
    ("api-port-in-use", ('api_address = "127.0.0.1:{api}"', 'api_address = "127.0.0.1:{busy}"'),
     "api_address"),
]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is taken (listening) for the duration of the test."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_node_with_bad_config_exits_2_naming_file_and_key(case: tuple, tmp_path: Path,
                                                          busy_port: int) -> None:
    name, (old, new), key = case
    raft, api, peer_raft, peer_api = _free_ports(4)
    ports = {"raft": raft, "api": api, "peer_raft": peer_raft, "peer_api": peer_api,
             "busy": busy_port}
    good = GOOD.format(**ports)
    old, new = old.format(**ports), new.format(**ports)
    assert old in good, f"test case {name} does not apply"
    path = tmp_path / f"{name}.toml"
    path.write_text(good.replace(old, new, 1))
    (tmp_path / "a-file").write_text("not a directory")
    write_credentials(tmp_path, peer_secret="0123456789abcdef0123456789")

    started = time.monotonic()
    result = run_cli("node", "--config", str(path), cwd=tmp_path, timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, (name, result.returncode, result.stderr[-2000:])
    line = one_error_line(result)
    assert str(path) in line or path.name in line, f"{name}: file not named: {line}"
    assert key in line, f"{name}: key {key!r} not named: {line}"
    assert elapsed < 20


def test_node_with_missing_config_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = run_cli("node", "--config", str(missing), cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere.toml" in one_error_line(result)


def test_good_config_variant_starts(tmp_path: Path) -> None:
    """Control for the cases above: the unmodified config is accepted (the node starts and
    answers /health; stopped with SIGTERM -> exit code 0)."""
    raft, api, peer_raft, peer_api = _free_ports(4)
    path = tmp_path / "good.toml"
    path.write_text(GOOD.format(raft=raft, api=api, peer_raft=peer_raft, peer_api=peer_api))
    write_credentials(tmp_path, peer_secret="0123456789abcdef0123456789")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONSENSUS_STORE_")}
    process = subprocess.Popen(CLI + ["node", "--config", str(path)], cwd=tmp_path, env=clean,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{api}/health", timeout=1).status_code == 200,
                   20.0, what="node with the good config answers /health")
    finally:
        process.terminate()
        try:
            code = process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
    assert code == 0, process.stderr.read() if process.stderr else code


def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path) -> None:
    """`consensus-store init ... | head -1`: the pipe is closed before the CLI writes (its
    read end is closed before the process starts), so every write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONSENSUS_STORE_")}
    try:
        done = subprocess.run(CLI + ["init", "--nodes", "a=localhost", "--out",
                                     str(tmp_path / "out")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, env=clean,
                              stdin=subprocess.DEVNULL, timeout=30)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and done.stderr == "", done.stderr
    assert done.returncode == 1
