"""A separate process that uses the coordination API and reports what it sees as JSON lines.

    python -m tests.coordination.worker ENDPOINTS TOKEN ROLE NAME [ID]

ROLE: ``join`` (create+join group NAME), ``register`` (register NAME), ``lock`` (take lock NAME
in a loop, reporting each grant's token), ``campaign`` (campaign in election NAME as ID and
report leadership), ``replica`` (offer a replica under NAME as ID).  Killed with -9 by tests.
"""
from __future__ import annotations

import json
import sys
import threading
import time

from consensus_store.client import Client
from consensus_store.errors import ConsensusStoreError

TTL_S = 1.5


_OUTPUT = threading.Lock()


def say(**event: object) -> None:
    # Replica callbacks run on the client's threads: one whole line at a time.
    line = json.dumps({"t": time.monotonic(), **event}) + "\n"
    with _OUTPUT:
        sys.stdout.write(line)
        sys.stdout.flush()


class Worker:
    def __init__(self, ident: str) -> None:
        self.ident = ident

    def on_active(self) -> None:
        say(event="active", id=self.ident)

    def on_passive(self) -> None:
        say(event="passive", id=self.ident)

    def on_standby(self) -> None:
        say(event="standby", id=self.ident)


def main(argv: list[str]) -> None:
    endpoints, token, role, name = argv[:4]
    ident = argv[4] if len(argv) > 4 else "w"
    client = Client(endpoints.split(","), token=token, session_ttl=TTL_S, timeout=5.0)
    if role == "join":
        client.groups.create(name)
        member = client.groups.join(name, member=ident, meta={"pid": ident})
        say(event="joined", member=member.id, session=member.session)
    elif role == "register":
        say(event="registered", ok=client.register_name(name, ident))
    elif role == "lock":
        while True:
            lock = client.lock(name, owner=ident)
            try:
                if lock.acquire(timeout=30):
                    say(event="granted", token=lock.token, id=ident)
                    time.sleep(0.05)
                    say(event="releasing", token=lock.token, id=ident)
                    lock.release()
            except ConsensusStoreError as exc:   # e.g. the session was lost: try again
                say(event="error", error=str(exc), id=ident)
                time.sleep(0.2)
    elif role == "campaign":
        leader = client.election(name).campaign(ident)
        say(event="leader", member=ident, token=leader.token if leader else None)
    elif role == "replica":
        client.replicas(name, Worker(ident), member=ident, replication_factor=2)
        say(event="offered", id=ident)
    threading.Event().wait()   # stay alive (and keep the session) until killed


if __name__ == "__main__":
    main(sys.argv[1:])
