"""A process that owns an ephemeral key through its session, until killed (by tests, -9).

    python -m tests.coordination.ephemeral_holder ENDPOINTS TOKEN KEY TTL

Prints ``ready SESSION_ID`` once the key is written; then keeps the session alive (at most
120 s, so a forgotten process ends by itself).
"""
from __future__ import annotations

import sys
import time

from consensus_store.client import Client


def main(endpoints: str, token: str, key: str, ttl: str) -> None:
    client = Client(endpoints.split(","), token=token)
    session = client.session(ttl=float(ttl))
    client.put(key, "held", session=session)
    print(f"ready {session.id}", flush=True)
    time.sleep(120)


if __name__ == "__main__":
    main(*sys.argv[1:])
