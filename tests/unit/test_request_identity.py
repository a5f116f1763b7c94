"""Issue #10: the at-most-once fields of a write are checked at the edge, before the log.

``client_id`` (1-128 printable characters), ``request_id`` (an integer in [0, 2**63)) and
``done_below`` (in [0, request_id]); the command's own names for them (``cid``, ``rid``,
``done``) are the node's to set, so a body carrying one is refused.
"""
from __future__ import annotations

from typing import Any

import pytest

from consensus_store.errors import InvalidRequest
from consensus_store.node.validate import request_identity

GOOD = {"client_id": "c-1", "request_id": 5, "done_below": 3}


@pytest.mark.parametrize("body, expected", [
    ({}, {}),
    (GOOD, {"cid": "c-1", "rid": 5, "done": 3}),
    ({"client_id": "c", "request_id": 0}, {"cid": "c", "rid": 0, "done": 0}),
    ({"client_id": "c" * 128, "request_id": 2**63 - 1, "done_below": 2**63 - 1},
     {"cid": "c" * 128, "rid": 2**63 - 1, "done": 2**63 - 1}),
])
def test_good_identities_become_the_commands_fields(body: dict, expected: dict) -> None:
    assert request_identity(body) == expected


@pytest.mark.parametrize("change", [
    {"request_id": -1}, {"request_id": 2**63}, {"request_id": 1.0}, {"request_id": True},
    {"request_id": "5"}, {"request_id": None},
    {"client_id": ""}, {"client_id": "c" * 129}, {"client_id": "a\nb"}, {"client_id": "\x00"},
    {"client_id": 7}, {"client_id": None},
    {"done_below": -1}, {"done_below": 6}, {"done_below": 2.0},
    {"cid": "c-1"}, {"rid": -1}, {"done": 0},
], ids=repr)
def test_bad_identities_are_refused_with_a_clear_message(change: dict[str, Any]) -> None:
    body = {**GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(InvalidRequest) as refused:
        request_identity(body)
    named = next(iter(change))
    assert repr(named)[1:-1] in refused.value.message


def test_done_below_alone_is_not_an_identity() -> None:
    with pytest.raises(InvalidRequest):
        request_identity({"done_below": 0})
