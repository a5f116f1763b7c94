"""Lock and election checks under faults: the checks run on what the fenced resource, the
workers and the observer recorded, and the merged timeline of it all.

- Checks: fencing, no interleaving of grants at the resource, strictly increasing tokens,
  workers' beliefs matching the cluster's history, stale writes, progress after faults
  (``first_after``, ``max_gap``); ``write_timeline`` writes one time-ordered text file.
- The parts they judge live in their own modules: ``fenced`` (``FencedResourceServer``,
  ``ResourceClient``, ``WriteRecord``), ``coordination_workers`` (the ``lock`` / ``candidate``
  worker processes, ``WorkerProcess``, ``EventLog``) and ``coordination_observer``
  (``CoordinationObserver``, ``Grant``, ``Leadership``).

``python -m consensus_store.testing.coordination_checks ROLE ...`` still runs a worker (it is
``coordination_workers``' entry point).

Times are ``time.monotonic()`` everywhere: CLOCK_MONOTONIC is system-wide, so the times of the
workers, the resource and the test compare directly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from consensus_store.testing.coordination_observer import Grant, Leadership
from consensus_store.testing.coordination_workers import main
from consensus_store.testing.fenced import WriteRecord


@dataclass
class Finding:
    kind: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


def check_fencing(records: list[WriteRecord]) -> list[Finding]:
    """(1) per resource, no accepted token is lower than one accepted before it; and every
    rejection was deserved (its token was lower than the highest accepted so far)."""
    findings = []
    highest: dict[str, tuple[int, WriteRecord | None]] = {}
    for record in records:
        best, best_record = highest.get(record.resource, (0, None))
        if record.accepted and record.token < best:
            findings.append(Finding("fencing", f"{record.describe()} after accepting "
                                               f"{best_record.describe() if best_record else best}"))
        if not record.accepted and record.token >= best:
            findings.append(Finding("wrong-rejection", record.describe()))
        if record.accepted and record.token >= best:
            highest[record.resource] = (record.token, record)
    return findings


def check_no_interleaving(records: list[WriteRecord]) -> list[Finding]:
    """(4) per resource, the accepted writes form runs, one per grant (token): once another
    grant's write was accepted, no write of an earlier grant is accepted again (no A, B, A), and
    one token never has two holders."""
    findings = []
    by_resource: dict[str, list[WriteRecord]] = {}
    for record in records:
        if record.accepted:
            by_resource.setdefault(record.resource, []).append(record)
    for resource, accepted in by_resource.items():
        holder_of: dict[int, WriteRecord] = {}
        finished: dict[int, WriteRecord] = {}     # token -> the write that ended its run
        current: WriteRecord | None = None
        for record in accepted:
            first = holder_of.setdefault(record.token, record)
            if first.holder != record.holder or first.pid != record.pid:
                findings.append(Finding("two-holders", f"{resource}: token {record.token} used by "
                                                       f"{first.describe()} and {record.describe()}"))
            if record.token in finished:
                findings.append(Finding("interleaving", f"{resource}: {record.describe()} after "
                                                        f"{finished[record.token].describe()}"))
            if current is not None and current.token != record.token:
                finished.setdefault(current.token, record)
            current = record
    return findings


def check_strictly_increasing(tokens: list[tuple[int, str]], what: str) -> list[Finding]:
    """(2)/(6) successive tokens (with a description each) strictly increase."""
    findings = []
    for (a, a_text), (b, b_text) in zip(tokens, tokens[1:]):
        if b <= a:
            findings.append(Finding("token-order", f"{what}: {b_text} (token {b}) came after "
                                                   f"{a_text} (token {a})"))
    return findings


def check_beliefs(cluster_history: dict[int, str | None], beliefs: list[dict[str, Any]],
                  records: list[WriteRecord], what: str, complete: bool) -> list[Finding]:
    """Every grant (or leadership) a worker reported, and every token written to the resource,
    is one the cluster gave to that worker (``cluster_history``: token -> owner).  Without a
    complete history (observer gaps), a token missing from it is not an anomaly."""
    findings = []
    for belief in beliefs:
        owner = cluster_history.get(belief["token"], "?missing")
        if owner == "?missing" and not complete:
            continue
        if owner != belief["id"]:
            findings.append(Finding("false-belief", f"{what}: {belief['id']} believed it got token "
                                                    f"{belief['token']} but the cluster gave it to "
                                                    f"{owner}"))
    seen: set[tuple[int, str]] = set()
    for record in records:
        if (record.token, record.holder) in seen:
            continue
        seen.add((record.token, record.holder))
        owner = cluster_history.get(record.token, "?missing")
        if owner == "?missing" and not complete:
            continue
        if owner != record.holder:
            findings.append(Finding("foreign-token", f"{what}: {record.describe()}, but the cluster "
                                                     f"gave token {record.token} to {owner}"))
    return findings


def stale_writes(records: list[WriteRecord]) -> list[WriteRecord]:
    """(3) the writes the resource rejected (a token lower than one already accepted)."""
    return [r for r in records if not r.accepted]


def first_after(items: list[Any], t: float, *, min_revision: int = 0,
                accept: Callable[[Any], bool] = lambda item: True) -> Any:
    """The first grant / leadership observed after ``t`` with a revision above
    ``min_revision`` that ``accept`` likes (None if none)."""
    for item in items:
        if item.t >= t and item.revision > min_revision and accept(item):
            return item
    return None


def max_gap(times: list[float], start: float, end: float) -> float:
    """Longest time without an event in [start, end]."""
    points = [start] + sorted(t for t in times if start < t < end) + [end]
    return max(b - a for a, b in zip(points, points[1:]))


def write_timeline(path: Path, t0: float, *, grants: list[Grant], leaderships: list[Leadership],
                   records: list[WriteRecord], worker_events: Iterable[dict[str, Any]],
                   notes: Iterable[tuple[float, str]] = ()) -> None:
    """One merged, time-ordered text file of what everyone saw (times relative to ``t0``):
    grants and leaderships as the observer learnt them, worker events, the resource's accepted
    writes as one line per run of a token, every rejected write, and ``notes`` (faults)."""
    lines: list[tuple[float, str]] = [(t, f"FAULT {text}") for t, text in notes]
    lines += [(g.t, f"cluster: lock granted to {g.owner} token {g.token} (rev {g.revision})")
              for g in grants]
    lines += [(l.t, f"cluster: election leader {l.member} token {l.token} (rev {l.revision})")
              for l in leaderships]
    lines += [(e["t"], f"{e['id']}: {e['event']} " + json.dumps(
        {k: v for k, v in e.items() if k not in ("t", "id", "event", "pid")}))
        for e in worker_events]
    run: dict[str, list[WriteRecord]] = {}
    for record in records:
        if not record.accepted:
            lines.append((record.t, f"resource {record.describe()}"))
            continue
        current = run.get(record.resource)
        if current and current[0].token == record.token:
            current[1] = record
            continue
        if current:
            lines.append((current[1].t, f"resource {current[1].resource}: last write of token "
                                        f"{current[1].token} by {current[1].holder}"))
        run[record.resource] = [record, record]
        lines.append((record.t, f"resource {record.resource}: first write of token "
                                f"{record.token} by {record.holder}"))
    for first, last in run.values():
        lines.append((last.t, f"resource {last.resource}: last write of token {last.token} "
                              f"by {last.holder}"))
    lines.sort(key=lambda line: line[0])
    path.write_text("".join(f"{t - t0:8.3f} {text}\n" for t, text in lines))


if __name__ == "__main__":
    main()
