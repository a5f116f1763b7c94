"""The client's session keepalive: every TTL/3, and again soon after one fails."""
from __future__ import annotations

import threading
import time

from consensus_store.client.session import Session
from consensus_store.errors import Unavailable
from consensus_store.models import ConnectionState

TTL_S = 1.5                      # keepalives every 0.5 s


class _Api:
    """Answers session_open; fails the first keepalive, answers the others."""

    def __init__(self) -> None:
        self.keepalives: list[float] = []
        self.third = threading.Event()

    def request(self, op: str, body: dict, timeout: float | None) -> dict:
        if op == "session_open":
            return {"session": {"id": 7, "ttl": TTL_S, "node": "n1"}}
        if op == "session_keepalive":
            self.keepalives.append(time.monotonic())
            if len(self.keepalives) >= 3:
                self.third.set()
            if len(self.keepalives) == 1:
                raise Unavailable("no leader known to forward the keepalive to")
            return {"session": 7, "ttl": TTL_S}
        return {}


def test_a_failed_keepalive_is_retried_soon_then_the_pace_returns_to_a_third_of_the_ttl() -> None:
    api = _Api()
    session = Session(api, TTL_S)
    try:
        assert api.third.wait(5.0)
        first, second, third = api.keepalives[:3]
        assert second - first < 0.35, "retried only a full interval after the failure"
        assert third - second >= 0.45, "kept the retry pace after an answered keepalive"
        assert session.state is ConnectionState.CONNECTED
    finally:
        session.close()
