"""A separate process that receives messages (``tests/coordination/test_messaging.py``): it joins
group NAME as member ID (``join``), registers NAME (``register``) or campaigns in election NAME
(``campaign``), then reads its inbox, logs every message (``got``) and replies to calls with
``{"from": ID, "echo": request}``.  Killed with -9 by the tests.

    python -m tests.coordination.messaging_worker ROLE --endpoints E --token T --name NAME \
        --id ID --events FILE
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consensus_store.client import Client
from consensus_store.errors import ConsensusStoreError
from consensus_store.testing.workers import EventLog

TTL_S = 2.0


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.coordination.messaging_worker")
    parser.add_argument("role", choices=("join", "register", "campaign"))
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--id", default="w")
    parser.add_argument("--events", required=True, type=Path)
    args = parser.parse_args(argv)
    log = EventLog(args.events, args.id)
    client = Client(args.endpoints.split(","), token=args.token, session_ttl=TTL_S, timeout=5.0)
    inbox = client.inbox(wait=1.0)
    inbox.open()                       # before anyone learns of this member
    if args.role == "join":
        client.groups.create(args.name)
        client.groups.join(args.name, member=args.id)
    elif args.role == "register":
        if not client.register_name(args.name, args.id):
            log.say("taken")
            return
    else:
        client.election(args.name).campaign(args.id, block=False)
    log.say("ready", session=client.default_session().id)
    while True:
        try:
            for message in inbox:
                log.say("got", message=message.message, sender=message.sender, seq=message.seq)
                if message.is_call:
                    message.reply({"from": args.id, "echo": message.message})
        except ConsensusStoreError as exc:
            log.say("error", error=str(exc))


if __name__ == "__main__":
    main(sys.argv[1:])
