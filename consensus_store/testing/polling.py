"""The one poll loop of the test tooling: ``poll_until`` (the first truthy value of a predicate,
or None at the deadline) and ``wait_until``, its failing form (AssertionError naming what was
awaited).  Tests wait on conditions with these, never with fixed sleeps.  ``closed_within``
waits for the other end of an asyncio stream to close.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, TypeVar, cast

import httpx

from consensus_store.errors import ConsensusStoreError

T = TypeVar("T")

# What a predicate may raise while a cluster is still settling (node unreachable, no leader
# yet, a record not there yet): "not yet", not a failure.
TRANSIENT: tuple[type[BaseException], ...] = (ConsensusStoreError, httpx.HTTPError, OSError,
                                              KeyError)


def poll_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05, *,
               transient: tuple[type[BaseException], ...] = (Exception,),
               what: str | None = None) -> T | None:
    """Call ``predicate`` every ``interval`` s until it returns something truthy (returned).

    At the deadline: None, or with ``what`` an AssertionError saying what was not reached, the
    last value and the last error.  Exceptions in ``transient`` count as "not yet"; any other
    one propagates.
    """
    deadline = time.monotonic() + timeout
    last_value: Any = None
    last_error: BaseException | None = None
    while True:
        try:
            last_value = predicate()
        except transient as exc:
            last_error, last_value = exc, None
        if last_value:
            return last_value
        if time.monotonic() >= deadline:
            if what is None:
                return None
            raise AssertionError(f"{what}: not reached within {timeout:g}s (last value "
                                 f"{last_value!r:.300}, last error {last_error!r:.300})")
        time.sleep(interval)


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition", *,
               interval: float = 0.05,
               transient: tuple[type[BaseException], ...] = TRANSIENT) -> T:
    """``poll_until`` that fails the test at the deadline; transient cluster errors (see
    ``TRANSIENT``) count as "not yet"."""
    # With ``what``, poll_until raises instead of returning None.
    return cast(T, poll_until(predicate, timeout, interval, transient=transient, what=what))


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True once the other end closed (``read()`` returns at EOF) within ``seconds``."""
    try:
        await asyncio.wait_for(reader.read(), seconds)
    except asyncio.TimeoutError:
        return False
    return True
