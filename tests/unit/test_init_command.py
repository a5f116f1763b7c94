"""``consensus-store init``: the files of a cluster on real hosts, and its one-line refusals."""
from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from consensus_store.cli.main import main
from consensus_store.config import Role, load_config


def exit_code(argv: list[str]) -> int:
    """What the command exits with (argparse's own refusals raise SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_config_per_node_naming_the_others_as_peers(tmp_path: Path,
                                                                  capsys) -> None:
    out = tmp_path / "cluster"
    assert main(["init", "--nodes", "a=db1.example.com, b=10.0.0.2,c=[FD00::3]",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a.toml", "b.toml", "c.toml", "peer_secret", "tokens.toml"]
    assert file_mode(out) == 0o700
    assert all(file_mode(p) == 0o600 for p in out.iterdir())
    configs = {c.id: c for c in (load_config(out / f"{i}.toml") for i in "abc")}
    hosts = {"a": "db1.example.com", "b": "10.0.0.2", "c": "fd00::3"}
    for node_id, config in configs.items():
        assert config.raft_address.host == hosts[node_id]
        assert (config.raft_address.port, config.api_address.port,
                config.native_address.port) == (7101, 7201, 7301)
        assert config.data_dir == Path("/var/lib/consensus-store") / node_id
        others = {p.id: p for p in config.peers}
        assert sorted(others) == sorted(set("abc") - {node_id})
        for peer_id, peer in others.items():   # each peer as that peer names itself
            assert peer.raft_address == configs[peer_id].raft_address
            assert peer.api_address == configs[peer_id].api_address
            assert peer.native_address == configs[peer_id].native_address
    assert configs["c"].api_address.authority == "[fd00::3]:7201"
    assert len({c.peer_secret for c in configs.values()}) == 1
    assert [t.role for t in configs["a"].tokens] == [Role.ADMIN]
    assert configs["a"].admin_token != configs["a"].peer_secret
    printed = capsys.readouterr().out
    assert re.search(r"\n  \[fd00::3\] +c\.toml as node\.toml, peer_secret, tokens\.toml\n",
                     printed)
    assert "7101/tcp" in printed and "systemctl enable --now consensus-store" in printed
    assert configs["a"].peer_secret not in printed and configs["a"].admin_token not in printed


def test_every_run_makes_a_fresh_secret_and_token(tmp_path: Path) -> None:
    seen = set()
    for name in ("one", "two"):
        assert main(["init", "--nodes", "a=h1", "--out", str(tmp_path / name)]) == 0
        config = load_config(tmp_path / name / "a.toml")
        seen |= {config.peer_secret, config.admin_token}
    assert len(seen) == 4


def test_a_single_node_cluster_and_other_ports_and_data_root(tmp_path: Path) -> None:
    out = tmp_path / "one"
    assert main(["init", "--nodes", "solo=localhost", "--out", str(out), "--raft-port", "9001",
                 "--api-port", "9002", "--native-port", "9003", "--data-root", "/srv/cs"]) == 0
    config = load_config(out / "solo.toml")
    assert config.peers == ()
    assert [str(config.raft_address), str(config.api_address), str(config.native_address)] == [
        "localhost:9001", "localhost:9002", "localhost:9003"]
    assert config.data_dir == Path("/srv/cs/solo")


def test_force_overwrites_and_keeps_every_file_private(tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    out.mkdir()
    (out / "a.toml").write_text("old")
    (out / "a.toml").chmod(0o644)
    assert main(["init", "--nodes", "a=h1,b=h2", "--out", str(out), "--force"]) == 0
    assert load_config(out / "a.toml").id == "a"
    assert all(file_mode(p) == 0o600 for p in out.iterdir())


@pytest.mark.parametrize("arguments, fragment", [
    (["--nodes", "a=h1,a=h2"], "duplicate node id 'a'"),
    (["--nodes", "a=h_1"], "is not an IP address or a DNS name"),
    (["--nodes", "a=256.0.0.1"], "is not an IP address or a DNS name"),
    (["--nodes", "a=[h1]"], "brackets are for IPv6"),
    (["--nodes", "a=fd00::3"], "in brackets"),
    (["--nodes", "a=h1:7101"], "without a port"),
    (["--nodes", ""], "is not ID=HOST"),
    (["--nodes", "a=h1,"], "is not ID=HOST"),
    (["--nodes", "=h1"], "is not ID=HOST"),
    (["--nodes", "../x=h1"], "node id '../x'"),
    (["--nodes", "a=h1,b=H1"], "both on h1"),
    (["--nodes", "a=h1", "--api-port", "7101"], "must differ"),
    (["--nodes", "a=h1", "--native-port", "70000"], "--native-port: 70000"),
    (["--nodes", "a=h1", "--data-root", "data"], "--data-root: data: must be an absolute"),
    (["--nodes", "a=h1", "--raft-port", "x"], "invalid int value"),
])
def test_bad_input_is_refused_in_one_line_with_exit_2(tmp_path: Path, capsys, arguments,
                                                      fragment: str) -> None:
    out = tmp_path / "cluster"
    assert exit_code(["init", *arguments, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_non_empty_out_dir_is_refused_without_force(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["init", "--nodes", "a=h1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]

