"""Read replicas without processes: the ``role`` config key, and where a client sends what."""
from __future__ import annotations

from pathlib import Path

import pytest

from consensus_store.client.core import ClientCore
from consensus_store.config import load_config
from consensus_store.errors import ConfigError, Unavailable


VALID = """
id = "a"
raft_address = "127.0.0.1:9001"
api_address = "127.0.0.1:9101"
data_dir = "data/a"
peer_secret = "0123456789abcdef0123"
tokens_file = "tokens.toml"

[[peers]]
id = "b"
raft_address = "127.0.0.1:9002"
api_address = "127.0.0.1:9102"
"""
TOKENS = '[[tokens]]\nname = "ops"\ntoken = "client-token-0123456789"\nrole = "admin"\n'


def top_level(text: str, line: str) -> str:
    return text.replace("[[peers]]", f"{line}\n\n[[peers]]", 1)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "tokens.toml").write_text(TOKENS)
    (tmp_path / "tokens.toml").chmod(0o600)
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path

VOTERS = ["http://127.0.0.1:9101", "http://127.0.0.1:9102", "http://127.0.0.1:9103"]
REPLICAS = ["http://127.0.0.1:9201", "http://127.0.0.1:9202"]


def test_role_defaults_to_voter_and_accepts_replica(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, VALID)).is_replica is False
    replica = load_config(write(tmp_path, top_level(VALID, 'role = "replica"')))
    assert replica.is_replica and replica.role == "replica"
    assert load_config(write(tmp_path, top_level(VALID, 'role = "voter"'))).is_replica is False


def test_a_bad_role_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.toml: role: must be one of voter, replica"):
        load_config(write(tmp_path, top_level(VALID, 'role = "learner"')))


def test_a_replica_without_voters_is_refused(tmp_path: Path) -> None:
    alone = VALID[:VALID.index("[[peers]]")] + 'role = "replica"\n'
    with pytest.raises(ConfigError, match=r"role: a replica needs the cluster's voters"):
        load_config(write(tmp_path, alone))


def endpoints_tried(core: ClientCore, op: str, body: dict, failures: int) -> list[str]:
    """The endpoints one request tries when its first ``failures`` attempts fail."""
    attempts = core.attempts(op, dict(body), 5.0)
    tried = []
    for _ in range(failures + 1):
        attempt = attempts.next()
        assert attempt is not None
        tried.append(attempt.endpoint)
        attempts.failed(attempt, Unavailable("down"))
    attempts.close()
    return tried


def test_local_and_session_reads_go_to_replicas_in_turn() -> None:
    core = ClientCore(VOTERS)
    core.add_read_replicas(REPLICAS)
    first = [endpoints_tried(core, "get", {"key": "k", "consistency": level}, 0)[0]
             for level in ("session", "local", "session", "local")]
    assert first == [REPLICAS[0], REPLICAS[1], REPLICAS[0], REPLICAS[1]]


def test_writes_and_linearizable_reads_go_to_voters_only() -> None:
    core = ClientCore(VOTERS)
    core.add_read_replicas(REPLICAS)
    writes = endpoints_tried(core, "put", {"key": "k", "value": 1}, 5)
    assert set(writes) <= set(VOTERS) and len(set(writes)) == 3    # failover among voters
    strong = endpoints_tried(core, "get", {"key": "k", "consistency": "linearizable"}, 3)
    assert set(strong) <= set(VOTERS)


def test_a_read_no_replica_answers_goes_on_to_the_voters() -> None:
    core = ClientCore(VOTERS)
    core.add_read_replicas(REPLICAS)
    tried = endpoints_tried(core, "get", {"key": "k", "consistency": "session"}, 3)
    assert set(tried[:2]) == set(REPLICAS) and set(tried[2:]) <= set(VOTERS)


def test_without_replicas_nothing_changes() -> None:
    core = ClientCore(VOTERS)
    assert endpoints_tried(core, "get", {"key": "k", "consistency": "local"}, 0) == [VOTERS[0]]
    core.add_read_replicas([VOTERS[1]])          # already a voter: ignored
    assert core.endpoints == VOTERS


def test_a_replica_announcement_is_read_field_by_field() -> None:
    from consensus_store.node.engine.peer_connection import announced
    assert announced("r1 http://127.0.0.1:7204 127.0.0.1:7304") == {
        "id": "r1", "endpoint": "http://127.0.0.1:7204", "native_address": "127.0.0.1:7304"}
    assert announced("r2 https://[::1]:7205 -") == {
        "id": "r2", "endpoint": "https://[::1]:7205", "native_address": None}
    assert announced("") == {"id": None, "endpoint": None, "native_address": None}
    assert len(announced("x" * 10_000)["id"] or "") <= 512       # bounded


def test_a_replica_lists_itself_as_a_replica_beside_the_voters(tmp_path: Path) -> None:
    from consensus_store.node.status_report import StatusReport
    replica = load_config(write(tmp_path, top_level(VALID, 'role = "replica"')))
    voters = [{"id": p.id, "membership": "voter"} for p in replica.peers]
    for live in (None, lambda: [dict(v) for v in voters]):   # from the config; live table
        fields = StatusReport(replica, members=live).fields()
        assert fields["membership"] == "replica"
        by_id = {m["id"]: m["membership"] for m in fields["members"]}
        assert by_id[replica.id] == "replica"
        assert {by_id[p.id] for p in replica.peers} == {"voter"}
