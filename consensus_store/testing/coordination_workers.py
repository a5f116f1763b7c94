"""The worker processes of the lock and election checks, and their event log.

The worker (``python -m consensus_store.testing.coordination_workers ROLE ...``) is a separate OS
process so tests can SIGSTOP it and kill it with -9.  ``lock``: take the lock in a loop; while it
believes it holds it (granted, session CONNECTED) it writes to the ``lock`` resource with its
token, then releases.  ``candidate``: campaign; while it believes it leads it writes to the
``election`` resource with its leadership token, resigning after a while.  Events go to a JSON
lines file (``workers.EventLog``, flushed per line, so they survive kill -9).  Tests start them
with ``workers.WorkerProcess`` (re-exported here), which signals them only by their own PID.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

from consensus_store.testing.fenced import ELECTION_RESOURCE, LOCK_RESOURCE, ResourceClient
from consensus_store.testing.workers import EventLog, WorkerProcess

__all__ = ["WorkerProcess", "main", "worker_main", "writes_per_hold"]


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
        outcome, writes = _write_while_trusted(args, log, resource, LOCK_RESOURCE, token,
                                               session, lambda: lock.is_held, "held")
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

        def deposed() -> dict[str, Any] | None:
            try:
                current = election.leader()
            except ConsensusStoreError:
                return None      # cannot tell: the session state decides
            if current is None or current.token != token:
                return {"now": None if current is None else [current.member, current.token]}
            return None

        outcome, writes = _write_while_trusted(args, log, resource, ELECTION_RESOURCE, token,
                                               session, lambda: session.alive, "resigned",
                                               deposed)
        try:
            election.resign()
        except ConsensusStoreError as exc:
            log.say("resign-error", token=token, error=f"{type(exc).__name__}: {exc}")
        log.say("stepped-down", token=token, outcome=outcome, writes=writes)
        time.sleep(args.gap)


def _write_while_trusted(args: argparse.Namespace, log: EventLog, resource: ResourceClient,
                         resource_name: str, token: int, session: Any,
                         trusted: Callable[[], bool], finished: str,
                         deposed: Callable[[], dict[str, Any] | None] | None = None
                         ) -> tuple[str, int]:
    """Write to the fenced resource while the grant is trusted; returns (outcome, writes).

    A number of writes rather than a deadline: a process paused in the middle of its critical
    section goes on with it when it wakes up (the GC-pause case).  ``deposed``, checked every
    0.5 s, asks the cluster whether the grant still stands (elections).
    """
    confirm_at = time.monotonic() + 0.5
    writes = 0
    while writes < _writes_per_hold(args):
        if not trusted():     # the session is SUSPENDED or LOST: stop trusting the grant
            log.say("not-connected", token=token, state=session.state.value)
            return "not-connected", writes
        try:
            accepted, highest = resource.write(resource_name, token)
        except OSError as exc:
            log.say("resource-error", token=token, error=str(exc))
            time.sleep(0.1)
            continue
        writes += 1
        if not accepted:
            log.say("fenced", token=token, highest=highest, state=session.state.value)
            return "fenced", writes
        if deposed is not None and time.monotonic() >= confirm_at:
            news = deposed()
            if news is not None:
                log.say("deposed", token=token, state=session.state.value, **news)
                return "deposed", writes
            confirm_at = time.monotonic() + 0.5
        time.sleep(args.write_interval)
    return finished, writes


def writes_per_hold(hold: float, write_interval: float = 0.05) -> int:
    """How many writes a worker makes per grant / leadership (``--hold``, ``--write-interval``)."""
    return max(1, round(hold / max(write_interval, 0.001)))


def _writes_per_hold(args: argparse.Namespace) -> int:
    return writes_per_hold(args.hold, args.write_interval)


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m consensus_store.testing.coordination_workers")
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


def main() -> None:
    sys.exit(worker_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
