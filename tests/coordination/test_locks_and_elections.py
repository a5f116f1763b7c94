"""Fenced locks and elections under kill -9 of holders and of the Raft leader."""
from __future__ import annotations


from consensus_store.launcher import LocalCluster
from .support import wait_until


class FencedResource:
    """What a lock protects: it rejects any token lower than one it has seen."""

    def __init__(self) -> None:
        self.highest = 0
        self.accepted: list[int] = []

    def write(self, token: int) -> bool:
        if token < self.highest:
            return False
        self.highest = token
        self.accepted.append(token)
        return True


def grant_intervals(worker) -> list[tuple[float, float, int]]:
    grants = {e["token"]: e["t"] for e in worker.seen("granted")}
    releases = {e["token"]: e["t"] for e in worker.seen("releasing")}
    return [(start, releases.get(token, float("inf")), token) for token, start in grants.items()]


def test_lock_holders_never_overlap_and_tokens_increase(cluster: LocalCluster, workers) -> None:
    a, b = workers("lock", "L1", "a"), workers("lock", "L1", "b")
    wait_until(lambda: len(a.seen("granted")) >= 3 and len(b.seen("granted")) >= 3, 30,
               "both workers to hold the lock a few times")
    a.kill()   # a holder (or waiter) dies with -9
    count = len(b.seen("granted"))
    wait_until(lambda: len(b.seen("granted")) >= count + 3, 30, "b to keep getting the lock")
    leader = cluster.wait_for_leader()
    cluster.nodes[leader].kill()           # Raft leader failover in the middle
    count = len(b.seen("granted"))
    wait_until(lambda: len(b.seen("granted")) >= count + 3, 40, "grants after leader failover")
    cluster.nodes[leader].start()

    intervals = sorted(grant_intervals(a) + grant_intervals(b))
    killed_a = max(e["t"] for e in a.events())
    resource = FencedResource()
    for (start, end, token), (next_start, _, next_token) in zip(intervals, intervals[1:]):
        assert token < next_token, "fencing tokens must strictly increase in grant order"
        if end != float("inf"):
            assert end <= next_start, f"token {token} still held when {next_token} was granted"
        else:
            assert start <= killed_a, "only a killed holder may never release"
    assert all(resource.write(token) for _, _, token in intervals)


def test_election_failover_and_fencing(cluster: LocalCluster, workers) -> None:
    candidates = [workers("campaign", "E1", f"c{i}") for i in range(3)]
    first = wait_until(lambda: [c for c in candidates if c.seen("leader")], 20, "a first leader")
    assert len(first) == 1
    leader = first[0]
    token = leader.seen("leader")[0]["token"]
    killed_at = leader.kill()
    others = [c for c in candidates if c is not leader]
    second = wait_until(lambda: [c for c in others if c.seen("leader")], 20, "a new leader")
    assert len(second) == 1
    elected_at = second[0].seen("leader")[0]["t"]
    new_token = second[0].seen("leader")[0]["token"]
    assert new_token > token
    failover = elected_at - killed_at
    print(f"election failover: {failover:.2f}s after kill -9 (session TTL 1.5s)")
    assert failover < 1.5 + 3.0
    with cluster.client() as client:
        state = client.election("E1").leader(consistency="linearizable")
        assert state is not None and state.member == second[0].ident and state.token == new_token


def test_replicas_never_two_actives(cluster: LocalCluster, workers) -> None:
    replicas = [workers("replica", "svc", f"p{i}") for i in range(3)]
    wait_until(lambda: sum(bool(r.seen("active")) for r in replicas) == 1, 20, "one active")

    def actives_at(t: float) -> list[str]:
        active = []
        for r in replicas:
            transitions = sorted(r.events(), key=lambda e: e["t"])
            state = None
            for e in transitions:
                if e["t"] <= t and e["event"] in ("active", "passive", "standby"):
                    state = e["event"]
            died = r.process.poll() is not None and transitions and transitions[-1]["t"] <= t
            if state == "active" and not died:
                active.append(r.ident)
        return active

    first_active = next(r for r in replicas if r.seen("active"))
    wait_until(lambda: sum(bool(r.seen("passive")) for r in replicas) >= 1, 20, "a passive")
    first_active.kill()
    others = [r for r in replicas if r is not first_active]
    wait_until(lambda: any(r.seen("active") for r in others), 20, "a passive to become active")
    times = sorted(e["t"] for r in others for e in r.events())
    for t in times:
        assert len(actives_at(t)) <= 1, f"two actives at {t}: {actives_at(t)}"
