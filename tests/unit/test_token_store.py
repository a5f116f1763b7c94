"""The node's client tokens (``node.auth.TokenStore``): lookup, reload when the file changes,
a bad file keeping the tokens in force with one log line."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from consensus_store.config import Role, load_config, node_api_token
from consensus_store.launcher import write_cluster_configs
from consensus_store.node.auth import NODE_TOKEN_NAME, TokenStore


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(load_config(write_cluster_configs(tmp_path, 3)[0]))


def write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)     # a new inode: the change is seen whatever the mtime


def tokens_text(**tokens: tuple[str, str]) -> str:
    return "".join(f'[[tokens]]\nname = "{name}"\ntoken = "{token}"\nrole = "{role}"\n'
                   for name, (token, role) in tokens.items())


def test_lookup_finds_file_tokens_and_the_node_token(store: TokenStore, tmp_path: Path) -> None:
    config = load_config(tmp_path / "n1.toml")
    [admin] = config.tokens
    assert store.lookup(admin.token.encode()) == admin and admin.role is Role.ADMIN
    node = store.lookup(node_api_token(config.peer_secret).encode())
    assert node is not None and (node.name, node.role) == (NODE_TOKEN_NAME, Role.ADMIN)
    assert store.lookup(b"") is None and store.lookup(admin.token.encode() + b"x") is None


def test_reload_installs_changes_and_counts_generations(store: TokenStore) -> None:
    assert store.reload_if_changed() is False
    generation = store.generation
    write(store.path, tokens_text(a=("a" * 20, "admin"), r=("r" * 20, "read")))
    assert store.reload_if_changed() is True and store.generation == generation + 1
    reader = store.lookup(b"r" * 20)
    assert reader is not None and reader.role is Role.READ
    assert store.reload_if_changed() is False          # unchanged: not read again
    assert store.reload_if_changed(force=True) is True  # SIGHUP reads it anyway
    write(store.path, tokens_text(a=("a" * 20, "admin")))
    assert store.reload_if_changed() is True
    assert store.lookup(b"r" * 20) is None


@pytest.mark.parametrize("bad", [
    "[[tokens]]\nname = 'broken\n",                                   # not TOML
    tokens_text(a=("short", "admin")),                                # token too short
    tokens_text(a=("a" * 20, "root")),                                # no such role
    "",                                                               # no tokens at all
])
def test_a_bad_file_keeps_the_tokens_in_force_and_logs_once(
        store: TokenStore, bad: str, caplog: pytest.LogCaptureFixture) -> None:
    write(store.path, tokens_text(a=("a" * 20, "admin")))
    assert store.reload_if_changed()
    generation = store.generation
    write(store.path, bad)
    with caplog.at_level(logging.INFO, logger="consensus_store.auth"):
        for _ in range(5):                     # the node checks every second
            assert store.reload_if_changed() is False
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "previous tokens stay in force" in caplog.records[0].getMessage()
    assert "\n" not in caplog.records[0].getMessage() and not caplog.records[0].exc_info
    assert store.generation == generation and store.lookup(b"a" * 20) is not None


def test_a_removed_file_keeps_the_tokens_in_force(store: TokenStore) -> None:
    [admin] = store._tokens
    store.path.unlink()
    assert store.reload_if_changed() is False
    assert store.lookup(admin[0]) is not None
