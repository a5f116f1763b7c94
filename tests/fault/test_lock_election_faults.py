"""Lock and election checks of the fault suite: fenced locks and elections under SIGSTOP and
kill -9 of their holders, kill -9 of the Raft leader and an isolated Raft leader.

Real node processes (a 3-node ``ProxiedCluster``, so Raft links can be partitioned); three lock
contenders and three election candidates, each a separate OS process with a short session TTL
(``consensus_store.testing.coordination_checks``).  While a contender believes it holds the lock
(granted and its session CONNECTED) it keeps writing to a fenced resource with its token; a
leader does the same on a second resource with its leadership token.  The resources reject any
token lower than the highest they accepted and log every write.  Clients talk to the nodes over
HTTP on loopback, which the proxy does not cover: a client cut off from the cluster is played by
SIGSTOP (which is also the classic GC pause).

Faults, in order: SIGSTOP of the lock holder for longer than the TTL, kill -9 of the lock
holder, kill -9 of the election leader, kill -9 of the Raft leader, isolation of the Raft
leader, SIGSTOP of the election leader, kill -9 of the election leader again.

Checks at the end:
(1) fencing: no resource accepted a token lower than one it had accepted before;
(2) the lock's grants (rebuilt from the cluster's own history, in log order) have strictly
    increasing tokens, and every grant a worker believed in, and every token written, is one
    the cluster gave to that worker;
(3) the stale writes attempted were rejected; after each SIGSTOP the woken process either
    tried a stale write (rejected) or was stopped by its client library (session not
    CONNECTED): which one happened is printed;
(4) no interleaving at the resource: once another grant wrote, an earlier grant never writes
    again (no A, B, A);
(5) the lock makes progress after every fault: a new grant within TTL + a few seconds;
(6) elections: leadership tokens strictly increase, at most one leader at a time as seen by the
    fenced election resource, and a new leader within TTL + an election round after kill -9 of
    the leader (failover times printed).
A merged timeline of everything (timeline.txt), the resource's log and the workers' events stay
in the test's tmp dir.

Also here: the checks on their own against hand-made violations (so the run above cannot pass
vacuously), and a targeted reproduction of a liveness problem the isolated-leader fault shows
(a release sent to a leader that gets isolated blocks the lock until the partition heals).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from consensus_store.errors import ConsensusStoreError
from consensus_store.testing import ProxiedCluster, poll_until
from consensus_store.testing.coordination_checks import (Finding, check_beliefs, check_fencing,
                                                         check_no_interleaving,
                                                         check_strictly_increasing, first_after,
                                                         max_gap, stale_writes, write_timeline)
from consensus_store.testing.coordination_observer import CoordinationObserver
from consensus_store.testing.coordination_workers import WorkerProcess, writes_per_hold
from consensus_store.testing.fenced import (ELECTION_RESOURCE, LOCK_RESOURCE,
                                            FencedResourceServer)

TTL_S = 2.0                          # session TTL of every worker
PAUSE_S = TTL_S + 2.5                # SIGSTOP longer than the TTL: the session expires
PROGRESS_BOUND_S = TTL_S + 4.0       # (5) a new grant within TTL + a few seconds
FAILOVER_BOUND_S = TTL_S + 3.0       # (6) a new leader within TTL + an election round
RAFT_KILL_HOLD_S = 2.0
ISOLATE_HOLD_S = 3.0
LOCK_NAME = "fenced-lock"
ELECTION_NAME = "fenced-election"
CONTENDERS = 3
CANDIDATES = 3
LOCK_HOLD_S, LOCK_GAP_S = 1.2, 0.2          # per grant: 24 writes, then release
LEAD_S, LEAD_GAP_S = 3.0, 0.3               # per leadership: 60 writes, then resign


@dataclass
class Step:
    name: str
    detail: str = ""
    t_inject: float = 0.0
    t_end: float = 0.0               # resumed / healed / restarted
    victim: str | None = None        # worker id or node id
    victim_token: int | None = None
    progress_s: float | None = None  # (5) inject -> next lock grant (to someone else)
    failover_s: float | None = None  # (6) kill -> new leadership committed (observer)
    elected_s: float | None = None   # kill -> the new leader's own "elected" event
    first_write_s: float | None = None  # kill -> the new leader's first accepted write
    wake: str = ""                   # what the SIGSTOPped process did when it woke up
    problems: list[str] = field(default_factory=list)

    def describe(self, t0: float) -> str:
        parts = [f"t={self.t_inject - t0:5.1f}s {self.name:<22} {self.detail}"]
        if self.progress_s is not None:
            parts.append(f"next grant after {self.progress_s:.2f}s")
        if self.failover_s is not None:
            parts.append(f"new leader after {self.failover_s:.2f}s (elected event "
                         f"{_fmt(self.elected_s)}, first accepted write {_fmt(self.first_write_s)})")
        if self.wake:
            parts.append(f"on wake: {self.wake}")
        if self.problems:
            parts.append("PROBLEMS: " + "; ".join(self.problems))
        return " | ".join(parts)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


class Scenario:
    """The cluster, the resource, the observer and the worker processes of one run."""

    def __init__(self, root: Path, cluster: ProxiedCluster, resource: FencedResourceServer,
                 observer: CoordinationObserver) -> None:
        self.root = root
        self.cluster = cluster
        self.resource = resource
        self.observer = observer
        self.workers: dict[str, WorkerProcess] = {}
        self.killed: set[str] = set()          # worker ids killed on purpose
        self.killed_nodes: set[str] = set()
        self._incarnation: dict[str, int] = {}
        self.steps: list[Step] = []
        self.t0 = time.monotonic()

    # ---- workers ---------------------------------------------------------------------------------
    def start_worker(self, role: str, base: str) -> WorkerProcess:
        n = self._incarnation[base] = self._incarnation.get(base, 0) + 1
        ident = base if n == 1 else f"{base}.{n}"
        if role == "lock":
            extra = ["--hold", str(LOCK_HOLD_S), "--gap", str(LOCK_GAP_S)]
            name = LOCK_NAME
        else:
            extra = ["--hold", str(LEAD_S), "--gap", str(LEAD_GAP_S)]
            name = ELECTION_NAME
        worker = WorkerProcess(role, ident, endpoints=self.cluster.endpoints,
                               token=self.cluster.token, name=name,
                               resource=self.resource.address, events_dir=self.root / "workers",
                               ttl=TTL_S, extra=extra + ["--max-s", "240"])
        self.workers[ident] = worker
        return worker

    def replace(self, victim: WorkerProcess) -> WorkerProcess:
        return self.start_worker(victim.role, victim.ident.split(".")[0])

    def stop_all(self) -> None:
        for worker in self.workers.values():
            worker.stop()

    # ---- finding who holds what ------------------------------------------------------------------
    def catch(self, current: Callable[[], Any], owner_of: Callable[[Any], str | None],
              belief_event: str, resource: str, writes: int,
              tries: int = 30) -> tuple[WorkerProcess, Any, float] | None:
        """SIGSTOP the worker the cluster names (holder / leader) once it also believes it (its
        last event is the grant / election of that token) and is in the middle of its writes
        (not about to release).  Returns (worker, grant, time) with the worker stopped, or
        None."""
        for _ in range(tries):
            found = current()
            worker = self.workers.get(owner_of(found) or "") if found is not None else None
            if worker is None or not worker.alive:
                time.sleep(0.1)
                continue
            t = worker.pause()
            mine = [e for e in worker.events() if e["event"] not in ("started",)]
            believes = (mine and mine[-1]["event"] == belief_event
                        and mine[-1]["token"] == found.token)
            done = sum(1 for r in self.resource.records(resource)
                       if r.holder == worker.ident and r.token == found.token)
            still = current()
            if believes and 2 <= done <= writes - 3 and still is not None \
                    and still.token == found.token:
                return worker, found, t
            worker.resume()
            time.sleep(0.15)
        return None

    def catch_lock_holder(self) -> tuple[WorkerProcess, Any, float] | None:
        return self.catch(self.observer.current_holder, lambda g: g.owner, "granted",
                          LOCK_RESOURCE, writes_per_hold(LOCK_HOLD_S))

    def catch_election_leader(self) -> tuple[WorkerProcess, Any, float] | None:
        return self.catch(self.observer.current_leader, lambda l: l.member, "elected",
                          ELECTION_RESOURCE, writes_per_hold(LEAD_S))

    # ---- measurements ----------------------------------------------------------------------------
    def wait_next_grant(self, step: Step, t: float, revision: int, not_owner: str | None,
                        timeout: float) -> None:
        def found() -> Any:
            grants, _, _ = self.observer.snapshot()
            return first_after(grants, t, min_revision=revision,
                               accept=lambda g: g.owner != not_owner)
        grant = poll_until(found, timeout, 0.05)
        if grant is None:
            step.problems.append(f"no new lock grant within {timeout:.1f}s")
        else:
            step.progress_s = grant.t - t

    def wait_new_leader(self, step: Step, t: float, revision: int, old_token: int,
                        victim: str, timeout: float) -> None:
        def found() -> Any:
            _, leaderships, _ = self.observer.snapshot()
            return first_after(leaderships, t, min_revision=revision,
                               accept=lambda l: l.member is not None and l.member != victim)
        leadership = poll_until(found, timeout, 0.05)
        if leadership is None:
            step.problems.append(f"no new election leader within {timeout:.1f}s")
            return
        step.failover_s = leadership.t - t
        assert leadership.token is not None and leadership.token > old_token
        new = self.workers.get(leadership.member or "")
        if new is not None:
            elected = poll_until(lambda: [e for e in new.events("elected")
                                          if e["token"] == leadership.token], 5.0, 0.05)
            if elected:
                step.elected_s = elected[0]["t"] - t
        write = poll_until(lambda: next((r for r in self.resource.records(ELECTION_RESOURCE)
                                         if r.accepted and r.t >= t and r.token > old_token),
                                        None), 5.0, 0.05)
        if write is not None:
            step.first_write_s = write.t - t

    def what_woke_up(self, worker: WorkerProcess, token: int, resource: str,
                     t_resume: float) -> tuple[str, int, int]:
        """After SIGCONT: (summary, stale writes rejected, stale writes accepted)."""
        deadline = time.monotonic() + TTL_S + 2.0
        decided: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            decided = [e for e in worker.events() if e["t"] >= t_resume and e.get("token") == token
                       and e["event"] in ("fenced", "not-connected", "deposed")]
            if decided:
                break
            time.sleep(0.1)
        mine = [r for r in self.resource.records(resource)
                if r.holder == worker.ident and r.token == token and r.t >= t_resume]
        rejected = sum(not r.accepted for r in mine)
        accepted = sum(r.accepted for r in mine)
        if decided:
            event = decided[0]
            how = {"fenced": "tried a stale write: REJECTED by the resource",
                   "not-connected": "its client library stopped it (session "
                                    f"{event.get('state')}): no stale write attempted",
                   "deposed": "noticed it was no longer leader before writing"}[event["event"]]
        else:
            how = "no decision seen"
        return (f"{how} (stale writes rejected {rejected}, accepted {accepted}; session state "
                f"when it stopped: {decided[0].get('state') if decided else '?'})",
                rejected, accepted)

    # ---- the faults ------------------------------------------------------------------------------
    def step(self, name: str) -> Step:
        step = Step(name)
        self.steps.append(step)
        return step

    def pause_lock_holder(self) -> Step:
        step = self.step("pause-lock-holder")
        caught = self.catch_lock_holder()
        if caught is None:
            step.problems.append("could not catch a lock holder")
            return step
        worker, grant, t = caught
        step.t_inject, step.victim, step.victim_token = t, worker.ident, grant.token
        step.detail = f"SIGSTOP {worker.ident} (token {grant.token}) for {PAUSE_S:.1f}s"
        self.wait_next_grant(step, t, grant.revision, worker.ident, PAUSE_S)
        time.sleep(max(0.0, t + PAUSE_S - time.monotonic()))
        step.t_end = worker.resume()
        step.wake, rejected, accepted = self.what_woke_up(worker, grant.token, LOCK_RESOURCE,
                                                          step.t_end)
        if accepted:
            step.problems.append(f"{accepted} stale lock writes ACCEPTED after the pause")
        return step

    def kill_lock_holder(self) -> Step:
        step = self.step("kill-lock-holder")
        caught = self.catch_lock_holder()
        if caught is None:
            step.problems.append("could not catch a lock holder")
            return step
        worker, grant, _ = caught
        t = worker.kill()
        self.killed.add(worker.ident)
        step.t_inject = step.t_end = t
        step.victim, step.victim_token = worker.ident, grant.token
        step.detail = f"kill -9 {worker.ident} (token {grant.token})"
        self.replace(worker)
        self.wait_next_grant(step, t, grant.revision, worker.ident, PROGRESS_BOUND_S + 10)
        return step

    def kill_election_leader(self) -> Step:
        step = self.step("kill-election-leader")
        caught = self.catch_election_leader()
        if caught is None:
            step.problems.append("could not catch an election leader")
            return step
        worker, leadership, _ = caught
        t = worker.kill()
        self.killed.add(worker.ident)
        step.t_inject = step.t_end = t
        step.victim, step.victim_token = worker.ident, leadership.token
        step.detail = f"kill -9 leader {worker.ident} (token {leadership.token})"
        self.wait_new_leader(step, t, leadership.revision, leadership.token, worker.ident,
                             FAILOVER_BOUND_S + 10)
        self.replace(worker)
        return step

    def pause_election_leader(self) -> Step:
        step = self.step("pause-election-leader")
        caught = self.catch_election_leader()
        if caught is None:
            step.problems.append("could not catch an election leader")
            return step
        worker, leadership, t = caught
        step.t_inject, step.victim, step.victim_token = t, worker.ident, leadership.token
        step.detail = f"SIGSTOP leader {worker.ident} (token {leadership.token}) for {PAUSE_S:.1f}s"
        self.wait_new_leader(step, t, leadership.revision, leadership.token, worker.ident, PAUSE_S)
        time.sleep(max(0.0, t + PAUSE_S - time.monotonic()))
        step.t_end = worker.resume()
        step.wake, rejected, accepted = self.what_woke_up(worker, leadership.token,
                                                          ELECTION_RESOURCE, step.t_end)
        if accepted:
            step.problems.append(f"{accepted} stale leader writes ACCEPTED after the pause")
        return step

    def kill_raft_leader(self) -> Step:
        step = self.step("kill-raft-leader")
        leader = self.cluster.leader() or self.cluster.wait_for_leader(10)
        revision = self.observer.revision
        t = time.monotonic()
        self.cluster.kill(leader)
        self.killed_nodes.add(leader)
        step.t_inject, step.victim = t, leader
        step.detail = f"kill -9 raft leader {leader}, restart after {RAFT_KILL_HOLD_S:.0f}s"
        self.wait_next_grant(step, t, revision, None, RAFT_KILL_HOLD_S)
        time.sleep(max(0.0, t + RAFT_KILL_HOLD_S - time.monotonic()))
        self.cluster.restart(leader)
        self.killed_nodes.discard(leader)
        step.t_end = time.monotonic()
        if step.progress_s is None:
            step.problems.clear()
            self.wait_next_grant(step, t, revision, None, PROGRESS_BOUND_S + 10)
        return step

    def isolate_raft_leader(self) -> Step:
        step = self.step("isolate-raft-leader")
        leader = self.cluster.leader() or self.cluster.wait_for_leader(10)
        revision = self.observer.revision
        t = time.monotonic()
        self.cluster.proxy.isolate(leader)
        step.t_inject, step.victim = t, leader
        step.detail = f"isolate raft leader {leader} for {ISOLATE_HOLD_S:.0f}s"
        self.wait_next_grant(step, t, revision, None, ISOLATE_HOLD_S)
        time.sleep(max(0.0, t + ISOLATE_HOLD_S - time.monotonic()))
        self.cluster.proxy.heal()
        step.t_end = time.monotonic()
        if step.progress_s is None:
            step.problems.clear()
            self.wait_next_grant(step, t, revision, None, PROGRESS_BOUND_S + 10)
        return step

    def settle(self, timeout: float = 15.0) -> None:
        """Between faults: a lock holder and an election leader exist, and writes flow."""
        def ready() -> bool:
            now = time.monotonic()
            recent = [r for r in self.resource.records() if r.accepted and r.t > now - 1.0]
            return (self.observer.current_holder() is not None
                    and self.observer.current_leader() is not None
                    and {r.resource for r in recent} == {LOCK_RESOURCE, ELECTION_RESOURCE})
        time.sleep(0.5)
        poll_until(ready, timeout, 0.1)


@pytest.mark.timeout(240)
def test_fenced_locks_and_elections_under_faults(fault_root: Path) -> None:
    started = time.monotonic()
    findings: list[Finding] = []
    with ProxiedCluster(fault_root / "cluster", 3, seed=7) as cluster, \
            FencedResourceServer(fault_root / "resource.jsonl") as resource:
        leader = cluster.start()
        print(f"cluster up in {time.monotonic() - started:.1f}s, raft leader {leader}")
        observer = CoordinationObserver(cluster.endpoints, cluster.token, LOCK_NAME,
                                        ELECTION_NAME).start()
        run = Scenario(fault_root, cluster, resource, observer)
        try:
            for i in range(CONTENDERS):
                run.start_worker("lock", f"L{i + 1}")
            for i in range(CANDIDATES):
                run.start_worker("candidate", f"C{i + 1}")
            warm = poll_until(lambda: len(observer.snapshot()[0]) >= 3
                              and observer.current_leader() is not None, 30.0, 0.1)
            assert warm, "no lock grants / election leader before any fault"
            run.settle()
            t_faults = time.monotonic()
            for fault in (run.pause_lock_holder, run.kill_lock_holder, run.kill_election_leader,
                          run.kill_raft_leader, run.isolate_raft_leader,
                          run.pause_election_leader, run.kill_election_leader):
                fault()
                run.settle()
            t_faults_end = time.monotonic()
            final_grants = len(observer.snapshot()[0])
            if not poll_until(lambda: len(observer.snapshot()[0]) >= final_grants + 2, 10.0, 0.1):
                findings.append(Finding("progress", "no lock grants after the last fault"))
        finally:
            run.stop_all()
            observer.close()
        for node_id, node in cluster.nodes.items():
            if not node.alive:
                findings.append(Finding("crash", f"node {node_id} is not running at the end "
                                                 f"(exit {node.process.returncode if node.process else '?'})"))

    # ---- what happened ---------------------------------------------------------------------------
    records = resource.records()
    grants, leaderships, _ = observer.snapshot()
    lock_records = [r for r in records if r.resource == LOCK_RESOURCE]
    election_records = [r for r in records if r.resource == ELECTION_RESOURCE]
    stale = stale_writes(records)
    print(f"\nwall {time.monotonic() - started:.1f}s, faults {t_faults_end - t_faults:.1f}s; "
          f"{len(grants)} lock grants, {len(leaderships)} leader changes; writes: lock "
          f"{len(lock_records)}, election {len(election_records)}; rejected (stale) "
          f"{len(stale)}; observer gaps {observer.gaps or 'none'}, watch errors {observer.errors}, "
          f"endpoint switches {observer.rotations}")
    seen_by_cluster = {g.token: g.t for g in grants}
    lags = [seen_by_cluster[e["token"]] - e["t"] for w in run.workers.values()
            for e in w.events("granted") if e["token"] in seen_by_cluster]
    if lags:
        print(f"  observer lag behind the workers' own grant events: max {max(lags):.3f}s")
    write_timeline(fault_root / "timeline.txt", run.t0, grants=grants, leaderships=leaderships,
                   records=records,
                   worker_events=[e for w in run.workers.values() for e in w.events()],
                   notes=[(s.t_inject, s.describe(run.t0)) for s in run.steps]
                   + [(s.t_end, f"end of {s.name}") for s in run.steps if s.t_end])
    for step in run.steps:
        print("  " + step.describe(run.t0))
    for record in stale:
        print("  stale write: " + record.describe())
    print(f"  longest time without a lock grant during the faults: "
          f"{max_gap([g.t for g in grants], t_faults, t_faults_end):.2f}s")

    # ---- workers that died on their own, or complained ---------------------------------------------
    for ident, worker in run.workers.items():
        code = worker.process.returncode
        if ident not in run.killed and code not in (None, -9):
            findings.append(Finding("worker-crash", f"{ident} exited with {code}"))
        stderr = (worker.events_path.parent / f"{ident}.stderr").read_text(errors="replace")
        if "Traceback" in stderr:
            findings.append(Finding("worker-traceback", f"{ident}:\n{stderr[-2000:]}"))

    # ---- the checks -----------------------------------------------------------------------------
    complete = not observer.gaps
    findings += check_fencing(records)                                               # (1)
    findings += check_strictly_increasing(                                          # (2)
        [(g.token, f"grant to {g.owner} at revision {g.revision}") for g in grants], "lock grants")
    findings += check_beliefs({g.token: g.owner for g in grants},
                              [e for w in run.workers.values() for e in w.events("granted")],
                              lock_records, "lock", complete)
    findings += check_no_interleaving(records)                                       # (4), (6)
    findings += check_strictly_increasing(                                          # (6)
        [(l.token, f"leadership of {l.member} at revision {l.revision}")
         for l in leaderships if l.token is not None], "leaderships")
    findings += check_beliefs({l.token: l.member for l in leaderships if l.token is not None},
                              [e for w in run.workers.values() for e in w.events("elected")],
                              election_records, "election", complete)
    paused = {(s.victim, s.victim_token) for s in run.steps if s.name.startswith("pause-")}
    for record in stale:                                                             # (3)
        if (record.holder, record.token) not in paused:
            findings.append(Finding("stale-write-without-pause",
                                    f"{record.describe()}: this holder was never paused, yet it "
                                    f"trusted a grant the cluster had already passed on"))
    for step in run.steps:                                                           # (3), (5), (6)
        findings += [Finding(step.name, p) for p in step.problems]
        if step.name.startswith("pause-") and step.wake.startswith("no decision"):
            findings.append(Finding(step.name, f"{step.victim} did not stop trusting token "
                                               f"{step.victim_token} after waking: {step.wake}"))
        bound = PAUSE_S if step.name.startswith("pause-") else PROGRESS_BOUND_S
        if step.name != "pause-election-leader" and not step.name.startswith("kill-election"):
            if step.progress_s is not None and step.progress_s > bound:
                findings.append(Finding("progress", f"{step.name}: next grant after "
                                                    f"{step.progress_s:.2f}s > {bound:.1f}s"))
        if step.name.startswith("kill-election") or step.name == "pause-election-leader":
            if step.failover_s is not None and step.failover_s > FAILOVER_BOUND_S:
                findings.append(Finding("failover", f"{step.name}: new leader after "
                                                    f"{step.failover_s:.2f}s > {FAILOVER_BOUND_S:.1f}s"))
    failovers = [s.failover_s for s in run.steps if s.failover_s is not None]
    print(f"  election failover times (s): {[round(f, 2) for f in failovers]} "
          f"(bound {FAILOVER_BOUND_S:.1f}s, TTL {TTL_S:.1f}s)")
    assert failovers, "no election failover measured"
    assert any(s.name == "pause-lock-holder" and s.victim for s in run.steps)
    assert not findings, f"{len(findings)} findings (artifacts in {fault_root}):\n" + \
        "\n".join(str(f) for f in findings)


def test_the_checks_catch_violations(tmp_path: Path) -> None:
    """The resource and the checks on their own (no cluster): a lower token is rejected over
    TCP, and hand-made bad histories are flagged, so the fault test above cannot pass vacuously."""
    from consensus_store.testing.fenced import ResourceClient, WriteRecord
    with FencedResourceServer(tmp_path / "resource.jsonl") as resource:
        a, b = ResourceClient(resource.address, "A"), ResourceClient(resource.address, "B")
        assert a.write(LOCK_RESOURCE, 5) == (True, 0)
        assert b.write(LOCK_RESOURCE, 7) == (True, 5)
        assert a.write(LOCK_RESOURCE, 5) == (False, 7)          # the stale holder
        assert a.write(ELECTION_RESOURCE, 1) == (True, 0)       # resources are independent
        a.close(), b.close()
        records = resource.records()
    assert [r.accepted for r in records] == [True, True, False, True]
    assert stale_writes(records) == [records[2]]
    assert not check_fencing(records) and not check_no_interleaving(records)
    assert (tmp_path / "resource.jsonl").read_text().count("\n") == 4

    def rec(token: int, holder: str, accepted: bool = True, highest: int = 0) -> WriteRecord:
        return WriteRecord(0.0, LOCK_RESOURCE, token, holder, 1, accepted, highest)
    assert [f.kind for f in check_fencing([rec(5, "A"), rec(7, "B"), rec(5, "A")])] == ["fencing"]
    assert [f.kind for f in check_fencing([rec(5, "A"), rec(7, "B", False, 5)])] == \
        ["wrong-rejection"]
    assert [f.kind for f in check_no_interleaving([rec(5, "A"), rec(7, "B"), rec(5, "A")])] == \
        ["interleaving"]
    assert [f.kind for f in check_no_interleaving([rec(5, "A"), rec(5, "B")])] == ["two-holders"]
    assert not check_no_interleaving([rec(5, "A"), rec(5, "A"), rec(7, "B"), rec(9, "A")])
    assert [f.kind for f in check_strictly_increasing([(3, "x"), (5, "y"), (5, "z")], "t")] == \
        ["token-order"]
    history = {5: "A", 7: "B"}
    beliefs = [{"id": "A", "token": 5}, {"id": "A", "token": 7}]
    assert [f.kind for f in check_beliefs(history, beliefs, [rec(7, "A")], "lock", True)] == \
        ["false-belief", "foreign-token"]
    assert not check_beliefs(history, [{"id": "C", "token": 9}], [], "lock", complete=False)


ISOLATION_S = 8.0
CONTENDER_TTL_S = 6.0


@pytest.mark.timeout(120)
def test_release_sent_to_a_leader_that_gets_isolated_does_not_block_the_lock(
        fault_root: Path) -> None:
    """A holder releases the lock through the Raft leader just as that leader is cut off from
    the other two nodes.  The majority elects a new leader within a second or two and the
    holder's session stays alive (its keepalives fail over to the majority), so a contender
    talking to the majority should get the lock within TTL + a few seconds.

    Known to fail (see the report): the isolated node neither commits the release nor answers
    it; pysyncobj keeps the command queued until it learns a leader again (its
    ``commandsWaitLeader`` default) and ``Proposer`` waits for the request's whole deadline, so
    the client never retries on the majority.  The release times out (the ``Lock`` has by then
    forgotten its key, so it cannot retry it: ``is_held`` is False while the cluster still names
    it holder) and the lock stays blocked until the partition heals.
    """
    with ProxiedCluster(fault_root / "cluster", 3, seed=11) as cluster:
        leader = cluster.start()
        others = [n for n in cluster.ids if n != leader]
        holder = cluster.client([leader] + others, timeout=5.0, session_ttl=TTL_S)
        # The contender's session must outlive the majority's election, which on a loaded
        # 2-core CI machine can take longer than TTL_S; only the holder's TTL is under test.
        contender = cluster.client(others, timeout=5.0, session_ttl=CONTENDER_TTL_S)
        release: dict[str, Any] = {}
        try:
            lock = holder.lock("handover", owner="holder")
            assert lock.acquire(10)
            contender.default_session()               # its session is up before the fault
            cluster.proxy.isolate(leader)
            isolated_at = time.monotonic()

            def do_release() -> None:
                try:
                    lock.release()
                    release["outcome"] = "released"
                except ConsensusStoreError as exc:
                    release["outcome"] = f"{type(exc).__name__}: {exc}"
                release["took_s"] = time.monotonic() - isolated_at
            releaser = threading.Thread(target=do_release, daemon=True)
            releaser.start()
            wanted = contender.lock("handover", owner="contender")
            granted = wanted.acquire(timeout=PROGRESS_BOUND_S)
            waited = time.monotonic() - isolated_at
            releaser.join(ISOLATION_S)
            state = contender.locks(consistency="linearizable", timeout=3.0)
            print(f"\nisolated raft leader {leader}; holder's release: "
                  f"{release.get('outcome', 'still pending')} after "
                  f"{release.get('took_s', float('nan')):.2f}s; holder is_held={lock.is_held}, "
                  f"session {lock.session.state.value if lock.session else '?'}; "
                  f"contender granted={granted} after {waited:.2f}s; "
                  f"lock state on the majority: {state}")
            time.sleep(max(0.0, isolated_at + ISOLATION_S - time.monotonic()))
            cluster.proxy.heal()
            if not granted:
                after_heal = wanted.acquire(timeout=10.0)
                print(f"after heal ({ISOLATION_S:.0f}s): contender granted={after_heal} "
                      f"{time.monotonic() - isolated_at:.2f}s after the isolation")
            assert granted, (
                f"the lock stayed blocked for {waited:.1f}s (> TTL {TTL_S:g}s + a few seconds) "
                f"while only the old Raft leader was cut off; the holder's release: "
                f"{release.get('outcome', 'still pending')}; majority's lock state: {state}")
        finally:
            cluster.proxy.heal()
            for client in (holder, contender):
                try:
                    client.close()
                except ConsensusStoreError:
                    pass
