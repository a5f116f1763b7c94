"""Where the coordination primitives keep their state: keys under the reserved prefix ``_cs/``.

The state machine writes them (``state/coordination.py``); the clients' monitors watch them and
the dashboard reads them, without importing ``state/``.  This module is that one layout.

Layout (names are %-quoted, so ``/`` in a name is safe):
  _cs/group/<g>                       group marker
  _cs/member/<g>/<member>             {"id", "node", "meta", "session"}      (session-bound)
  _cs/name/<name>                     {"name", "value", "session", "node"}  (session-bound)
  _cs/lock/<name>/<index:020d>        {"session", "owner", "token"}         (session-bound)
  _cs/election/<name>/cand/<member>   {"member", "priority", "meta", ...}   (session-bound)
  _cs/election/<name>/leader          {"member", ..., "token"}  derived: rewritten whenever the
                                      best candidate changes; token = that entry's index
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from consensus_store.errors import InvalidRequest

RESERVED_PREFIX = "_cs/"
MAX_NAME_CHARS = 512


def name_part(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise InvalidRequest(f"'{field}' must be a non-empty string of at most {MAX_NAME_CHARS} chars")
    return quote(value, safe="")


def group_key(group: str) -> str:
    return f"{RESERVED_PREFIX}group/{name_part(group, 'group')}"


def members_prefix(group: str) -> str:
    return f"{RESERVED_PREFIX}member/{name_part(group, 'group')}/"


def member_key(group: str, member: str) -> str:
    return members_prefix(group) + name_part(member, "member")


def name_key(name: str) -> str:
    return f"{RESERVED_PREFIX}name/{name_part(name, 'name')}"


def lock_prefix(name: str) -> str:
    return f"{RESERVED_PREFIX}lock/{name_part(name, 'name')}/"


def election_prefix(name: str) -> str:
    return f"{RESERVED_PREFIX}election/{name_part(name, 'name')}/"


def candidates_prefix(name: str) -> str:
    return f"{election_prefix(name)}cand/"


def candidate_key(name: str, member: str) -> str:
    return candidates_prefix(name) + name_part(member, "member")


def leader_key(name: str) -> str:
    return f"{election_prefix(name)}leader"


def decode_name(quoted: str) -> str:
    return unquote(quoted)
