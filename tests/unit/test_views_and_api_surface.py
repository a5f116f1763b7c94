"""Rich views render from status objects alone; the public names stay what we document."""
from __future__ import annotations

import inspect
import subprocess
import sys

from rich.console import Console

import consensus_store
from consensus_store.cli import views
from consensus_store.models import KeyValue, NodeStatus, Role


def render(renderable: object, width: int = 120) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_status_table_shows_roles_indexes_lag_and_down_nodes_under_their_id() -> None:
    statuses = [
        NodeStatus(id="n1", endpoint="http://127.0.0.1:1", role=Role.LEADER, term=4,
                   commit_index=120, applied_index=119, log_length=121, leader="n1",
                   connected_peers=("n2",), keys=7, membership="voter", lag=1,
                   raft_address="127.0.0.1:11", api_address="127.0.0.1:1"),
        NodeStatus(id="n3", endpoint="http://127.0.0.1:3", role=Role.DOWN,
                   error="http://127.0.0.1:3: ConnectError: [Errno 111] Connection refused",
                   reason="connection refused", membership="voter",
                   raft_address="127.0.0.1:13", api_address="127.0.0.1:3"),
    ]
    text = render(views.status_table(statuses))
    leader_row = next(line for line in text.splitlines() if "n1" in line and "leader" in line)
    for cell in ("voter", "4", "120", "119", "121", "n2", "7", "yes"):
        assert cell in leader_row
    assert leader_row.split("│")[7].strip() == "1"          # the lag column
    down_row = next(line for line in text.splitlines() if "down" in line)
    assert down_row.split("│")[1].strip() == "n3"
    assert "no: connection refused" in down_row and "voter" in down_row
    addresses = render(views.addresses_table(statuses))
    down_addresses = next(line for line in addresses.splitlines() if "n3" in line)
    assert "127.0.0.1:13" in down_addresses and "http://127.0.0.1:3" in down_addresses


def test_kv_table_shortens_long_values() -> None:
    text = render(views.kv_table([KeyValue("k", "x" * 500, 1, 2, 3)]))
    assert "…" in text and "x" * 61 not in text


def test_public_names_are_exactly_all() -> None:
    public = {name for name in dir(consensus_store) if not name.startswith("_")
              and not inspect.ismodule(getattr(consensus_store, name))}  # submodules appear once imported
    assert public <= set(consensus_store.__all__)
    for name in consensus_store.__all__:
        assert getattr(consensus_store, name) is not None


def test_the_documented_public_names_and_no_others() -> None:
    assert sorted(consensus_store.__all__) == sorted([
        "RETRYABLE", "AsyncClient", "AuthError", "Client", "CompareFailed", "ConfigError",
        "ConsensusStoreError", "Consistency", "Forbidden", "InvalidRequest", "KeyValue",
        "LimitExceeded", "Node", "NodeStatus", "NotFound", "NotLeader", "PayloadTooLarge",
        "RangeResult", "Role", "Timeout", "TlsError", "TxnResult", "Unavailable",
        "Compacted", "WatchEvent", "Member", "Leader", "GroupEvent", "NameDown", "Message",
        "MultiCall", "Broadcast", "NodeInfo", "NodeEvent", "ClusterNode", "LeaderTransfer",
        "BackupHeader"])
    from consensus_store import AsyncClient, Client, Node
    from consensus_store.client import AsyncClient as ClientAsync, Client as ClientSync
    assert (Client, AsyncClient) == (ClientSync, ClientAsync) and Node.__name__ == "Node"


def test_importing_the_package_does_not_load_the_engine() -> None:
    code = "import sys, consensus_store; print('pysyncobj' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_client_layers_never_import_node_or_state() -> None:
    code = ("import sys, consensus_store.client, consensus_store.cli.main, consensus_store.cli.views;"
            "print(sorted(m for m in sys.modules if m.startswith(('consensus_store.node', "
            "'consensus_store.state', 'pysyncobj'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_usage_errors_are_one_line_exit_2() -> None:
    for argv in (["frobnicate"], ["get"], ["range", "--limit", "x"], ["dashboard", "--interval", "0"],
                 ["status", "--watch", "--interval", "soon"]):
        done = subprocess.run([sys.executable, "-m", "consensus_store", *argv],
                              capture_output=True, text=True)
        assert done.returncode == 2, argv
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
