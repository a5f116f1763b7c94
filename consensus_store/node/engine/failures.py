"""pysyncobj's failure reasons (FAIL_REASON) and what they mean to our callers: the one mapping."""
from __future__ import annotations

from pysyncobj import FAIL_REASON

from consensus_store.errors import ConsensusStoreError, Timeout, Unavailable

SUCCESS = FAIL_REASON.SUCCESS
FAIL_NAMES: dict[int, str] = {value: name for name, value in vars(FAIL_REASON).items()
                              if name.isupper()}
# After these the command may still have been applied (or may apply later): only a retry with
# the same client and request id (deduplicated by the state machine) settles it.
MAYBE_APPLIED = frozenset({FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME})


def error_for(reason: int) -> ConsensusStoreError:
    """The typed error a command that failed with ``reason`` is reported as."""
    name = FAIL_NAMES.get(reason, str(reason))
    if reason in MAYBE_APPLIED:
        return Timeout(f"write not confirmed ({name}); it may still be applied",
                       outcome="unknown")
    if reason == FAIL_REASON.QUEUE_FULL:
        return Unavailable(f"the raft queue is full ({name}); retry shortly")
    return Unavailable(f"write not applied ({name}); retry, on another node if this one "
                       f"knows no leader", retry="elsewhere")
