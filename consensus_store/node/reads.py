"""Reads of the replicated state, by op name, and the one rule for how a read waits.

Every ``Kind.READ`` op of ``protocol.OPS`` has a ``Read`` here: ``parse`` checks its body at the
edge (before any wait), ``answer`` builds the reply from the local state machine.
``read_wait`` decides, for both front ends and the embedded node, whether a read can be served
from memory now or must first wait: for this replica to apply a session's ``min_index``, or
for a ReadIndex barrier (linearizable).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from consensus_store.config import Limits
from consensus_store.errors import InvalidRequest
from consensus_store.models import Consistency
from consensus_store.protocol import READ_OPS
from consensus_store.state import commands
from consensus_store.state import coordination as coord

if TYPE_CHECKING:
    from consensus_store.state.machine import StateMachine


class ReadWait(enum.Enum):
    NONE = "none"              # serve from this replica's memory now
    APPLIED = "applied"        # first wait until this replica applied the session's min_index
    BARRIER = "barrier"        # first confirm with the leader (ReadIndex)


def parse_consistency(value: Any) -> Consistency:
    try:
        return Consistency(value)
    except ValueError:
        raise InvalidRequest("'consistency' must be one of local, session, linearizable") from None


def read_wait(body: dict[str, Any], applied_index: int) -> tuple[ReadWait, int]:
    """How a read with this body waits on a replica that applied ``applied_index``, and for
    which index (``APPLIED``); raises InvalidRequest for a bad level or ``min_index``."""
    level = body.get("consistency", "session")
    if level == "session" or level is Consistency.SESSION:
        min_index = body.get("min_index", 0)
        if not commands.is_int(min_index) or min_index < 0:
            raise InvalidRequest("'min_index' must be a non-negative integer")
        return (ReadWait.APPLIED, min_index) if min_index > applied_index else (ReadWait.NONE, 0)
    if parse_consistency(level) is Consistency.LINEARIZABLE:
        return ReadWait.BARRIER, 0
    return ReadWait.NONE, 0


@dataclass(frozen=True)
class Read:
    parse: Callable[[dict[str, Any]], Any]        # the checked arguments, or InvalidRequest
    answer: Callable[["StateMachine", Any, Limits], dict[str, Any]]
    locked: bool = True      # needs the state lock (iterates); a single lookup does not


def _no_args(body: dict[str, Any]) -> None:
    return None


def _field(name: str) -> Callable[[dict[str, Any]], str]:
    return lambda body: commands.require_key(body, name)


def _range_args(body: dict[str, Any]) -> tuple[str, int]:
    prefix = body.get("prefix", "")
    if not isinstance(prefix, str):
        raise InvalidRequest("'prefix' must be a string")
    return prefix, commands.validate_limit(body.get("limit"))


def _range(machine: "StateMachine", args: tuple[str, int], limits: Limits) -> dict[str, Any]:
    kvs, count = machine.range(args[0], args[1], max_keys=limits.max_range_keys,
                               max_bytes=limits.max_range_bytes)
    return {"kvs": kvs, "count": count, "more": count > len(kvs),
            "read_index": machine.applied_index}


READS: dict[str, Read] = {
    "get": Read(commands.require_key, lambda m, key, _: {"kv": m.get(key)}, locked=False),
    "range": Read(_range_args, _range),
    "groups_list": Read(_no_args, lambda m, _, __: {"groups": coord.list_groups(m)}),
    "groups_members": Read(_field("group"),
                           lambda m, group, _: {"members": coord.group_members(m, group)}),
    "names_list": Read(_no_args, lambda m, _, __: {"names": coord.registered_names(m)}),
    "names_whereis": Read(_field("name"), lambda m, name, _: {"owner": coord.whereis(m, name)}),
    "locks_list": Read(_no_args, lambda m, _, __: {"locks": coord.all_locks(m)}),
    "locks_status": Read(_field("name"), lambda m, name, _: coord.lock_state(m, name)),
    "elections_leader": Read(_field("name"), lambda m, name, _: coord.election_state(m, name)),
}
if set(READS) != READ_OPS:
    raise RuntimeError(f"reads.READS and protocol's read ops differ: {set(READS) ^ READ_OPS}")
