"""A separate process that uses the coordination API and appends what it sees to a JSON-lines
events file (``consensus_store.testing.workers.EventLog``; started by ``WorkerProcess``).

    python -m tests.coordination.worker ROLE --endpoints E --token T --name NAME --id ID \
        --events FILE

ROLE: ``join`` (create+join group NAME), ``register`` (register NAME), ``lock`` (take lock NAME
in a loop, reporting each grant's token), ``campaign`` (campaign in election NAME as ID and
report leadership), ``replica`` (offer a replica under NAME as ID).  Killed with -9 by tests.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from consensus_store.client import Client
from consensus_store.errors import ConsensusStoreError
from consensus_store.testing.workers import EventLog

TTL_S = 1.5


class Worker:
    """Replica callbacks (they run on the client's threads; EventLog writes whole lines)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def on_active(self) -> None:
        self.log.say("active")

    def on_passive(self) -> None:
        self.log.say("passive")

    def on_standby(self) -> None:
        self.log.say("standby")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.coordination.worker")
    parser.add_argument("role", choices=("join", "register", "lock", "campaign", "replica"))
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--id", default="w")
    parser.add_argument("--events", required=True, type=Path)
    args = parser.parse_args(argv)
    name, ident = args.name, args.id
    log = EventLog(args.events, ident)
    client = Client(args.endpoints.split(","), token=args.token, session_ttl=TTL_S, timeout=5.0)
    if args.role == "join":
        client.groups.create(name)
        member = client.groups.join(name, member=ident, meta={"pid": ident})
        log.say("joined", member=member.id, session=member.session)
    elif args.role == "register":
        log.say("registered", ok=client.register_name(name, ident))
    elif args.role == "lock":
        while True:
            lock = client.lock(name, owner=ident)
            try:
                if lock.acquire(timeout=30):
                    log.say("granted", token=lock.token)
                    time.sleep(0.05)
                    log.say("releasing", token=lock.token)
                    lock.release()
            except ConsensusStoreError as exc:   # e.g. the session was lost: try again
                log.say("error", error=str(exc))
                time.sleep(0.2)
    elif args.role == "campaign":
        leader = client.election(name).campaign(ident)
        log.say("leader", member=ident, token=leader.token if leader else None)
    elif args.role == "replica":
        client.replicas(name, Worker(log), member=ident, replication_factor=2)
        log.say("offered")
    threading.Event().wait()   # stay alive (and keep the session) until killed


if __name__ == "__main__":
    main(sys.argv[1:])
