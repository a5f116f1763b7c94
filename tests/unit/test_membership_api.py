"""Membership without a cluster: the API calls' ops and fields against the op table, the log
entry's shape (what the raft port accepts), the rules a change is checked by, and the one
config-mismatch line."""
from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from consensus_store.api.membership import (AsyncMembershipApi, ClusterNode, MembershipApi,
                                            endpoints_from)
from consensus_store.config import load_config
from consensus_store.errors import InvalidRequest
from consensus_store.launcher import write_cluster_configs
from consensus_store.node.engine import membership
from consensus_store.node.engine.peer_messages import UnsafeCommand, check_command
from consensus_store.protocol import OPS

ROW = {"id": "n4", "raft_address": "127.0.0.1:1", "api_address": "127.0.0.1:2",
       "native_address": None, "membership": "voter", "voter": True, "connected": False,
       "match_index": 0}


class Recorder(MembershipApi):
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def request(self, op: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        assert set(body) <= set(OPS[op].body_fields()), (op, body)
        self.sent.append((op, body))
        return {"members": [ROW]}


def test_calls_send_the_ops_and_fields_the_table_declares(tmp_path: Path) -> None:
    api = Recorder()
    assert api.member_list() == [ClusterNode.from_json(ROW)]
    api.add_member({"id": "n4", "raft_address": "127.0.0.1:1", "api_address": "127.0.0.1:2"})
    config_path = write_cluster_configs(tmp_path, 3)[2]
    api.add_member(config_path)                         # a config file: its node
    api.add_member(load_config(config_path))            # a NodeConfig
    api.remove_member("n4")
    api.member_list(from_leader=True)
    ops = [op for op, _ in api.sent]
    assert ops == ["member_list", "member_add", "member_add", "member_add", "member_remove",
                   "member_list"]
    assert api.sent[0][1] == {} and api.sent[5][1] == {"from_leader": True}
    assert api.sent[2][1]["member"] == "n3" and api.sent[2][1]["native_address"]
    assert api.sent[2][1] == api.sent[3][1]
    assert api.sent[4][1] == {"member": "n4"}
    assert OPS["member_list"].role.value == "read"
    assert OPS["member_add"].role.value == OPS["member_remove"].role.value == "admin"
    for bad in ({"raft_address": "a:1", "api_address": "a:2"}, {"id": "x", "api_address": "a"},
                {"id": "", "raft_address": "a:1", "api_address": "a:2"}):
        with pytest.raises(InvalidRequest):
            api.add_member(bad)
    with pytest.raises(InvalidRequest):
        api.remove_member("")


def test_async_calls_match_the_blocking_ones() -> None:
    sent = []

    class AsyncRecorder(AsyncMembershipApi):
        async def request(self, op: str, body: dict[str, Any],
                          timeout: float | None) -> dict[str, Any]:
            sent.append((op, body))
            return {"members": [ROW]}

    async def run() -> None:
        api = AsyncRecorder()
        assert await api.member_list() == [ClusterNode.from_json(ROW)]
        await api.add_member({"id": "n4", "raft_address": "h:1", "api_address": "h:2"})
        await api.remove_member("n4")
    asyncio.run(run())
    assert [op for op, _ in sent] == ["member_list", "member_add", "member_remove"]


def test_endpoints_follow_the_clients_scheme() -> None:
    nodes = [ClusterNode.from_json({**ROW, "native_address": "127.0.0.1:3"})]
    assert endpoints_from(nodes, ["http://x:1"]) == ["http://127.0.0.1:2"]
    assert endpoints_from(nodes, ["tcp://x:1"]) == ["tcp://127.0.0.1:3"]


def test_the_raft_port_accepts_our_membership_entries_only() -> None:
    table = [membership.member("n1", "127.0.0.1:1", "127.0.0.1:2", None)]
    ours = membership.encode_change("add", "127.0.0.1:1", table)
    check_command(ours, {0})
    request = membership.decode_change(ours)
    assert request is not None and membership.table_after(request) == table
    node = SimpleNamespace(id="127.0.0.1:1", address="127.0.0.1:1")
    for bad in (bytes([2]) + pickle.dumps(["add", "a:1", "b:1", table], protocol=2),
                bytes([2]) + pickle.dumps(["add", "a:1", "a:1", [{"id": 1}]], protocol=2),
                bytes([2]) + pickle.dumps(["del", "a:1", "a:1", table], protocol=2),
                bytes([2]) + pickle.dumps(["add", "a:1", node], protocol=2)):
        with pytest.raises(UnsafeCommand):
            check_command(bad, {0})


def test_a_new_member_is_checked_against_the_table() -> None:
    table = [membership.member("n1", "127.0.0.1:1", "127.0.0.1:2", None)]
    new = membership.check_new_member({"id": "n2", "raft_address": "localhost:5",
                                       "api_address": "127.0.0.1:6"}, table)
    assert new["raft_address"] == "localhost:5" and new["native_address"] is None
    for fields, reason in (({"id": "n1", "raft_address": "h:9", "api_address": "h:8"},
                            "member_exists"),
                           ({"id": "n9", "raft_address": "127.0.0.1:1", "api_address": "h:8"},
                            "member_exists"),
                           ({"id": "n9", "raft_address": "nope", "api_address": "h:8"}, None),
                           ({"id": 5, "raft_address": "h:1", "api_address": "h:8"}, None)):
        with pytest.raises(InvalidRequest) as raised:
            membership.check_new_member(fields, table)
        assert raised.value.details.get("reason") == reason


class FakeStore:
    """What report_mismatch reads of pysyncobj: voters, itself, unapplied entries."""

    def __init__(self, others: list[str], own: str, tail: list[bytes],
                 members: list[dict[str, Any]] | None = None) -> None:
        self._SyncObj__otherNodes = [SimpleNamespace(address=a) for a in others]
        self.selfNode = SimpleNamespace(address=own)
        self.raftLastApplied = 10
        self._tail = tail
        self.members = members

    def _SyncObj__getEntries(self, start: int) -> list[tuple[bytes, int, int]]:
        return [(command, start + i, 1) for i, command in enumerate(self._tail)]


def test_the_config_mismatch_is_one_line_naming_both(tmp_path: Path) -> None:
    configs = [load_config(p) for p in write_cluster_configs(tmp_path, 3)]
    config = configs[0]
    peers = [str(p.raft_address) for p in config.peers]
    own = str(config.raft_address)
    agree = membership.MembershipChanges(config, lambda: FakeStore(peers, own, []), lambda: None)
    assert agree.report_mismatch() is None
    table = membership.configured_table(config) + [
        membership.member("n9", "127.0.0.1:9", "127.0.0.1:10", None)]
    grown = FakeStore(peers, own, [bytes([1]), membership.encode_change("add", "127.0.0.1:9",
                                                                        table)])
    line = membership.MembershipChanges(config, lambda: grown, lambda: None).report_mismatch()
    assert line is not None and "\n" not in line
    assert "n9=127.0.0.1:9" in line and "using the live membership" in line
    assert str(config.path) in line


def test_an_ipv6_member_is_named_as_pysyncobj_and_the_configs_name_it() -> None:
    from consensus_store.addresses import Address, RaftAddress
    from consensus_store.api.membership import add_body
    config = SimpleNamespace(id="n4", raft_address=RaftAddress("::1", 7104),
                             api_address=Address("::1", 7204), native_address=None)
    body = add_body(config)            # as written in a config: brackets
    assert (body["raft_address"], body["api_address"]) == ("[::1]:7104", "[::1]:7204")
    fields = {"id": body["member"], **{k: body[k] for k in ("raft_address", "api_address")}}
    added = membership.check_new_member(fields, [])
    assert added["raft_address"] == str(RaftAddress("::1", 7104)) == "::1:7104"
    taken = [membership.member("n9", RaftAddress("::1", 7104), Address("::1", 7209), None)]
    with pytest.raises(InvalidRequest, match="raft address"):
        membership.check_new_member(fields, taken)
