"""Issue #10: the client token crossed the network in clear text (no TLS on HTTP or native).

With ``[tls]`` both client ports serve TLS 1.2+; clients verify the node's certificate by
default and fail at once, with ``TlsError``, on one they do not trust; ``client_ca_file`` makes
the nodes require client certificates; nodes call each other's API (forwarded keepalives) over
TLS too.  Certificates come from a throwaway CA made at test time (``testing/certs.py``).
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consensus_store.client import AsyncClient, Client
from consensus_store.config import load_config
from consensus_store.errors import ConfigError, ConsensusStoreError, TlsError
from consensus_store.launcher import LocalCluster, write_cluster_configs
from consensus_store.models import ConnectionState
from consensus_store.node import Node
from consensus_store.testing.certs import CertificateAuthority

from integration.support import ClusterPool

_SCRIPT = Path(sys.executable).with_name("consensus-store")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "consensus_store"]


def _tls_cluster(pool: ClusterPool, name: str, client_certs: bool = False) -> LocalCluster:
    paths = write_cluster_configs(pool.root / name / "configs", 3, tls=True,
                                  client_certs=client_certs)
    return pool.launch(paths)


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    return _tls_cluster(module_pool, "tls")


def _native(cluster: LocalCluster) -> list[str]:
    return next(iter(cluster.nodes.values())).config.native_endpoints


def _other_ca(tmp_path: Path) -> Path:
    return CertificateAuthority.create("someone else").write_ca(tmp_path)


def test_both_ports_serve_tls_and_clients_verify_against_the_ca(cluster: LocalCluster) -> None:
    assert all(e.startswith("https://") for e in cluster.endpoints)
    assert all(e.startswith("tls://") for e in _native(cluster))
    ca = cluster.tls.ca_file
    with Client(cluster.endpoints, token=cluster.token, cacert=ca) as client:
        client.put("tls/http", 1)
    with Client(_native(cluster), token=cluster.token, cacert=ca) as client:
        client.put("tls/native", 2)
        assert client.get("tls/http", consistency="linearizable").value == 1

    async def scenario() -> None:
        for endpoints in (cluster.endpoints, _native(cluster)):
            async with AsyncClient(endpoints, token=cluster.token, cacert=ca) as client:
                await client.put("tls/async", endpoints[0])
                assert (await client.get("tls/async")).value == endpoints[0]
    asyncio.run(scenario())


def test_from_config_uses_the_configs_tls_settings(cluster: LocalCluster) -> None:
    path = next(iter(cluster.nodes.values())).config.path
    for protocol in ("http", "native"):
        with Client.from_config(path, protocol=protocol) as client:
            assert client.endpoints[0].split("://")[0] == ("https" if protocol == "http" else "tls")
            client.put(f"tls/from_config/{protocol}", True)


def test_nothing_is_served_in_clear_text(cluster: LocalCluster) -> None:
    node = next(iter(cluster.nodes.values()))
    for address in (node.config.api_address, node.config.native_address):
        assert address is not None
        with socket.create_connection((address.host, address.port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = sock.recv(4096)
            except ConnectionResetError:
                answer = b""
        assert not answer.startswith(b"HTTP/") and b"header" not in answer


@pytest.mark.parametrize("which", ["http", "native"])
def test_untrusted_certificate_fails_at_once_and_clearly(cluster: LocalCluster, tmp_path: Path,
                                                         which: str) -> None:
    endpoints = cluster.endpoints if which == "http" else _native(cluster)
    for options in ({}, {"cacert": _other_ca(tmp_path)}):     # system trust store; a wrong CA
        started = time.monotonic()
        with Client(endpoints, token=cluster.token, timeout=10, **options) as client:
            with pytest.raises(TlsError, match="not trusted"):
                client.put("tls/never", 1)
        assert time.monotonic() - started < 5, "a TLS trust failure must not be retried"


def test_a_missing_or_bad_ca_file_is_a_config_error(cluster: LocalCluster, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"cacert: .*missing\.pem: cannot read"):
        Client(cluster.endpoints, token=cluster.token, cacert=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=r"cacert: .*garbage\.pem: not a PEM"):
        Client(cluster.endpoints, token=cluster.token, cacert=garbage)


def test_node_with_a_bad_certificate_file_refuses_to_start(cluster: LocalCluster,
                                                           tmp_path: Path) -> None:
    config_path = next(iter(cluster.nodes.values())).config.path
    text = config_path.read_text()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    cert_line = next(line for line in text.splitlines() if line.startswith("cert_file"))
    broken = config_path.with_name("broken.toml")     # beside its secret and tokens files
    broken.write_text(text.replace(cert_line, f'cert_file = "{garbage}"'))
    with pytest.raises(ConfigError) as raised:
        Node(load_config(broken))
    assert "tls.cert_file" in raised.value.message and str(garbage) in raised.value.message
    # the CLI: one line naming the file and the key, exit 2
    result = subprocess.run(CLI + ["node", "--config", str(broken)], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert "tls.cert_file" in result.stderr and str(garbage) in result.stderr
    assert "Traceback" not in result.stderr


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONSENSUS_STORE_")}
    clean.update(env or {})
    return subprocess.run(CLI + list(args), env=clean, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_cli_cacert_option_and_environment(cluster: LocalCluster, tmp_path: Path) -> None:
    ca = str(cluster.tls.ca_file)
    for endpoints in (cluster.endpoints, _native(cluster)):
        target = ["--endpoints", ",".join(endpoints), f"--token={cluster.token}"]
        put = _cli("put", "tls/cli", endpoints[0], *target, "--cacert", ca)
        assert put.returncode == 0, put.stderr
        get = _cli("get", "tls/cli", *target, env={"CONSENSUS_STORE_CACERT": ca})
        assert get.returncode == 0 and get.stdout.strip() == endpoints[0], get.stderr
        untrusted = _cli("get", "tls/cli", *target, "--timeout", "5")
        assert untrusted.returncode == 2 and "not trusted" in untrusted.stderr, untrusted.stderr
        assert len(untrusted.stderr.splitlines()) == 1
    missing = _cli("get", "tls/cli", "--endpoints", cluster.endpoints[0], "--token",
                   cluster.token, "--cacert", str(tmp_path / "nope.pem"))
    assert missing.returncode == 2 and "cacert" in missing.stderr and "nope.pem" in missing.stderr


def test_forwarded_keepalives_reach_the_leader_over_tls(cluster: LocalCluster) -> None:
    """A session kept alive through a follower only: the follower forwards each keepalive to
    the leader's API, which is https:// and verified against the cluster's CA."""
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.nodes.values() if n.id != leader)
    with Client([follower.endpoint], token=cluster.token, cacert=cluster.tls.ca_file) as client:
        session = client.session(ttl=1.0)
        try:
            deadline = time.monotonic() + 4.0        # four TTLs, keepalives every third of one
            while time.monotonic() < deadline:
                assert session.state is ConnectionState.CONNECTED
                time.sleep(0.1)
            answer = client._request("session_keepalive", session.auth, 5.0)
            assert answer["session"] == session.id
        finally:
            session.close()


def test_client_certificate_required_when_client_ca_file_is_set(cluster_pool: ClusterPool,
                                                                tmp_path: Path) -> None:
    cluster = _tls_cluster(cluster_pool, "mtls", client_certs=True)
    ca, folder = cluster.tls.ca_file, cluster.tls.ca_file.parent
    native = _native(cluster)
    stranger = CertificateAuthority.create("stranger").write(tmp_path, "client", hosts=[])
    for endpoints in (cluster.endpoints, native):
        # TLS 1.3: the node checks the client's certificate after the client's handshake ended
        # and closes without an alert the client could read, so the client only sees a closed
        # connection (retried until its timeout)
        for options in ({}, {"cert": stranger.cert, "key": stranger.key}):
            with Client(endpoints, token=cluster.token, cacert=ca, timeout=2,
                        **options) as client:  # type: ignore[arg-type]
                with pytest.raises(ConsensusStoreError):
                    client.put("mtls/refused", 1)
        with Client(endpoints, token=cluster.token, cacert=ca, cert=folder / "client.pem",
                    key=folder / "client.key") as client:
            client.put("mtls/ok", endpoints[0])
            assert client.get("mtls/ok", consistency="linearizable").value == endpoints[0]
            assert client.get("mtls/refused") is None
    # a session through a follower: the follower presents its own certificate to the leader
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.nodes.values() if n.id != leader)
    with Client([follower.endpoint], token=cluster.token, cacert=ca, cert=folder / "client.pem",
                key=folder / "client.key") as client:
        session = client.session(ttl=5.0)
        try:
            answer = client._request("session_keepalive", session.auth, 5.0)
            assert answer["session"] == session.id
        finally:
            session.close()
