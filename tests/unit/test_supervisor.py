"""The `up` supervisor (cli/supervisor.py) on fake node processes and a fake clock, and the
configs `up --nodes N` writes."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from consensus_store.cli.supervisor import MAX_BACKOFF_S, STABLE_AFTER_S, Supervisor
from consensus_store.cli.up import generated_configs, node_config_paths
from consensus_store.config import load_config
from consensus_store.errors import ConfigError


class FakeNode:
    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.alive = True
        self.exit_code: int | None = None
        self.log_path = Path(f"/logs/{node_id}.log")
        self.starts = 0

    def crash(self, code: int) -> None:
        self.alive, self.exit_code = False, code

    def start(self) -> None:
        self.alive, self.exit_code = True, None
        self.starts += 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(restart: bool = True) -> tuple[Supervisor, list[FakeNode], list[str], Clock]:
    nodes, lines, clock = [FakeNode("n1"), FakeNode("n2"), FakeNode("n3")], [], Clock()
    return Supervisor(nodes, lines.append, restart=restart, clock=clock), nodes, lines, clock


def test_an_exited_node_is_reported_and_restarted_after_the_backoff_others_untouched() -> None:
    supervisor, (n1, n2, n3), lines, clock = make()
    n2.crash(-9)
    supervisor.check()
    assert lines == ["n2 exited with code -9; log: /logs/n2.log; restarting in 1s"]
    assert supervisor.down == ["n2"]
    clock.now += 0.5
    supervisor.check()
    assert n2.starts == 0                      # still backing off
    clock.now += 0.6
    supervisor.check()
    assert n2.starts == 1 and lines[-1] == "n2 restarted"
    assert n1.starts == n3.starts == 0 and supervisor.down == []


def test_backoff_doubles_on_quick_exits_up_to_a_ceiling_and_resets_once_stable() -> None:
    supervisor, (_, n2, _), lines, clock = make()
    waits = []
    for _ in range(8):
        n2.crash(1)
        supervisor.check()
        wait = float(lines[-1].rsplit(" ", 1)[1].rstrip("s"))
        waits.append(wait)
        clock.now += wait
        supervisor.check()
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30] and MAX_BACKOFF_S == 30
    clock.now += STABLE_AFTER_S
    supervisor.check()                         # up long enough: the back-off starts over
    n2.crash(1)
    supervisor.check()
    assert lines[-1].endswith("restarting in 1s")


def test_exit_code_2_is_not_restarted() -> None:
    supervisor, (_, _, n3), lines, clock = make()
    n3.crash(2)
    supervisor.check()
    clock.now += 600
    supervisor.check()
    assert n3.starts == 0 and len(lines) == 1
    assert "not restarted: it refused its config or data" in lines[0]


def test_no_restart_leaves_the_node_down_and_reports_once() -> None:
    supervisor, (n1, _, _), lines, clock = make(restart=False)
    n1.crash(-9)
    for _ in range(3):
        supervisor.check()
        clock.now += 60
    assert n1.starts == 0 and lines == [
        "n1 exited with code -9; log: /logs/n1.log; left down (--no-restart)"]
    assert supervisor.down == ["n1"]


@pytest.mark.parametrize("size", [1, 3, 5])
def test_generated_configs_form_a_cluster_of_that_size(tmp_path: Path, size: int) -> None:
    directory = generated_configs(tmp_path, size, base_port=20001)
    configs = [load_config(p) for p in node_config_paths(directory)]
    assert [c.id for c in configs] == [f"node{i + 1}" for i in range(size)]
    for i, config in enumerate(configs):
        assert str(config.raft_address) == f"127.0.0.1:{20001 + i}"
        assert str(config.api_address) == f"127.0.0.1:{20101 + i}"
        assert config.data_dir == tmp_path / f"node{i + 1}"
        assert sorted(p.id for p in config.peers) == sorted(
            c.id for c in configs if c.id != config.id)
    for name in ("peer_secret", "tokens.toml"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    secret = (directory / "peer_secret").read_text()
    assert generated_configs(tmp_path, size, base_port=20001) == directory   # reused as is
    assert (directory / "peer_secret").read_text() == secret


def test_generated_configs_refuse_sizes_and_ports_that_make_no_cluster(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="1, 3 or 5"):
        generated_configs(tmp_path, 2, base_port=20001)
    with pytest.raises(ConfigError, match="--base-port"):
        generated_configs(tmp_path, 3, base_port=65500)
