"""Lock and election checks under faults: a fenced resource, worker processes, an observer of the
cluster's own lock and election history, and the checks run on what they recorded.

- ``FencedResourceServer``: what a lock (or a leadership) protects, as a tiny TCP server on
  127.0.0.1 (one JSON line per request and per answer).  Per resource it rejects any write whose
  token is lower than the highest token it has accepted, and it records every write, accepted or
  rejected, with (time, resource, token, holder, pid).
- The worker (``python -m consensus_store.testing.coordination_checks ROLE ...``), a separate OS
  process so tests can SIGSTOP it and kill it with -9.  ``lock``: take the lock in a loop; while it
  believes it holds it (granted, session CONNECTED) it writes to the ``lock`` resource with its
  token, then releases.  ``candidate``: campaign; while it believes it leads it writes to the
  ``election`` resource with its leadership token, resigning after a while.  Events go to a JSON
  lines file (flushed per line, so they survive kill -9).  ``WorkerProcess`` starts one and
  signals it, only by its own PID.
- ``CoordinationObserver``: a thread that watches ``_cs/`` and rebuilds, in Raft log order, the
  sequence of lock grants (the head of the FIFO queue) and of leaderships (the leader key).
- Checks: fencing, no interleaving of grants at the resource, strictly increasing tokens,
  workers' beliefs matching the cluster's history, stale writes, progress after faults.

Times are ``time.monotonic()`` everywhere: CLOCK_MONOTONIC is system-wide, so the times of the
workers, the resource and the test compare directly.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

HOST = "127.0.0.1"
LOCK_RESOURCE = "lock"
ELECTION_RESOURCE = "election"
RESERVED_PREFIX = "_cs/"
MAX_EVENTS_PER_WATCH = 1000            # the node's cap on one watch answer (node/watch.py)
REPO = Path(__file__).resolve().parents[2]


# ==== the fenced resource ====================================================================

@dataclass
class WriteRecord:
    t: float                 # monotonic time the resource decided
    resource: str
    token: int
    holder: str
    pid: int
    accepted: bool
    highest: int             # highest token accepted before this write

    def describe(self) -> str:
        verdict = "accepted" if self.accepted else f"REJECTED (highest {self.highest})"
        return f"t={self.t:.3f} {self.resource}: {self.holder} (pid {self.pid}) token {self.token} {verdict}"


class FencedResourceServer:
    """Per resource: rejects a token lower than the highest one accepted; logs every write.

    A context manager; ``address`` is ``127.0.0.1:PORT``.  Each connection has its own thread;
    decisions are serialised by one lock, so the record order is the decision order.
    """

    def __init__(self, log_path: Path | None = None) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.address = f"{HOST}:{self._sock.getsockname()[1]}"
        self._lock = threading.Lock()
        self._highest: dict[str, int] = {}
        self._records: list[WriteRecord] = []
        self._log = open(log_path, "a") if log_path is not None else None
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, name="fenced-resource",
                                        daemon=True)
        self._thread.start()

    def write(self, resource: str, token: int, holder: str, pid: int = 0) -> tuple[bool, int]:
        """Decide one write (also callable in-process); returns (accepted, highest before)."""
        with self._lock:
            highest = self._highest.get(resource, 0)
            accepted = token >= highest
            if accepted:
                self._highest[resource] = token
            record = WriteRecord(time.monotonic(), resource, token, holder, pid, accepted, highest)
            self._records.append(record)
            if self._log is not None:
                self._log.write(json.dumps(asdict(record)) + "\n")
        return accepted, highest

    def records(self, resource: str | None = None) -> list[WriteRecord]:
        with self._lock:
            return [r for r in self._records if resource is None or r.resource == resource]

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rwb") as stream:
                for line in stream:
                    if self._stop.is_set():
                        return
                    request = json.loads(line)
                    accepted, highest = self.write(str(request["resource"]), int(request["token"]),
                                                   str(request["holder"]), int(request.get("pid", 0)))
                    stream.write(json.dumps({"accepted": accepted, "highest": highest}).encode()
                                 + b"\n")
                    stream.flush()
        except (OSError, ValueError, KeyError):
            return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(2)
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> "FencedResourceServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResourceClient:
    """A worker's connection to the fenced resource (reconnects after an error)."""

    def __init__(self, address: str, holder: str, timeout: float = 5.0) -> None:
        host, _, port = address.rpartition(":")
        self._address = (host, int(port))
        self.holder = holder
        self._timeout = timeout
        self._stream: Any = None
        self._sock: socket.socket | None = None

    def write(self, resource: str, token: int) -> tuple[bool, int]:
        """(accepted, highest before); raises OSError when the resource cannot be reached."""
        try:
            if self._stream is None:
                self._sock = socket.create_connection(self._address, self._timeout)
                self._stream = self._sock.makefile("rwb")
            request = {"resource": resource, "token": token, "holder": self.holder,
                       "pid": os.getpid()}
            self._stream.write(json.dumps(request).encode() + b"\n")
            self._stream.flush()
            line = self._stream.readline()
            if not line:
                raise ConnectionError("resource closed the connection")
            answer = json.loads(line)
            return bool(answer["accepted"]), int(answer["highest"])
        except (OSError, ValueError):
            self.close()
            raise OSError("fenced resource unreachable") from None

    def close(self) -> None:
        for thing in (self._stream, self._sock):
            try:
                if thing is not None:
                    thing.close()
            except OSError:
                pass
        self._stream = self._sock = None


# ==== the worker process =====================================================================

class EventLog:
    def __init__(self, path: Path, ident: str) -> None:
        self._file = open(path, "a", buffering=1)
        self.ident = ident
        self._lock = threading.Lock()

    def say(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": time.monotonic(), "event": event, "id": self.ident,
                           "pid": os.getpid(), **fields})
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def _lock_worker(args: argparse.Namespace, client: Any, log: EventLog,
                 resource: ResourceClient) -> None:
    from consensus_store.errors import ConsensusStoreError
    lock = client.lock(args.name, ttl=args.ttl, owner=args.id)   # one session, reused
    end = time.monotonic() + args.max_s
    while time.monotonic() < end:
        try:
            granted = lock.acquire(timeout=args.acquire_timeout)
        except ConsensusStoreError as exc:
            log.say("acquire-error", error=f"{type(exc).__name__}: {exc}")
            time.sleep(0.2)
            continue
        if not granted:
            log.say("acquire-timeout")
            continue
        token, session = lock.token, lock.session
        assert token is not None and session is not None
        log.say("granted", token=token, session=session.id)
        # A number of writes rather than a deadline: a process paused in the middle of its
        # critical section goes on with it when it wakes up (the GC-pause case).
        outcome, writes = "held", 0
        while writes < _writes_per_hold(args):
            if not lock.is_held:     # the session is SUSPENDED or LOST: stop trusting the lock
                outcome = "not-connected"
                log.say("not-connected", token=token, state=session.state.value)
                break
            try:
                accepted, highest = resource.write(LOCK_RESOURCE, token)
            except OSError as exc:
                log.say("resource-error", token=token, error=str(exc))
                time.sleep(0.1)
                continue
            writes += 1
            if not accepted:
                outcome = "fenced"
                log.say("fenced", token=token, highest=highest, state=session.state.value)
                break
            time.sleep(args.write_interval)
        try:
            lock.release()
        except ConsensusStoreError as exc:
            log.say("release-error", token=token, error=f"{type(exc).__name__}: {exc}")
        log.say("released", token=token, outcome=outcome, writes=writes)
        time.sleep(args.gap)


def _candidate_worker(args: argparse.Namespace, client: Any, log: EventLog,
                      resource: ResourceClient) -> None:
    from consensus_store.errors import ConsensusStoreError, Timeout
    end = time.monotonic() + args.max_s
    while time.monotonic() < end:
        election = client.election(args.name)
        try:
            leader = election.campaign(args.id, timeout=args.acquire_timeout)
        except Timeout:
            log.say("campaign-timeout")
            continue
        except ConsensusStoreError as exc:
            log.say("campaign-error", error=f"{type(exc).__name__}: {exc}")
            time.sleep(0.2)
            continue
        assert leader is not None and election.session is not None
        token, session = leader.token, election.session
        log.say("elected", token=token, session=session.id)
        confirm_at = time.monotonic() + 0.5
        outcome, writes = "resigned", 0
        while writes < _writes_per_hold(args):      # as for locks: a count, not a deadline
            if not session.alive:
                outcome = "not-connected"
                log.say("not-connected", token=token, state=session.state.value)
                break
            try:
                accepted, highest = resource.write(ELECTION_RESOURCE, token)
            except OSError as exc:
                log.say("resource-error", token=token, error=str(exc))
                time.sleep(0.1)
                continue
            writes += 1
            if not accepted:
                outcome = "fenced"
                log.say("fenced", token=token, highest=highest, state=session.state.value)
                break
            if time.monotonic() >= confirm_at:      # now and then: am I still the leader?
                try:
                    current = election.leader()
                except ConsensusStoreError:
                    current = leader     # cannot tell: the session state decides
                if current is None or current.token != token:
                    outcome = "deposed"
                    log.say("deposed", token=token, state=session.state.value,
                            now=None if current is None else [current.member, current.token])
                    break
                confirm_at = time.monotonic() + 0.5
            time.sleep(args.write_interval)
        try:
            election.resign()
        except ConsensusStoreError as exc:
            log.say("resign-error", token=token, error=f"{type(exc).__name__}: {exc}")
        log.say("stepped-down", token=token, outcome=outcome, writes=writes)
        time.sleep(args.gap)


def writes_per_hold(hold: float, write_interval: float = 0.05) -> int:
    """How many writes a worker makes per grant / leadership (``--hold``, ``--write-interval``)."""
    return max(1, round(hold / max(write_interval, 0.001)))


def _writes_per_hold(args: argparse.Namespace) -> int:
    return writes_per_hold(args.hold, args.write_interval)


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m consensus_store.testing.coordination_checks")
    parser.add_argument("role", choices=("lock", "candidate"))
    parser.add_argument("--endpoints", required=True, help="comma-separated node API endpoints")
    parser.add_argument("--token", required=True)
    parser.add_argument("--name", required=True, help="lock or election name")
    parser.add_argument("--id", required=True, help="owner / member id of this process")
    parser.add_argument("--resource", required=True, help="HOST:PORT of the fenced resource")
    parser.add_argument("--events", required=True, type=Path, help="JSON lines file to append to")
    parser.add_argument("--ttl", type=float, default=2.0, help="session TTL (s)")
    parser.add_argument("--hold", type=float, default=1.2, help="hold the lock / lead for about this long "
                        "(as a number of writes: hold / write-interval)")
    parser.add_argument("--gap", type=float, default=0.2, help="pause before trying again")
    parser.add_argument("--write-interval", type=float, default=0.05)
    parser.add_argument("--acquire-timeout", type=float, default=8.0)
    parser.add_argument("--op-timeout", type=float, default=5.0)
    parser.add_argument("--max-s", type=float, default=600.0, help="exit after this long anyway")
    args = parser.parse_args(argv)
    from consensus_store.client import Client
    client = Client(args.endpoints.split(","), token=args.token, timeout=args.op_timeout,
                    session_ttl=args.ttl)
    log = EventLog(args.events, args.id)
    resource = ResourceClient(args.resource, args.id)
    log.say("started", role=args.role)
    (_lock_worker if args.role == "lock" else _candidate_worker)(args, client, log, resource)
    log.say("exiting")
    return 0


class WorkerProcess:
    """One worker process started by a test; signalled only by its own PID."""

    def __init__(self, role: str, ident: str, *, endpoints: Iterable[str], token: str, name: str,
                 resource: str, events_dir: Path, ttl: float, extra: Iterable[str] = (),
                 log_dir: Path | None = None) -> None:
        self.role, self.ident = role, ident
        self.events_path = Path(events_dir) / f"{ident}.jsonl"
        self.events_path.parent.mkdir(parents=True, exist_ok=True)
        stderr_path = (Path(log_dir or events_dir) / f"{ident}.stderr")
        self._stderr = open(stderr_path, "ab")
        command = [sys.executable, "-m", "consensus_store.testing.coordination_checks", role,
                   "--endpoints", ",".join(endpoints), "--token", token, "--name", name,
                   "--id", ident, "--resource", resource, "--events", str(self.events_path),
                   "--ttl", str(ttl), *extra]
        self.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self._stderr,
                                        start_new_session=True)
        self.pid = self.process.pid
        self.paused = False
        self.killed_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.events_path.read_text().splitlines()
        except OSError:
            return []
        found = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue                # a line cut by kill -9
            if event is None or record["event"] == event:
                found.append(record)
        return found

    def _signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.pid, signum)

    def pause(self) -> float:
        self._signal(signal.SIGSTOP)
        self.paused = True
        return time.monotonic()

    def resume(self) -> float:
        """SIGCONT; returns the monotonic time just *before* it was sent (the process may run,
        and log, before this call returns)."""
        sent_at = time.monotonic()
        self._signal(signal.SIGCONT)
        self.paused = False
        return sent_at

    def kill(self) -> float:
        """kill -9; returns the monotonic time of the kill."""
        self._signal(signal.SIGKILL)
        self.process.wait()
        self.killed_at = self.killed_at or time.monotonic()
        self.paused = False
        return self.killed_at

    def stop(self) -> None:
        if self.alive:
            self._signal(signal.SIGCONT)
            self.kill()
        self._stderr.close()


# ==== the observer: the cluster's own history ==================================================

@dataclass
class Grant:
    """The lock's holder changed to this waiter (the head of the FIFO queue), at ``revision``."""
    token: int
    owner: str | None
    session: int | None
    revision: int
    t: float                 # when the observer learnt it (monotonic)


@dataclass
class Leadership:
    """The election's leader key was written (or deleted: member None) at ``revision``."""
    token: int | None
    member: str | None
    session: int | None
    revision: int
    t: float


class CoordinationObserver:
    """Watches ``_cs/`` and rebuilds, in log order, the grants of one lock and the leaderships
    of one election.  ``gaps`` lists where history was skipped (compaction: then it re-reads)."""

    def __init__(self, endpoints: Iterable[str], token: str, lock_name: str,
                 election_name: str) -> None:
        from urllib.parse import quote
        from consensus_store.client import Client
        self._client = Client(list(endpoints), token=token, timeout=5.0)
        self.lock_prefix = f"{RESERVED_PREFIX}lock/{quote(lock_name, safe='')}/"
        self.leader_key = f"{RESERVED_PREFIX}election/{quote(election_name, safe='')}/leader"
        self.grants: list[Grant] = []
        self.leaderships: list[Leadership] = []
        self.gaps: list[str] = []
        self.errors = 0
        self.rotations = 0
        self.revision = 0
        self._queue: dict[str, dict[str, Any]] = {}
        self._head: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coordination-observer",
                                        daemon=True)

    def start(self, timeout: float = 20.0) -> "CoordinationObserver":
        self._thread.start()
        if not self._synced.wait(timeout):
            raise TimeoutError("observer: no initial read")
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()

    # ---- queries (any thread) --------------------------------------------------------------------
    def current_holder(self) -> Grant | None:
        with self._lock:
            return self.grants[-1] if self.grants and self._head is not None else None

    def current_leader(self) -> Leadership | None:
        with self._lock:
            last = self.leaderships[-1] if self.leaderships else None
            return last if last is not None and last.member is not None else None

    def snapshot(self) -> tuple[list[Grant], list[Leadership], int]:
        with self._lock:
            return list(self.grants), list(self.leaderships), self.revision

    # ---- the watch loop --------------------------------------------------------------------------
    def _run(self) -> None:
        from consensus_store.errors import ConsensusStoreError
        need_read = True
        while not self._stop.is_set():
            try:
                if need_read:
                    self._read_all()
                    need_read = False
                    self._synced.set()
                answer = self._client._request("watch", {"prefix": RESERVED_PREFIX,
                                                         "after_revision": self.revision,
                                                         "wait": 0.5}, 3.0)
                self._apply(answer["events"])
                if (answer.get("header") or {}).get("leader") is None:
                    # A node cut off from the majority answers watches without error, but sees
                    # no new entries: go to another node.
                    self.rotations += 1
                    core = self._client._core
                    core.rotate_from(core.preferred)
            except ConsensusStoreError as exc:
                if exc.code == "compacted":
                    self.gaps.append(f"history after revision {self.revision} compacted")
                    need_read = True
                else:
                    self.errors += 1
                    self._stop.wait(0.1)

    def _read_all(self) -> None:
        answer = self._client._request("range", {"prefix": RESERVED_PREFIX,
                                                 "consistency": "linearizable"}, 5.0)
        now = time.monotonic()
        with self._lock:
            self._queue = {kv["key"]: kv["value"] for kv in answer["kvs"]
                           if kv["key"].startswith(self.lock_prefix)}
            if self.revision and answer["read_index"] > self.revision:
                self.gaps.append(f"re-read at {answer['read_index']} after {self.revision}")
            self.revision = max(self.revision, answer["read_index"])
            self._note_head(self.revision, now)
            leader = next((kv for kv in answer["kvs"] if kv["key"] == self.leader_key), None)
            if leader is not None:
                self._note_leader(leader["value"], leader["mod_revision"], now)

    def _apply(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        revision_of = [e["kv"]["mod_revision"] if e["type"] == "put" else e["revision"]
                       for e in events]
        if len(events) >= MAX_EVENTS_PER_WATCH:   # the last revision may be cut: take it next time
            last = revision_of[-1]
            keep = [i for i, r in enumerate(revision_of) if r != last]
            events, revision_of = [events[i] for i in keep], [revision_of[i] for i in keep]
        now = time.monotonic()
        with self._lock:
            for i, event in enumerate(events):
                revision = revision_of[i]
                if revision <= self.revision:
                    continue
                key = event["kv"]["key"] if event["type"] == "put" else event["key"]
                if key.startswith(self.lock_prefix):
                    if event["type"] == "put":
                        self._queue[key] = event["kv"]["value"]
                    else:
                        self._queue.pop(key, None)
                elif key == self.leader_key:
                    if event["type"] == "put":
                        self._note_leader(event["kv"]["value"], revision, now)
                    else:
                        self.leaderships.append(Leadership(None, None, None, revision, now))
                if i + 1 == len(events) or revision_of[i + 1] != revision:   # end of one entry
                    self._note_head(revision, now)
                    self.revision = revision

    def _note_head(self, revision: int, now: float) -> None:
        head = min(self._queue) if self._queue else None
        if head != self._head:
            self._head = head
            if head is not None:
                value = self._queue[head]
                self.grants.append(Grant(value["token"], value.get("owner"), value.get("session"),
                                         revision, now))

    def _note_leader(self, value: dict[str, Any], revision: int, now: float) -> None:
        if self.leaderships and self.leaderships[-1].token == value["token"]:
            return
        self.leaderships.append(Leadership(value["token"], value["member"], value.get("session"),
                                           revision, now))


# ==== checks ====================================================================================

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


def main() -> None:
    sys.exit(worker_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
