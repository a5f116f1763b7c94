"""A process that owns an ephemeral key through its session, until killed (by tests, -9).

    python -m tests.coordination.ephemeral_holder ENDPOINTS TOKEN KEY TTL [async]

Prints ``ready SESSION_ID`` once the key is written; then keeps the session alive (at most
120 s, so a forgotten process ends by itself).  With ``async``: the same through
``AsyncClient``, and it also holds lock KEY on that session.
"""
from __future__ import annotations

import asyncio
import sys
import time

from consensus_store import AsyncClient
from consensus_store.client import Client


def hold(endpoints: str, token: str, key: str, ttl: str) -> None:
    client = Client(endpoints.split(","), token=token)
    session = client.session(ttl=float(ttl))
    client.put(key, "held", session=session)
    print(f"ready {session.id}", flush=True)
    time.sleep(120)


async def hold_async(endpoints: str, token: str, key: str, ttl: str) -> None:
    client = AsyncClient(endpoints.split(","), token=token, session_ttl=float(ttl))
    session = await client.default_session()
    await client.put(key, "held", session=session)
    assert await client.lock(key).acquire(timeout=10)
    print(f"ready {session.id}", flush=True)
    await asyncio.sleep(120)


if __name__ == "__main__":
    if sys.argv[5:] == ["async"]:
        asyncio.run(hold_async(*sys.argv[1:5]))
    else:
        hold(*sys.argv[1:5])
