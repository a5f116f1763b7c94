"""Adding and removing voters under a recorded write load loses no acknowledged write.

Three voters serve the fault suite's workload (puts, cas, reads at every level, from several
clients).  Meanwhile a fourth node starts with an empty data dir and is added; once it has
caught up, a follower is removed and then killed (kill -9).  The workload then stops and the
suite's safety checks run over the three members left: convergence, linearizability, session
guarantees, no lost acknowledged write, node log hazards.
"""
from __future__ import annotations

from pathlib import Path

from consensus_store.client import Client
from consensus_store.launcher import LocalCluster
from consensus_store.testing.checks import check_safety
from consensus_store.testing.membership import Members, configs_with_spares
from consensus_store.testing.polling import poll_until
from consensus_store.testing.workload import Workload

from .conftest import fault_seed

PROGRESS_WRITES = 150
STEP_S = 30.0


def leader_rows(members: Members) -> list | None:
    """The member list as the leader sees it (match indexes), or None."""
    statuses = members.statuses(timeout=2.0)
    leader = next((s for s in statuses.values() if s.role.value == "leader"), None)
    if leader is None:
        return None
    with Client([leader.endpoint], token=members.token, timeout=3.0) as client:
        return client.member_list()


def test_adding_and_removing_voters_under_load_loses_no_acknowledged_write(
        fault_root: Path) -> None:
    voters, spares = configs_with_spares(fault_root / "configs", 3, 1)
    cluster = LocalCluster(voters, data_root=fault_root / "data", log_dir=fault_root / "logs")
    spare = LocalCluster(spares, data_root=fault_root / "data", log_dir=fault_root / "logs")
    workload = Workload(cluster.endpoints + spare.endpoints, cluster.token, workers=4,
                        seed=fault_seed(12), op_timeout=5.0, think_s=0.005,
                        max_ops_per_worker=20_000)
    try:
        cluster.start()
        leader = cluster.wait_for_leader(timeout=30)
        workload.start()
        assert workload.wait_for_progress(PROGRESS_WRITES, STEP_S), workload.summary()

        # add a fourth voter under load; it catches up from the leader
        spare.nodes["n4"].start()
        with cluster.client(timeout=15.0) as admin:
            admin.add_member(spare.nodes["n4"].config)
        every = Members([cluster, spare], ["n1", "n2", "n3", "n4"])

        def n4_caught_up() -> bool:
            rows = leader_rows(every)
            return bool(rows) and len(rows) == 4 and len(
                {r.match_index for r in rows if r.match_index is not None}) == 1
        assert poll_until(n4_caught_up, STEP_S, 0.05), leader_rows(every)
        assert workload.wait_for_progress(PROGRESS_WRITES, STEP_S), workload.summary()

        # remove a follower under load, then its machine dies
        leader = cluster.wait_for_leader(timeout=30)
        victim = next(n for n in ("n1", "n2", "n3") if n != leader)
        with cluster.client(timeout=15.0) as admin:
            left = admin.remove_member(victim)
        assert sorted(m.id for m in left) == sorted(set(every.ids) - {victim})
        cluster.nodes[victim].kill()
        assert workload.wait_for_progress(PROGRESS_WRITES, STEP_S), workload.summary()
        assert workload.stop(), "workers did not finish"

        members = Members([cluster, spare], sorted(set(every.ids) - {victim}))
        result = check_safety(members, workload, lincheck_timeout_s=120.0)  # type: ignore[arg-type]
        summary = workload.summary()
        print(f"\nmembership under load: {summary}")
        assert summary.get("total", 0) > 3 * PROGRESS_WRITES, summary
        assert not result.anomalies, "\n".join(str(a) for a in result.anomalies)
        assert {len(state) for state in result.states.values()} != {0}
        assert sorted(result.states) == members.ids
    finally:
        workload.stop(timeout=10)
        cluster.stop()
        spare.stop()
