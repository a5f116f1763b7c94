"""Config files: defaults, paths, and one clear error per mistake."""
from __future__ import annotations

from pathlib import Path

import pytest

from consensus_store.config import load_config
from consensus_store.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

VALID = """
id = "a"
raft_address = "127.0.0.1:9001"
api_address = "127.0.0.1:9101"
data_dir = "data/a"
secret = "0123456789abcdef0123"

[[peers]]
id = "b"
raft_address = "127.0.0.1:9002"
api_address = "127.0.0.1:9102"
"""


def top_level(text: str, line: str) -> str:
    """Add a top-level key (appending would put it inside the last [[peers]] table)."""
    return text.replace("[[peers]]", f"{line}\n\n[[peers]]", 1)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_shipped_local_cluster_configs_load() -> None:
    configs = [load_config(REPO / "cluster_configs" / "local" / f"node{i}.toml") for i in (1, 2, 3)]
    assert [c.id for c in configs] == ["node1", "node2", "node3"]
    assert all(c.raft_address.host == "127.0.0.1" and c.api_address.host == "127.0.0.1"
               for c in configs)
    assert len({c.secret for c in configs}) == 1


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.data_dir == (tmp_path / "data" / "a").resolve()
    assert config.raft.heartbeat_interval_s == 0.1
    assert config.limits.max_value_bytes == 1024 * 1024
    assert config.api_endpoints == ["http://127.0.0.1:9101", "http://127.0.0.1:9102"]


def test_secret_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("a-long-enough-secret\n")
    text = VALID.replace('secret = "0123456789abcdef0123"', 'secret_file = "secret"')
    assert load_config(write(tmp_path, text)).secret == "a-long-enough-secret"


@pytest.mark.parametrize("change, key", [
    (lambda t: t.replace('id = "a"\n', ""), "id"),
    (lambda t: top_level(t, 'colour = "blue"'), "colour"),
    (lambda t: t.replace('"127.0.0.1:9001"', '"127.0.0.1"'), "raft_address"),
    (lambda t: t.replace('"127.0.0.1:9001"', '"127.0.0.1:99999"'), "raft_address"),
    (lambda t: t.replace('"127.0.0.1:9001"', '"example.com:9001"'), "raft_address"),
    (lambda t: t.replace('id = "b"', 'id = "a"'), "peers[0].id"),
    (lambda t: t.replace('"127.0.0.1:9102"', '"127.0.0.1:9101"'), "peers[0].api_address"),
    (lambda t: t.replace('secret = "0123456789abcdef0123"', 'secret_file = "nope"'), "secret_file"),
    (lambda t: t.replace('secret = "0123456789abcdef0123"', 'secret = "short"'), "secret"),
    (lambda t: top_level(t, 'secret_file = "x"'), "secret"),
    (lambda t: t + "[raft]\nheartbeat_interval_s = -1\n", "raft.heartbeat_interval_s"),
    (lambda t: t + "[raft]\nheartbeat_ms = 5\n", "raft.heartbeat_ms"),
    (lambda t: t + "[raft]\nelection_timeout_min_s = 0.1\n", "raft.election_timeout_min_s"),
    (lambda t: t + "[limits]\nmax_value_bytes = 1.5\n", "limits.max_value_bytes"),
    (lambda t: top_level(t, 'log_level = "loud"'), "log_level"),
    (lambda t: t.split("[[peers]]")[0], "peers"),
    (lambda t: t + 'colour = "blue"\n', "peers[0].colour"),
])
def test_each_mistake_names_file_and_key(tmp_path: Path, change, key: str) -> None:
    path = write(tmp_path, change(VALID))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = caught.value.message
    assert message.startswith(f"{path}: {key}:"), message
    assert "\n" not in message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "id = = 1"))
