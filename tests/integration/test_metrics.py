"""``GET /metrics`` on real nodes: Prometheus' own parser reads it, the request counters move
with traffic (by op and status, on both client ports), Raft's gauges agree with
``/v1/status``, and the route needs a client token (the read role is enough)."""
from __future__ import annotations

from typing import Any

import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consensus_store.client import Client
from consensus_store.errors import InvalidRequest
from consensus_store.launcher import LocalCluster
from consensus_store.testing.polling import wait_until

from .support import ClusterPool, raw_post

READ_TOKEN = "metrics-read-token-0123456789"


@pytest.fixture(scope="module")
def cluster(module_pool: ClusterPool) -> LocalCluster:
    # Snapshots after 200 entries, so that snapshot_age_seconds shows up within a test.
    paths = module_pool.write_configs(3, name="metrics",
                                      raft_table={"log_compaction_min_entries": 200})
    with open(paths[0].parent / "tokens.toml", "a") as tokens:
        tokens.write(f'\n[[tokens]]\nname = "prometheus"\ntoken = "{READ_TOKEN}"\nrole = "read"\n')
    return module_pool.launch(paths)


def scrape(cluster: LocalCluster, node_id: str, token: str | None = None) -> dict[str, Any]:
    """The node's samples by (name, sorted labels); the families' types by name."""
    answer = httpx.get(cluster.nodes[node_id].endpoint + "/metrics", timeout=5.0,
                       headers={"Authorization": f"Bearer {token or cluster.token}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[Any, float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(answer.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return {"samples": samples, "types": types}


def value(scraped: dict[str, Any], name: str, **labels: str) -> float:
    return scraped["samples"].get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_describe_the_node(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    scraped = scrape(cluster, leader)
    types = scraped["types"]
    for gauge in ("raft_term", "raft_commit_index", "raft_applied_index", "raft_leader",
                  "raft_log_entries", "raft_log_bytes", "sessions", "groups", "group_members",
                  "names", "watchers"):
        assert types.get(f"consensus_store_{gauge}") == "gauge", gauge
    for counter in ("requests", "messages_sent", "messages_dropped"):
        assert types.get(f"consensus_store_{counter}") == "counter", counter
    assert types["consensus_store_request_duration_seconds"] == "histogram"
    assert types["consensus_store_fsync_duration_seconds"] == "histogram"   # fsync: the default
    assert value(scraped, "consensus_store_node_info", id=leader) == 1.0
    leaders = wait_until(lambda: [n for n in cluster.nodes if value(
        scrape(cluster, n), "consensus_store_raft_leader") == 1.0] or None, 15, what="a leader")
    assert len(leaders) == 1
    assert value(scraped, "consensus_store_raft_log_bytes") > 0
    assert value(scraped, "consensus_store_fsync_duration_seconds_count") >= 1


def test_request_counters_move_with_traffic(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    before = scrape(cluster, leader)
    puts, gets = 7, 5
    http = cluster.nodes[leader].endpoint
    with Client([http], token=cluster.token) as client:
        for i in range(puts):
            client.put(f"metrics/{i}", i)
        for i in range(gets):
            client.get(f"metrics/{i}", consistency="local")
        with pytest.raises(InvalidRequest):
            client.put("", 1)                                  # 400, never retried
    native = str(cluster.nodes[leader].config.native_address)
    with Client([f"tcp://{native}"], token=cluster.token) as client:
        client.put("metrics/native", 1)
    assert raw_post(cluster, leader, "/v1/groups/join",
                    {"group": "no-such-group", "session": 1}).status_code in (403, 404)
    unauthorized = httpx.post(http + "/v1/kv/get", json={"key": "a"}, timeout=5.0,
                              headers={"Authorization": "Bearer wrong-token-wrong-token"})
    assert unauthorized.status_code == 401
    after = scrape(cluster, leader)

    def moved(op: str, status: str) -> float:
        return (value(after, "consensus_store_requests_total", op=op, status=status)
                - value(before, "consensus_store_requests_total", op=op, status=status))

    assert moved("put", "200") == puts + 1          # HTTP and native alike
    assert moved("get", "200") == gets
    assert moved("put", "400") == 1
    assert moved("get", "401") == 1
    assert moved("group_join", "403") + moved("group_join", "404") == 1
    latency = after["samples"]
    count = latency[("consensus_store_request_duration_seconds_count",
                     (("op", "put"), ("status", "200")))]
    inf = latency[("consensus_store_request_duration_seconds_bucket",
                   (("le", "+Inf"), ("op", "put"), ("status", "200")))]
    assert count == inf == value(after, "consensus_store_requests_total", op="put", status="200")
    assert latency[("consensus_store_request_duration_seconds_sum",
                    (("op", "put"), ("status", "200")))] > 0
    assert (value(after, "consensus_store_fsync_duration_seconds_count")
            > value(before, "consensus_store_fsync_duration_seconds_count"))


def test_raft_gauges_match_status(cluster: LocalCluster) -> None:
    """With no traffic, what /metrics says of Raft is what /v1/status says."""
    cluster.wait_for_leader()
    for node_id, node in cluster.nodes.items():
        def agree() -> bool:
            status = httpx.get(node.endpoint + "/v1/status", timeout=5.0,
                               headers={"Authorization": f"Bearer {cluster.token}"}).json()
            scraped = scrape(cluster, node_id)
            again = httpx.get(node.endpoint + "/v1/status", timeout=5.0,
                              headers={"Authorization": f"Bearer {cluster.token}"}).json()
            if status["commit_index"] != again["commit_index"]:
                return False          # something committed meanwhile (a heartbeat's notice)
            return (value(scraped, "consensus_store_raft_term") == status["term"]
                    and value(scraped, "consensus_store_raft_commit_index")
                    == status["commit_index"]
                    and value(scraped, "consensus_store_raft_applied_index")
                    == status["header"]["applied_index"]
                    and value(scraped, "consensus_store_raft_log_entries")
                    == status["log_length"]
                    and value(scraped, "consensus_store_raft_leader")
                    == (status["role"] == "leader")
                    and value(scraped, "consensus_store_revision") == status["revision"])
        wait_until(agree, 15.0, what=f"/metrics and /v1/status agree on {node_id}")


def test_coordination_gauges(cluster: LocalCluster) -> None:
    """Every node's gauges follow the replicated state (each once it has applied the writes)."""
    cluster.wait_for_leader()
    before = {n: scrape(cluster, n) for n in cluster.nodes}
    expected = {"sessions": 1, "groups": 1, "group_members": 2, "names": 1}

    def grown(node_id: str) -> bool:
        now = scrape(cluster, node_id)
        return all(value(now, f"consensus_store_{name}")
                   == value(before[node_id], f"consensus_store_{name}") + more
                   for name, more in expected.items())

    with cluster.client() as client:
        client.groups.create("metrics-group")
        client.groups.join("metrics-group", "m1")
        client.groups.join("metrics-group", "m2")
        client.register_name("metrics-name")         # the client's session is still open
        for node_id in cluster.nodes:
            wait_until(lambda: grown(node_id), 15, what=f"{node_id}'s coordination gauges")


def test_metrics_needs_a_client_token(cluster: LocalCluster) -> None:
    node = next(iter(cluster.nodes.values()))
    url = node.endpoint + "/metrics"
    missing = httpx.get(url, timeout=5.0)
    assert missing.status_code == 401 and missing.json()["error"]
    wrong = httpx.get(url, timeout=5.0, headers={"Authorization": "Bearer not-a-token-at-all"})
    assert wrong.status_code == 401
    posted = httpx.post(url, timeout=5.0, headers={"Authorization": f"Bearer {cluster.token}"})
    assert posted.status_code == 405 and posted.headers["allow"] == "GET,HEAD"
    scraped = scrape(cluster, node.id, token=READ_TOKEN)     # the read role is enough
    assert scraped["types"]["consensus_store_raft_term"] == "gauge"


def test_process_metrics(cluster: LocalCluster) -> None:
    scraped = scrape(cluster, next(iter(cluster.nodes)))
    assert value(scraped, "consensus_store_process_resident_memory_bytes") > 0


def test_message_counters_move(cluster: LocalCluster) -> None:
    """``messages_sent`` counts envelopes queued into an inbox on the node, ``messages_dropped``
    those refused (no inbox for the receiver); summed over the nodes."""
    def totals() -> tuple[float, float]:
        scraped = [scrape(cluster, node_id) for node_id in cluster.nodes]
        return (sum(value(s, "consensus_store_messages_sent_total") for s in scraped),
                sum(value(s, "consensus_store_messages_dropped_total") for s in scraped))

    with cluster.client() as receiver, cluster.client() as sender:
        receiver.register_name("metrics-receiver")
        sent, dropped = totals()
        assert not sender.send_name("metrics-receiver", "nobody reads yet")   # no inbox
        inbox = receiver.inbox(wait=1.0).open()
        assert sender.send_name("metrics-receiver", "hello")
        assert next(inbox).message == "hello"
        inbox.close()
        sent_after, dropped_after = totals()
    assert sent_after >= sent + 1 and dropped_after >= dropped + 1


def test_watchers_gauge_counts_a_waiting_watch(cluster: LocalCluster) -> None:
    node_id = next(iter(cluster.nodes))
    revision = httpx.get(cluster.nodes[node_id].endpoint + "/v1/status", timeout=5.0,
                         headers={"Authorization": f"Bearer {cluster.token}"}).json()["revision"]
    answers: list[int] = []
    watch = threading.Thread(target=lambda: answers.append(raw_post(
        cluster, node_id, "/v1/watch",
        {"prefix": "metrics-watch/", "after_revision": revision, "wait": 20}, 30).status_code))
    watch.start()
    try:
        wait_until(lambda: value(scrape(cluster, node_id), "consensus_store_watchers") >= 1, 15,
                   what="the waiting watch to be counted")
    finally:
        with cluster.client() as client:
            client.put("metrics-watch/x", 1)          # answers the watch
        watch.join(30)
    assert answers == [200]
    wait_until(lambda: value(scrape(cluster, node_id), "consensus_store_watchers") == 0, 15,
               what="the answered watch to be gone")


def test_snapshot_age_appears_after_a_snapshot(cluster: LocalCluster) -> None:
    native = [f"tcp://{n.config.native_address}" for n in cluster.nodes.values()]
    with Client(native, token=cluster.token) as client:
        for i in range(250):                         # past log_compaction_min_entries
            client.put(f"metrics-snap/{i % 10}", i)
    for node_id in cluster.nodes:
        age = wait_until(lambda: scrape(cluster, node_id)["samples"].get(
            ("consensus_store_snapshot_age_seconds", ())), 30, what=f"{node_id}'s snapshot")
        assert 0 <= age < 60
