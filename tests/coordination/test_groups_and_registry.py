"""pg2 queries and :global names against real node processes; owners killed with -9."""
from __future__ import annotations

import time

from consensus_store.launcher import LocalCluster
from .support import wait_until


def test_every_pg2_query(cluster: LocalCluster) -> None:
    with cluster.client(session_ttl=5) as client:
        assert client.groups.create("pg2") is True
        assert client.groups.create("pg2") is False
        first = client.groups.join("pg2", meta={"port": 1})
        second = client.groups.join("pg2")                    # duplicate join: a second member
        named = client.groups.join("pg2", member="named", meta="m")
        assert len({first.id, second.id, named.id}) == 3
        assert "pg2" in client.groups.which_groups()
        members = client.groups.members("pg2", consistency="linearizable")
        assert {m.id for m in members} == {first.id, second.id, "named"}
        assert all(m.session == client.default_session().id for m in members)
        # The client talks to one node; members joined through it are "local".
        local = client.groups.local_members("pg2")
        assert {m.id for m in local} == {m.id for m in members if m.node == local[0].node}
        assert client.groups.closest("pg2") in members
        assert client.groups.route("pg2", "some-key") in members
        updated = client.groups.update("pg2", "named", {"v": 2})
        assert updated.meta == {"v": 2} and updated.revision == named.revision
        assert client.groups.leave("pg2", second) is True
        assert {m.id for m in client.groups.members("pg2")} == {first.id, "named"}
        assert client.groups.delete("pg2") is True
        assert "pg2" not in client.groups.which_groups()


def test_members_vanish_after_kill_9(cluster: LocalCluster, workers) -> None:
    survivor = workers("join", "vanish", "survivor")
    victim = workers("join", "vanish", "victim")
    survivor.wait_for("joined")
    victim.wait_for("joined")
    with cluster.client() as client:
        wait_until(lambda: {m.id for m in client.groups.members("vanish")} == {"survivor", "victim"})
        killed_at = victim.kill()
        wait_until(lambda: {m.id for m in client.groups.members("vanish")} == {"survivor"},
                   timeout=15, what="the killed member to vanish")
        gone_after = time.monotonic() - killed_at
    assert gone_after < 1.5 + 3.0, f"member vanished {gone_after:.2f}s after kill -9 (TTL 1.5s)"
    print(f"member vanished {gone_after:.2f}s after kill -9 (session TTL 1.5s)")


def test_registry_never_gives_a_name_to_two_live_owners(cluster: LocalCluster, workers) -> None:
    contenders = [workers("register", "the-name", f"r{i}") for i in range(4)]
    results = [c.wait_for("registered")["ok"] for c in contenders]
    assert results.count(True) == 1, results
    winner = contenders[results.index(True)]
    with cluster.client() as client:
        assert client.whereis_name("the-name") == winner.ident
        assert client.register_name("the-name", "late") is False
        winner.kill()
        wait_until(lambda: client.whereis_name("the-name") is None, 15, "the name to be freed")
        assert client.register_name("the-name", "next") is True
        assert client.whereis_name("the-name") == "next"
        assert "the-name" in client.registered_names()
        assert client.unregister_name("the-name") is True
