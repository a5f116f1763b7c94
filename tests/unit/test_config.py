"""Config files: defaults, paths, and one clear error per mistake."""
from __future__ import annotations

from pathlib import Path

import pytest

from consensus_store.config import Role, load_config
from consensus_store.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

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


def top_level(text: str, line: str) -> str:
    """Add a top-level key (appending would put it inside the last [[peers]] table)."""
    return text.replace("[[peers]]", f"{line}\n\n[[peers]]", 1)


TOKENS = '[[tokens]]\nname = "ops"\ntoken = "client-token-0123456789"\nrole = "admin"\n'


def write(tmp_path: Path, text: str, tokens: str = TOKENS) -> Path:
    (tmp_path / "tokens.toml").write_text(tokens)
    (tmp_path / "tokens.toml").chmod(0o600)
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_shipped_local_cluster_configs_load() -> None:
    configs = [load_config(REPO / "cluster_configs" / "local" / f"node{i}.toml") for i in (1, 2, 3)]
    assert [c.id for c in configs] == ["node1", "node2", "node3"]
    assert all(c.raft_address.host == "127.0.0.1" and c.api_address.host == "127.0.0.1"
               for c in configs)
    assert len({c.peer_secret for c in configs}) == 1
    assert all(c.admin_token for c in configs)


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.data_dir == (tmp_path / "data" / "a").resolve()
    assert config.raft.heartbeat_interval_s == 0.1
    assert config.limits.max_value_bytes == 1024 * 1024
    assert config.api_endpoints == ["http://127.0.0.1:9101", "http://127.0.0.1:9102"]


def test_secret_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("a-long-enough-secret\n")
    text = VALID.replace('peer_secret = "0123456789abcdef0123"', 'peer_secret_file = "secret"')
    assert load_config(write(tmp_path, text)).peer_secret == "a-long-enough-secret"


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert "0123456789abcdef0123" not in repr(config)
    assert "client-token-0123456789" not in repr(config)
    assert config.tokens[0].role is Role.ADMIN


def test_a_client_token_equal_to_the_peer_secret_is_refused(tmp_path: Path) -> None:
    tokens = TOKENS.replace("client-token-0123456789", "0123456789abcdef0123")
    with pytest.raises(ConfigError, match="equals the peer secret"):
        load_config(write(tmp_path, VALID, tokens))


def test_the_shipped_development_secret_is_refused_off_loopback(tmp_path: Path) -> None:
    dev = (REPO / "cluster_configs" / "local" / "peer_secret").read_text().strip()
    text = VALID.replace("0123456789abcdef0123", dev)
    load_config(write(tmp_path, text))                   # loopback: fine
    with pytest.raises(ConfigError, match="development secret"):
        load_config(write(tmp_path, text.replace('api_address = "127.0.0.1:9101"',
                                                  'api_address = "10.0.0.1:9101"')))


def test_old_single_secret_key_gets_a_pointer_to_the_new_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="peer_secret_file"):
        load_config(write(tmp_path, top_level(VALID, 'secret = "0123456789abcdef0123"')))


@pytest.mark.parametrize("tokens, key", [
    ('[[tokens]]\nname = "a"\ntoken = "short"\nrole = "admin"\n', "tokens[0].token"),
    ('[[tokens]]\nname = "a"\ntoken = "client-token-0123456789"\nrole = "root"\n',
     "tokens[0].role"),
    ('[[tokens]]\nname = "a"\ntoken = "client-token-0123456789"\nrole = "admin"\nx = 1\n',
     "tokens[0].x"),
    ("", "tokens_file"),
    ('[[tokens]]\nname = "node"\ntoken = "client-token-0123456789"\nrole = "read"\n',
     "tokens[0].name"),
])
def test_bad_tokens_file(tmp_path: Path, tokens: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, VALID, tokens))


@pytest.mark.parametrize("change, key", [
    (lambda t: t.replace('id = "a"\n', ""), "id"),
    (lambda t: top_level(t, 'colour = "blue"'), "colour"),
    (lambda t: t.replace('"127.0.0.1:9001"', '"127.0.0.1"'), "raft_address"),
    (lambda t: t.replace('"127.0.0.1:9001"', '"127.0.0.1:99999"'), "raft_address"),
    (lambda t: t.replace('"127.0.0.1:9001"', '"bad_host:9001"'), "raft_address"),
    (lambda t: t.replace('id = "b"', 'id = "a"'), "peers[0].id"),
    (lambda t: t.replace('"127.0.0.1:9102"', '"127.0.0.1:9101"'), "peers[0].api_address"),
    (lambda t: t.replace('peer_secret = "0123456789abcdef0123"', 'peer_secret_file = "nope"'),
     "peer_secret_file"),
    (lambda t: t.replace('peer_secret = "0123456789abcdef0123"', 'peer_secret = "short"'),
     "peer_secret"),
    (lambda t: top_level(t, 'peer_secret_file = "x"'), "peer_secret_file"),
    (lambda t: t.replace('tokens_file = "tokens.toml"', 'tokens_file = "nope.toml"'),
     "tokens_file"),
    (lambda t: t + "[raft]\nheartbeat_interval_s = -1\n", "raft.heartbeat_interval_s"),
    (lambda t: t + "[raft]\nheartbeat_ms = 5\n", "raft.heartbeat_ms"),
    (lambda t: t + "[raft]\nelection_timeout_min_s = 0.1\n", "raft.election_timeout_min_s"),
    (lambda t: t + "[limits]\nmax_value_bytes = 1.5\n", "limits.max_value_bytes"),
    (lambda t: top_level(t, 'log_level = "loud"'), "log_level"),
    (lambda t: t.split("[[peers]]")[0] + "peers = 5\n", "peers"),
    (lambda t: t + 'colour = "blue"\n', "peers[0].colour"),
])
def test_each_mistake_names_file_and_key(tmp_path: Path, change, key: str) -> None:
    path = write(tmp_path, change(VALID))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = caught.value.message
    assert message.startswith(f"{path}: {key}:"), message
    assert "\n" not in message


def test_a_config_without_peers_is_a_single_node_cluster(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID.split("[[peers]]")[0]))
    assert config.peers == ()


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "id = = 1"))


def test_up_takes_the_node_configs_and_not_the_tokens_file() -> None:
    from consensus_store.cli.up import node_config_paths
    paths = node_config_paths(REPO / "cluster_configs" / "local")
    assert [p.name for p in paths] == ["node1.toml", "node2.toml", "node3.toml"]


def _address(text: str):
    from consensus_store.config import parse_address
    return parse_address(text, ConfigError)


@pytest.mark.parametrize("text, host, port, authority", [
    ("127.0.0.1:7101", "127.0.0.1", 7101, "127.0.0.1:7101"),
    ("localhost:7101", "localhost", 7101, "localhost:7101"),
    ("LocalHost:7101", "localhost", 7101, "localhost:7101"),
    ("db1.Example.com:7201", "db1.example.com", 7201, "db1.example.com:7201"),
    ("node-3:1", "node-3", 1, "node-3:1"),
    ("[::1]:7101", "::1", 7101, "[::1]:7101"),
    ("[0:0:0:0:0:0:0:1]:65535", "::1", 65535, "[::1]:65535"),
    ("[FD00::3]:7301", "fd00::3", 7301, "[fd00::3]:7301"),
])
def test_addresses_take_ip_literals_dns_names_and_bracketed_ipv6(text, host, port, authority):
    address = _address(text)
    assert (address.host, address.port, address.authority, str(address)) == (
        host, port, authority, authority)


@pytest.mark.parametrize("text, hint", [
    ("::1:7101", "brackets"), ("fd00::3:7101", "brackets"), ("[::1]7101", "[IPV6]:PORT"),
    ("[::1]", "[IPV6]:PORT"), ("[localhost]:7101", "not an IPv6"), ("[::1]:0", "port"),
    ("example.com", "HOST:PORT"), (":7101", "HOST:PORT"), ("h:65536", "port"), ("h:+1", "port"),
    ("h:²", "port"), ("bad_host:1", "DNS name"), ("-a.example:1", "DNS name"),
    ("a..b:1", "DNS name"), ("256.1.1.1:1", "DNS name"), ("1.2.3.04:1", "DNS name"),
    ("x" * 64 + ".example:1", "DNS name"), ("héllo:1", "DNS name"),
])
def test_bad_addresses_are_refused_in_one_line(text: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _address(text)
    assert hint in caught.value.message and "\n" not in caught.value.message


def test_a_raft_address_prints_as_pysyncobj_names_the_node(tmp_path: Path) -> None:
    """pysyncobj splits its node names at the last colon and resolves the host unbracketed."""
    text = VALID.replace("127.0.0.1:9001", "[::1]:9001").replace("127.0.0.1:9101", "[::1]:9101")
    text = text.replace("127.0.0.1:9002", "[fd00::2]:9002").replace("127.0.0.1:9102",
                                                                      "db2.example:9102")
    config = load_config(write(tmp_path, text))
    assert str(config.raft_address) == "::1:9001"
    assert config.raft_address.authority == "[::1]:9001"
    assert str(config.peers[0].raft_address) == "fd00::2:9002"
    assert config.api_endpoints == ["http://[::1]:9101", "http://db2.example:9102"]
    assert config.native_endpoints == []


def test_a_raft_address_and_an_api_address_on_the_same_port_clash(tmp_path: Path) -> None:
    text = VALID.replace('api_address = "127.0.0.1:9101"', 'api_address = "127.0.0.1:9001"')
    with pytest.raises(ConfigError, match=r"api_address: address 127\.0\.0\.1:9001 is already"):
        load_config(write(tmp_path, text))
    spelled_twice = VALID.replace('"127.0.0.1:9001"', '"[::1]:9001"').replace(
        '"127.0.0.1:9101"', '"[0::1]:9001"')
    with pytest.raises(ConfigError, match=r"api_address: address \[::1\]:9001 is already"):
        load_config(write(tmp_path, spelled_twice))


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("[::1]", True),
    ("10.0.0.1", False), ("[fd00::1]", False), ("db1.example", False),
    ("localhost.example", False),
])
def test_the_development_secret_is_only_for_loopback_hosts(tmp_path: Path, host: str,
                                                           allowed: bool) -> None:
    dev = (REPO / "cluster_configs" / "local" / "peer_secret").read_text().strip()
    text = VALID.replace("0123456789abcdef0123", dev).replace(
        'api_address = "127.0.0.1:9101"', f'api_address = "{host}:9101"')
    path = write(tmp_path, text)
    if allowed:
        load_config(path)
    else:
        with pytest.raises(ConfigError, match="development secret"):
            load_config(path)
