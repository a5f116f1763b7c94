"""At-most-once writes: what each client's recent writes returned, bounded in count and bytes.

A command with a client id (``cid``) and request id (``rid``) is applied once; a repeated
(cid, rid) gets the first answer back without applying again.  A client tells us in ``done`` the
lowest rid it still waits for, so older answers can be forgotten.

What is kept is the answer without the values it carried (``kept``): a put's answer keeps the
new record's revisions and version and ``prev_kv``'s, not their values; a txn's reads keep their
counts, not their keys.  A replayed put (or a cas that succeeded, or a txn's puts) gets the value
back from the retried command itself, which is the value written; ``prev_kv``, a failed cas's
current record and a txn's reads come back without values (a range: no kvs, ``"more": true``).
So a client that overwrites one big value many times keeps no copy of the old values here.

Bounds, all deterministic (they depend only on the log): per client, MAX_RESULTS_PER_CLIENT
answers and MAX_BYTES_PER_CLIENT bytes (its newest answer always stays); in all,
MAX_CLIENTS clients and MAX_BYTES bytes (least recently active client first).  An answer
dropped by a bound raises the client's mark as if the client had acknowledged it, so a retry
of it is refused ("a very late retry") instead of being applied twice.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from consensus_store import fast_json
from consensus_store.errors import InvalidRequest

MAX_RESULTS_PER_CLIENT = 4096
MAX_CLIENTS = 10_000
MAX_BYTES_PER_CLIENT = 1024 * 1024
MAX_BYTES = 32 * 1024 * 1024
ANSWER_OVERHEAD_BYTES = 64          # the table's own entry, beside the answer's JSON size

Result = dict[str, Any]


class ClientAnswers:
    """One client's kept answers, oldest first (as inserted), each with its size."""

    __slots__ = ("low_water", "results", "bytes")

    def __init__(self, low_water: int = 0) -> None:
        self.low_water = low_water
        self.results: OrderedDict[int, tuple[Result, int]] = OrderedDict()
        self.bytes = 0

    def add(self, rid: int, kept: Result) -> int:
        size = answer_bytes(kept)
        old = self.results.pop(rid, None)
        self.results[rid] = (kept, size)
        self.bytes += size - (old[1] if old else 0)
        return size - (old[1] if old else 0)

    def forget_below(self, done: int) -> int:
        """Drop answers older than ``done`` from the front (oldest first, as inserted): O(1)
        per write; one inserted out of order may outlive ``done`` for a while (an answer kept
        longer is still the right answer).  Returns the bytes freed."""
        if done <= self.low_water:
            return 0
        self.low_water = done
        freed, results = 0, self.results
        while results and next(iter(results)) < done:
            freed += results.popitem(last=False)[1][1]
        self.bytes -= freed
        return freed

    def drop_oldest(self) -> int:
        """Forget the oldest answer, for a bound; its retry is refused from now on."""
        rid, (_, size) = self.results.popitem(last=False)
        self.low_water = max(self.low_water, rid + 1)
        self.bytes -= size
        return size


class Answers:
    def __init__(self) -> None:
        self.clients: OrderedDict[str, ClientAnswers] = OrderedDict()
        self.bytes = 0
        self.trackers: list[set[str]] = []      # each collects the clients changed (digest.py)

    def recall(self, cid: str, rid: int, command: dict[str, Any]) -> Result | None:
        """The answer to give a repeated request, or None if it is new (raises InvalidRequest
        for one older than what the client acknowledged or a bound dropped)."""
        table = self.clients.get(cid)
        if table is None:
            return None
        self.clients.move_to_end(cid)
        entry = table.results.get(rid)
        if entry is not None:
            return replayed(command, entry[0])
        if rid < table.low_water:
            raise InvalidRequest("request id below the client's acknowledged mark "
                                 "(a very late retry)")
        return None

    def remember(self, cid: str, rid: int, command: dict[str, Any], result: Result) -> None:
        table = self.clients.get(cid)
        if table is None:
            table = self.clients[cid] = ClientAnswers()
        else:
            self.clients.move_to_end(cid)
        for changed in self.trackers:
            changed.add(cid)
        self.bytes += table.add(rid, kept(command.get("op"), result))
        done = command.get("done")
        if isinstance(done, int):
            self.bytes -= table.forget_below(done)
        while len(table.results) > MAX_RESULTS_PER_CLIENT or (
                table.bytes > MAX_BYTES_PER_CLIENT and len(table.results) > 1):
            self.bytes -= table.drop_oldest()
        while len(self.clients) > 1 and (len(self.clients) > MAX_CLIENTS or self.bytes > MAX_BYTES):
            dropped, old = self.clients.popitem(last=False)
            self.bytes -= old.bytes
            for changed in self.trackers:
                changed.add(dropped)

    # ---- snapshots: plain builtins ------------------------------------------------------------
    def plain_state(self) -> list[list[Any]]:
        return [self.plain_client(cid) for cid in self.clients]

    def plain_client(self, cid: str) -> list[Any]:
        table = self.clients[cid]
        return [cid, table.low_water, [(rid, answer) for rid, (answer, _) in table.results.items()]]

    def restore(self, state: list[list[Any]]) -> None:
        """Exactly what was saved (no bound applied here: a replica that restores must hold
        what one that applied the log holds)."""
        for cid, low_water, results in state:
            table = self.clients[cid] = ClientAnswers(low_water)
            for rid, answer in results:
                self.bytes += table.add(rid, answer)


# ---- what is kept, what a retry gets ----------------------------------------------------------
def answer_bytes(answer: Result) -> int:
    try:
        return len(fast_json.encode(answer)) + ANSWER_OVERHEAD_BYTES
    except Exception:  # noqa: BLE001 - apply never raises; an answer is JSON, so unreachable
        return MAX_BYTES_PER_CLIENT


def _without_value(kv: Any) -> Any:
    if not isinstance(kv, dict) or "value" not in kv:
        return kv
    kv = kv.copy()           # a C-level copy: this runs for every write on every replica
    del kv["value"]
    return kv


def _with_value(kv: dict[str, Any], value: Any) -> dict[str, Any]:
    return {"key": kv.get("key"), "value": value, **{k: v for k, v in kv.items() if k != "key"}}


def _kept_txn_op(result: Any) -> Any:
    if not isinstance(result, dict):
        return result
    if result.get("op") == "range":
        return {"op": "range", "kvs": [], "count": result.get("count"), "more": True}
    if result.get("kv"):
        return {**result, "kv": _without_value(result["kv"])}
    return result


def kept(op: Any, result: Result) -> Result:
    """What is kept of ``result``: everything but the values of the KV ops' records."""
    if "error" in result:
        return result
    if op in ("put", "cas", "delete"):
        answer = result.copy()
        for name in ("kv", "prev_kv"):
            if name in answer:
                answer[name] = _without_value(answer[name])
        return answer
    if op == "txn" and isinstance(result.get("results"), list):
        return {**result, "results": [_kept_txn_op(r) for r in result["results"]]}
    return result


def replayed(command: dict[str, Any], answer: Result) -> Result:
    """A kept answer for a retry: the values written come back from the retried command."""
    op = command.get("op")
    if op in ("put", "cas") and isinstance(answer.get("kv"), dict) and "value" in command \
            and answer.get("succeeded", True) is True:
        return {**answer, "kv": _with_value(answer["kv"], command["value"])}
    if op == "txn" and isinstance(answer.get("results"), list):
        branch = command.get("success" if answer.get("succeeded") else "failure")
        if not isinstance(branch, list) or len(branch) != len(answer["results"]):
            return answer
        return {**answer, "results": [
            {**r, "kv": _with_value(r["kv"], op_.get("value"))}
            if isinstance(r, dict) and r.get("op") == "put" and isinstance(r.get("kv"), dict)
            and isinstance(op_, dict) else r
            for r, op_ in zip(answer["results"], branch)]}
    return answer
