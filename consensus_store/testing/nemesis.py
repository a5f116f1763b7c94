"""The fault schedule and one whole run: the fault catalogue (``FAULTS``, ``SHORT_SCHEDULES``),
``Nemesis`` (inject, hold, heal, wait for recovery), ``run_nemesis`` and its ``RunReport``.
"""
from __future__ import annotations

import collections
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from consensus_store.testing.checks import Anomaly, check_safety
from consensus_store.testing.cluster import ProxiedCluster
from consensus_store.testing.polling import poll_until
from consensus_store.testing.workload import Workload


@dataclass
class FaultRecord:
    name: str
    detail: str = ""
    at_s: float = 0.0                 # since the run started
    hold_s: float = 0.0
    recovery_s: float | None = None   # heal -> a leader and new acknowledged writes
    error: str | None = None

    def describe(self) -> str:
        recovery = "not recovered" if self.recovery_s is None else f"recovered in {self.recovery_s:.1f}s"
        return (f"t={self.at_s:6.1f}s {self.name:<26} {self.detail} (held {self.hold_s:.1f}s, "
                f"{recovery}){' ERROR ' + self.error if self.error else ''}")


FAULTS = ("kill-leader", "kill-node", "kill-minority", "pause-leader", "pause-node",
          "isolate-leader", "partition", "partition-leader-minority", "bridge", "kill-all",
          "latency", "isolate-leader-and-kill")
FAULT_WEIGHTS = {"kill-leader": 3, "kill-node": 2, "kill-minority": 1, "pause-leader": 2,
                 "pause-node": 1, "isolate-leader": 3, "partition": 2,
                 "partition-leader-minority": 2, "bridge": 2, "kill-all": 1, "latency": 1,
                 "isolate-leader-and-kill": 1}


class Nemesis:
    """Injects one fault at a time, holds it, heals it and waits until the cluster serves
    writes again.  Node crashes it did not cause are anomalies (the node is restarted)."""

    def __init__(self, cluster: ProxiedCluster, workload: Workload, rng: random.Random,
                 log: Callable[[str], None], recovery_timeout: float = 30.0) -> None:
        self.cluster = cluster
        self.workload = workload
        self.rng = rng
        self.log = log
        self.recovery_timeout = recovery_timeout
        self.killed: set[str] = set()
        self.records: list[FaultRecord] = []
        self.anomalies: list[Anomaly] = []
        self.started = time.monotonic()

    # ---- helpers ---------------------------------------------------------------------------------
    def _leader(self) -> str:
        return self.cluster.leader() or self.rng.choice(self.cluster.ids)

    def _kill(self, node_id: str) -> None:
        self.killed.add(node_id)
        self.cluster.kill(node_id)

    def _restart_killed(self) -> None:
        for node_id in sorted(self.killed):
            self.cluster.restart(node_id)
        self.killed.clear()

    def check_crashes(self) -> None:
        """Nodes that died without being killed: an anomaly (restarted so the run goes on)."""
        for node_id, node in self.cluster.nodes.items():
            if node_id in self.killed or node.process is None or node.alive:
                continue
            tail = _log_tail(node.log_path)
            self.anomalies.append(Anomaly("crash", f"{node_id} exited with "
                                                   f"{node.process.returncode}:\n{tail}"))
            self.log(f"!! {node_id} crashed (exit {node.process.returncode}); restarting")
            node.start()

    def heal_all(self) -> None:
        self.cluster.proxy.heal()
        self.cluster.proxy.set_latency(0.0)
        self.cluster.resume_all()
        self._restart_killed()

    # ---- one fault -------------------------------------------------------------------------------
    def run(self, name: str, hold_s: float) -> FaultRecord:
        record = FaultRecord(name, at_s=time.monotonic() - self.started, hold_s=hold_s)
        self.check_crashes()
        try:
            record.detail = self._inject(name)
            self.log(f"fault {name}: {record.detail}; holding {hold_s:.1f}s")
            time.sleep(hold_s)               # the schedule itself, not a synchronisation
            record.detail += f"; leader at the end: {self.cluster.leader(timeout=0.5) or 'none'}"
            self.check_crashes()
        except Exception as exc:  # noqa: BLE001 - harness problem: report, heal, go on
            record.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.heal_all()
        healed = time.monotonic()
        if self.wait_recovered():
            record.recovery_s = time.monotonic() - healed
        else:
            self.anomalies.append(Anomaly(
                "unavailable", f"no leader with new acknowledged writes {self.recovery_timeout:g}s "
                               f"after healing {name} ({record.detail}): {self.cluster.describe()}"))
        self.check_crashes()
        self.records.append(record)
        self.log(f"   {record.describe()}")
        return record

    def wait_recovered(self) -> bool:
        deadline = time.monotonic() + self.recovery_timeout
        if poll_until(self.cluster.leader, self.recovery_timeout, 0.1) is None:
            return False
        return self.workload.wait_for_progress(3, max(1.0, deadline - time.monotonic()))

    def _inject(self, name: str) -> str:
        cluster, proxy, rng = self.cluster, self.cluster.proxy, self.rng
        ids = cluster.ids
        n = len(ids)
        minority_max = (n - 1) // 2
        if name == "kill-leader":
            leader = self._leader()
            self._kill(leader)
            return f"kill -9 leader {leader}"
        if name == "kill-node":
            victim = rng.choice(ids)
            self._kill(victim)
            return f"kill -9 {victim}"
        if name == "kill-minority":
            leader = self._leader()
            others = [i for i in ids if i != leader]
            victims = [leader] + rng.sample(others, minority_max - 1)
            for victim in victims:
                self._kill(victim)
            return f"kill -9 {','.join(victims)} (leader {leader})"
        if name == "kill-all":
            for victim in ids:
                self._kill(victim)
            return "kill -9 every node"
        if name == "pause-leader":
            leader = self._leader()
            cluster.pause(leader)
            return f"SIGSTOP leader {leader}"
        if name == "pause-node":
            victim = rng.choice(ids)
            cluster.pause(victim)
            return f"SIGSTOP {victim}"
        if name == "isolate-leader":
            leader = self._leader()
            proxy.isolate(leader)
            return f"isolate leader {leader}"
        if name == "isolate-leader-and-kill":
            leader = self._leader()
            proxy.isolate(leader)
            if n >= 5:
                victim = rng.choice([i for i in ids if i != leader])
                self._kill(victim)
                return f"isolate leader {leader}, kill -9 {victim}"
            return f"isolate leader {leader}"
        if name in ("partition", "partition-leader-minority"):
            leader = self._leader()
            size = rng.randint(1, minority_max)
            others = [i for i in ids if i != leader]
            if name == "partition-leader-minority" or rng.random() < 0.5:
                minority = [leader] + rng.sample(others, size - 1)
            else:
                minority = rng.sample(others, size)
            majority = [i for i in ids if i not in minority]
            proxy.partition([minority, majority])
            return f"partition {sorted(minority)} | {sorted(majority)} (leader {leader})"
        if name == "bridge":
            leader = self._leader()
            shuffled = ids[:]
            rng.shuffle(shuffled)
            if rng.random() < 0.5:      # the leader is the bridge ...
                middle = leader
            else:                       # ... or on one side
                middle = rng.choice([i for i in ids if i != leader])
            rest = [i for i in shuffled if i != middle]
            left, right = rest[:len(rest) // 2], rest[len(rest) // 2:]
            proxy.bridge(left, middle, right)
            return f"bridge {sorted(left)} - {middle} - {sorted(right)} (leader {leader})"
        if name == "latency":
            delay = rng.uniform(0.02, 0.2)
            proxy.set_latency(delay, jitter=delay / 2)
            return f"latency {delay * 1000:.0f}ms (+jitter) on every link"
        raise ValueError(f"unknown fault {name!r}")


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


SHORT_SCHEDULES: dict[int, list[tuple[str, float]]] = {
    3: [("kill-leader", 2.0), ("pause-leader", 2.5), ("isolate-leader", 3.0),
        ("partition", 2.5), ("kill-node", 2.0), ("bridge", 3.0), ("latency", 2.0),
        ("partition-leader-minority", 3.0), ("pause-node", 2.0), ("kill-all", 1.0)],
    5: [("kill-leader", 2.0), ("partition-leader-minority", 3.0), ("bridge", 3.0),
        ("pause-leader", 2.5), ("isolate-leader-and-kill", 3.0), ("kill-minority", 2.0),
        ("partition", 3.0), ("latency", 2.0), ("bridge", 3.0), ("kill-all", 1.0)],
}


@dataclass
class RunReport:
    nodes: int
    seed: int
    wall_s: float = 0.0
    ops: dict[str, int] = field(default_factory=dict)
    faults: list[FaultRecord] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    hazards: list[str] = field(default_factory=list)     # logged risks, no violation seen
    warnings: list[str] = field(default_factory=list)
    artifacts: Path | None = None
    check_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.anomalies and not self.undecided

    def format(self) -> str:
        ops = self.ops
        acked = sum(v for k, v in ops.items() if k.endswith(":ok") and not k.startswith("read"))
        lines = [f"nodes={self.nodes} seed={self.seed} wall={self.wall_s:.1f}s "
                 f"(checks {self.check_s:.1f}s)",
                 f"operations: {ops.get('total', 0)} ({acked} acknowledged writes)",
                 "  " + " ".join(f"{k}={v}" for k, v in ops.items() if k != "total"),
                 f"faults injected: {len(self.faults)}"]
        lines += [f"  {f.describe()}" for f in self.faults]
        lines.append(f"anomalies: {len(self.anomalies)}")
        by_kind: dict[str, list[Anomaly]] = collections.defaultdict(list)
        for anomaly in self.anomalies:
            by_kind[anomaly.kind].append(anomaly)
        for kind, found in by_kind.items():
            lines.append(f"  {kind}: {len(found)}")
            lines += ["    " + str(a).replace("\n", "\n      ") for a in found[:5]]
            if len(found) > 5:
                lines.append(f"    ... {len(found) - 5} more {kind}")
        if self.undecided:
            lines += ["undecided:"] + [f"  {u}" for u in self.undecided]
        if self.hazards:
            lines.append(f"hazards (logged by the nodes; no violation observed): {len(self.hazards)}")
            lines += [f"  {h}" for h in self.hazards[:10]]
        if self.warnings:
            lines.append(f"warnings: {len(self.warnings)}")
            lines += [f"  {w}" for w in self.warnings[:15]]
        if self.artifacts:
            lines.append(f"artifacts (history, operations, faults, node logs): {self.artifacts}")
        return "\n".join(lines)


def run_nemesis(root: Path, *, nodes: int = 3, seed: int = 0,
                schedule: list[tuple[str, float]] | None = None,
                duration_s: float | None = None, workers: int | None = None,
                keys: Iterable[str] = ("k0", "k1", "k2"), op_timeout: float = 5.0,
                hold_range: tuple[float, float] = (1.0, 4.0), gap_range: tuple[float, float] = (0.5, 2.0),
                faults: Iterable[str] = FAULTS, lincheck_timeout_s: float = 300.0,
                raft_table: dict[str, float] | None = None,
                log: Callable[[str], None] = lambda line: None) -> RunReport:
    """Start a proxied cluster, run the workload under faults, heal, check everything.

    ``schedule``: (fault, hold seconds) pairs, run in order.  ``duration_s``: then keep
    injecting random faults (seeded) for that many more seconds.
    Artifacts (history.jsonl for tools/lincheck.py, operations.jsonl, faults.txt, report.txt,
    node logs) stay in ``root``.  ``raft_table``: ``[raft]`` settings of every node.
    """
    root = Path(root)
    rng = random.Random(seed)
    report = RunReport(nodes, seed)
    started = time.monotonic()
    cluster = ProxiedCluster(root / "cluster", nodes, seed=seed, raft_table=raft_table)
    workload: Workload | None = None
    nemesis: Nemesis | None = None
    try:
        leader = cluster.start()
        log(f"cluster of {nodes} up in {time.monotonic() - started:.1f}s, leader {leader}; "
            f"{cluster.describe()}")
        workload = Workload(cluster.endpoints, cluster.token, workers=workers or nodes + 1,
                            keys=keys, seed=seed, op_timeout=op_timeout,
                            native_endpoints=cluster.native_endpoints)
        workload.start()
        if not workload.wait_for_progress(10, 30.0):
            report.anomalies.append(Anomaly("unavailable", "no progress before any fault"))
        nemesis = Nemesis(cluster, workload, rng, log)
        steps = list(schedule or [])
        weighted = [f for f in faults for _ in range(FAULT_WEIGHTS.get(f, 1))]
        random_since: float | None = None
        for step in range(100_000):                     # bounded
            if steps:
                name, hold = steps.pop(0)
            else:
                random_since = random_since or time.monotonic()
                if duration_s is None or time.monotonic() - random_since >= duration_s:
                    break
                name, hold = rng.choice(weighted), rng.uniform(*hold_range)
            nemesis.run(name, hold)
            time.sleep(rng.uniform(*gap_range))         # normal operation between faults
        nemesis.heal_all()
        if not workload.wait_for_progress(5, 30.0):
            report.anomalies.append(Anomaly("unavailable", "no progress after the final heal"))
        if not workload.stop():
            report.warnings.append("some workers did not stop in time")
        check_started = time.monotonic()
        nemesis.check_crashes()
        report.anomalies += nemesis.anomalies
        report.faults = nemesis.records
        report.ops = workload.summary()
        safety = check_safety(cluster, workload, lincheck_timeout_s)
        report.anomalies += safety.anomalies
        report.undecided += safety.undecided
        report.hazards += safety.hazards
        report.warnings += safety.warnings
        report.check_s = time.monotonic() - check_started
    except BaseException as exc:
        report.anomalies.append(Anomaly("harness", f"run aborted: {type(exc).__name__}: {exc}"))
        raise
    finally:
        if workload is not None:
            workload.stop(timeout=op_timeout + 15)
            if nemesis is not None:
                report.faults = nemesis.records
            report.ops = workload.summary()
        cluster.close()
        report.wall_s = time.monotonic() - started
        report.artifacts = _save_artifacts(root, report, workload)
    return report


def _save_artifacts(root: Path, report: RunReport, workload: Workload | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if workload is not None:
        workload.dump(root)
    (root / "faults.txt").write_text("".join(f.describe() + "\n" for f in report.faults))
    report.artifacts = root
    (root / "report.txt").write_text(report.format() + "\n")
    return root
