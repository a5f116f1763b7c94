"""The safety checks and the outcome mapping of the fault suite, on hand-made histories (no
cluster): each check must flag what it is meant to catch, and pass a correct history."""
from __future__ import annotations

from typing import Any

import pytest

from consensus_store.errors import CompareFailed, InvalidRequest, Timeout, Unavailable
from consensus_store.models import KeyValue
from consensus_store.testing import (OpRecord, Workload, check_linearizable,
                                     check_no_lost_writes, check_sessions, check_values)


def op(process: int, f: str, key: str, value: Any = None, *, level: str | None = None,
       t: float, outcome: str = "ok", result: Any = None, revision: int | None = None,
       observed: tuple[Any, int] | None = None) -> OpRecord:
    return OpRecord(process, f, key, value, level, t, t + 0.5, outcome, result, revision,
                    observed)


# ---- (b) sessions ------------------------------------------------------------------------------
def test_session_read_older_than_own_write_is_flagged() -> None:
    ops = [op(0, "put", "k", "0-1", t=1, revision=10),
           op(0, "read", "k", level="session", t=2, result="1-5", revision=7)]
    anomalies = check_sessions(ops)
    assert [a.kind for a in anomalies] == ["session-read-your-writes"]


def test_session_read_older_than_earlier_read_is_flagged() -> None:
    ops = [op(0, "read", "k", level="local", t=1, result="1-3", revision=12),
           op(0, "read", "k", level="session", t=2, result="1-1", revision=9)]
    assert [a.kind for a in check_sessions(ops)] == ["session-monotonic-reads"]


def test_session_read_of_absent_key_after_a_write_is_flagged() -> None:
    ops = [op(0, "cas", "k", [None, "0-1"], t=1, revision=4),
           op(0, "read", "k", level="session", t=2, result=None, revision=0)]
    assert len(check_sessions(ops)) == 1


def test_sessions_are_per_client_and_per_key() -> None:
    ops = [op(0, "put", "k", "0-1", t=1, revision=10),
           op(1, "read", "k", level="session", t=2, result="1-0", revision=3),    # other client
           op(0, "read", "j", level="session", t=3, result="1-2", revision=5),    # other key
           op(0, "read", "k", level="session", t=4, result="0-1", revision=10),
           op(0, "read", "k", level="local", t=5, result="1-0", revision=3),      # local: no rule
           op(0, "put", "k", "0-9", t=6, outcome="info"),                         # not acknowledged
           op(0, "read", "k", level="session", t=7, result="0-1", revision=10)]
    assert check_sessions(ops) == []


def test_failed_cas_observation_sets_the_floor() -> None:
    ops = [op(0, "cas", "k", ["x", "0-1"], t=1, outcome="fail", observed=("1-4", 20)),
           op(0, "read", "k", level="session", t=2, result="1-3", revision=18)]
    assert len(check_sessions(ops)) == 1


# ---- (c) lost writes -----------------------------------------------------------------------------
def test_lost_write_checks() -> None:
    ops = [op(0, "put", "a", "0-1", t=1, revision=10),
           op(0, "cas", "b", [None, "0-2"], t=2, revision=11),
           op(0, "put", "c", "0-3", t=3, revision=12),
           op(0, "put", "d", "0-4", t=4, revision=13),
           op(0, "put", "e", "0-5", t=5, outcome="info")]       # unknown: may be absent
    final = {"n1": {"a": ("1-7", 15), "b": ("0-2", 11), "c": ("1-8", 9)},
             "n2": {"a": ("1-7", 15), "b": ("0-2", 11), "c": ("1-8", 9), "d": ("0-4", 13)}}
    anomalies = check_no_lost_writes(ops, final)
    assert [a.kind for a in anomalies] == ["lost-write", "lost-write"]
    n1, n2 = anomalies
    assert n1.message.startswith("n1 lacks 2 acknowledged writes")
    assert "'0-3' @12" in n1.message and "'0-4' @13" in n1.message
    assert n2.message.startswith("n2 lacks 1 acknowledged writes") and "'0-3' @12" in n2.message


def test_same_revision_other_value_is_a_lost_write() -> None:
    ops = [op(0, "put", "a", "0-1", t=1, revision=10)]
    assert len(check_no_lost_writes(ops, {"n1": {"a": ("2-2", 10)}})) == 1


# ---- value / revision consistency ----------------------------------------------------------------
def test_values_must_come_from_writes_with_one_revision() -> None:
    ops = [op(0, "put", "a", "0-1", t=1, revision=10),
           op(1, "read", "a", level="local", t=2, result="9-9", revision=11),      # phantom
           op(1, "read", "a", level="session", t=3, result="0-1", revision=12),    # other rev
           op(2, "cas", "a", ["0-1", "2-1"], t=4, outcome="fail", observed=("0-1", 10)),
           op(1, "read", "a", level="local", t=5, result="2-1", revision=14)]      # failed cas seen
    kinds = sorted(a.kind for a in check_values(ops, {}))
    assert kinds == ["failed-write-visible", "inconsistent-revision", "phantom-value"]


def test_final_state_is_checked_for_phantoms() -> None:
    ops = [op(0, "put", "a", "0-1", t=1, revision=10)]
    assert check_values(ops, {"n1": {"a": ("0-1", 10)}}) == []
    assert [a.kind for a in check_values(ops, {"n1": {"a": ("zz", 10)}})] == [
        "phantom-value", "inconsistent-revision"]


# ---- (a) linearizability, through the Workload's outcome mapping --------------------------------
class FakeClient:
    """Answers from a script: each call pops the next answer (a value or an exception)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    def _next(self) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def put(self, key: str, value: Any) -> KeyValue:
        return self._next()

    def cas(self, key: str, value: Any, **guard: Any) -> KeyValue:
        return self._next()

    def get(self, key: str, consistency: str) -> KeyValue | None:
        return self._next()


def compare_failed(current: KeyValue | None) -> CompareFailed:
    error = CompareFailed("compare failed")
    error.current = current  # type: ignore[attr-defined]
    return error


def run_script(answers: list[Any], steps: list[tuple]) -> Workload:
    workload = Workload(["http://127.0.0.1:1"], "t" * 16, workers=1)
    client = FakeClient(answers)
    seen: dict[str, Any] = {}
    for step in steps:
        kind, *args = step
        if kind == "put":
            workload._put(client, 0, *args, seen)
        elif kind == "cas":
            workload._cas(client, 0, args[0], args[1], args[2], seen)
        else:
            workload._read(client, 0, args[0], args[1], seen)
    return workload


def test_outcomes_map_to_checker_semantics() -> None:
    kv = lambda v, r: KeyValue("k", v, 3, r, 1)  # noqa: E731
    workload = run_script(
        [kv("0-1", 3), Timeout("t"), compare_failed(kv("0-1", 3)), Unavailable("u"),
         kv("0-1", 3), None, InvalidRequest("weird"), kv("0-5", 9)],
        [("put", "k", "0-1"), ("put", "k", "0-2"), ("cas", "k", "zz", "0-3"),
         ("cas", "k", "0-1", "0-4"), ("read", "k", "linearizable"), ("read", "k", "session"),
         ("put", "k", "0-6"), ("cas", "k", "0-1", "0-5")])
    events = [(e["type"], e["f"], e["value"]) for e in workload.history.events()
              if e["type"] != "invoke"]
    assert events == [("ok", "write", "0-1"), ("info", "write", "0-2"),
                      ("fail", "cas", ["zz", "0-3"]), ("info", "cas", ["0-1", "0-4"]),
                      ("ok", "read", "0-1"),
                      # the session read is not in the linearizability history
                      ("info", "write", "0-6"), ("ok", "cas", ["0-1", "0-5"])]
    outcomes = [(o.f, o.outcome, o.result, o.revision) for o in workload.ops]
    assert outcomes[4] == ("read", "ok", "0-1", 3)
    assert outcomes[5] == ("read", "ok", None, 0)
    assert workload.ops[2].observed == ("0-1", 3)
    assert len(workload.unexpected) == 1 and "weird" in workload.unexpected[0]
    assert check_linearizable(workload.history.events()) == ([], [])


def test_stale_linearizable_read_is_not_linearizable() -> None:
    kv = lambda v, r: KeyValue("k", v, 3, r, 1)  # noqa: E731
    workload = run_script([kv("0-1", 3), kv("0-2", 4), kv("0-1", 3)],
                          [("put", "k", "0-1"), ("put", "k", "0-2"),
                           ("read", "k", "linearizable")])
    anomalies, undecided = check_linearizable(workload.history.events())
    assert undecided == [] and [a.kind for a in anomalies] == ["non-linearizable"]


@pytest.mark.parametrize("level", ["local", "session"])
def test_stale_non_linearizable_reads_are_left_out_of_the_linearizability_check(level: str) -> None:
    kv = lambda v, r: KeyValue("k", v, 3, r, 1)  # noqa: E731
    workload = run_script([kv("0-1", 3), kv("0-2", 4), kv("0-1", 3)],
                          [("put", "k", "0-1"), ("put", "k", "0-2"), ("read", "k", level)])
    assert check_linearizable(workload.history.events()) == ([], [])
