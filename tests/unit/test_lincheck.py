"""Tests of the linearizability checker (consensus_store.testing.lincheck) and its command
line (tools/lincheck.py): the Jepsen etcd reference corpus, hand-made histories, a brute-force
cross-check, the recorder and the CLI."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from consensus_store.testing.lincheck import (
    CheckResult,
    HistoryError,
    HistoryRecorder,
    Operation,
    check_events,
    check_file,
    check_operations,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
LINCHECK = REPO_ROOT / "tools" / "lincheck.py"
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference" / "jepsen-etcd"
VERDICTS = REFERENCE_DIR / "verdicts.tsv"
PER_FILE_BOUND_S = 30.0  # each reference history must be decided within this
TOTAL_BOUND_S = 60.0  # and the whole corpus within this (it takes well under 1 s)


# ----------------------------------------------------------------------------- corpus


def _reference_cases() -> list[tuple[str, bool | None]]:
    """(file name, expected verdict) per line of verdicts.tsv; a single (reason,
    None) case when the corpus is missing, so that the test fails instead of
    silently skipping."""
    if not VERDICTS.is_file():
        return [(f"missing reference corpus: {VERDICTS} not found", None)]
    cases = []
    for line in VERDICTS.read_text().splitlines()[1:]:  # header: file<TAB>linearizable
        if line.strip():
            name, verdict = line.split("\t")
            cases.append((name, {"true": True, "false": False}[verdict.strip()]))
    return cases


REFERENCE_CASES = _reference_cases()


@pytest.mark.parametrize(("name", "expected"), REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
def test_reference_history_verdict(name: str, expected: bool | None) -> None:
    assert expected is not None, name
    started = time.perf_counter()
    result = check_file(REFERENCE_DIR / name, timeout_s=PER_FILE_BOUND_S)
    elapsed = time.perf_counter() - started
    assert result.linearizable is expected, f"{name}: {result.explanation}"
    assert elapsed < PER_FILE_BOUND_S


def test_reference_corpus_accuracy_and_speed() -> None:
    assert REFERENCE_CASES[0][1] is not None, REFERENCE_CASES[0][0]
    assert len(REFERENCE_CASES) == len(list(REFERENCE_DIR.glob("*.log"))), "verdicts.tsv misses some logs"
    timings, agree = {}, 0
    for name, expected in REFERENCE_CASES:
        started = time.perf_counter()
        agree += check_file(REFERENCE_DIR / name).linearizable is expected
        timings[name] = time.perf_counter() - started
    slowest = max(timings, key=timings.get)
    print(f"\nreference corpus: {agree}/{len(REFERENCE_CASES)} agree; "
          f"slowest {slowest} {timings[slowest]:.3f} s; total {sum(timings.values()):.2f} s")
    assert agree == len(REFERENCE_CASES)
    assert sum(timings.values()) < TOTAL_BOUND_S


# ----------------------------------------------------------------------------- hand-made


def op(process, f, value, start, end, result=None, key="x") -> Operation:
    """value: the write / cas argument, or for a read the value it returned.
    end None: unknown outcome. result False: a write / cas that failed."""
    if f == "read":
        return Operation(process, f, key, None, start, end, value)
    return Operation(process, f, key, value, start, end, True if result is None else result)


def test_stale_read_after_acknowledged_write_is_not_linearizable() -> None:
    result = check_operations([op(1, "write", 1, 0, 1), op(2, "read", None, 2, 3)])
    assert result.linearizable is False
    assert result.key == "x"
    assert "2 read nil [2, 3]" in result.explanation


def test_stale_read_of_an_overwritten_value_is_not_linearizable() -> None:
    ops = [op(1, "write", 1, 0, 1), op(1, "write", 2, 2, 3), op(2, "read", 1, 4, 5)]
    assert check_operations(ops).linearizable is False


def test_concurrent_writes_with_reads_seeing_either_value_are_linearizable() -> None:
    writes = [op(1, "write", 1, 0, 10), op(2, "write", 2, 0, 10)]
    for first, second in [(1, 2), (2, 1), (1, 1), (2, 2), (None, 1)]:
        reads = [op(3, "read", first, 1, 2), op(3, "read", second, 3, 4)]
        assert check_operations(writes + reads).linearizable is True, (first, second)
    # but once both writes are over, the register cannot flip back
    late = [op(3, "read", 2, 11, 12), op(3, "read", 1, 13, 14)]
    assert check_operations(writes + late).linearizable is False


def test_unknown_write_observed_later_is_linearizable() -> None:
    ops = [op(1, "write", 7, 0, None), op(2, "read", None, 1, 2), op(2, "read", 7, 50, 51)]
    assert check_operations(ops).linearizable is True


def test_unknown_write_never_observed_is_linearizable() -> None:
    ops = [op(1, "write", 7, 0, None), op(2, "read", None, 1, 2), op(2, "read", None, 50, 51)]
    assert check_operations(ops).linearizable is True


def test_unknown_write_cannot_be_undone_once_observed() -> None:
    ops = [op(1, "write", 7, 0, None), op(2, "read", 7, 1, 2), op(2, "read", None, 3, 4)]
    assert check_operations(ops).linearizable is False


def test_unknown_cas_may_have_happened_or_not() -> None:
    base = [op(1, "write", 1, 0, 1), op(2, "cas", (1, 2), 2, None)]
    assert check_operations(base + [op(3, "read", 2, 5, 6)]).linearizable is True
    assert check_operations(base + [op(3, "read", 1, 5, 6)]).linearizable is True
    assert check_operations(base + [op(3, "read", 3, 5, 6)]).linearizable is False


def test_ok_cas_requires_the_expected_value() -> None:
    assert check_operations([op(1, "write", 1, 0, 1), op(2, "cas", (2, 3), 2, 3)]).linearizable is False
    ops = [op(1, "write", 1, 0, 1), op(2, "cas", (1, 3), 2, 3), op(3, "read", 3, 4, 5)]
    assert check_operations(ops).linearizable is True
    assert check_operations([op(2, "cas", (None, 3), 0, 1)]).linearizable is True


def test_failed_operations_are_ignored() -> None:
    ops = [op(1, "write", 1, 0, 1), op(2, "cas", (5, 6), 2, 3, result=False),
           op(2, "write", 9, 4, 5, result=False), op(3, "read", 1, 6, 7)]
    assert check_operations(ops).linearizable is True
    events = [
        {"process": 1, "type": "invoke", "f": "write", "key": "x", "value": 1},
        {"process": 1, "type": "ok", "f": "write", "key": "x", "value": 1},
        {"process": 2, "type": "invoke", "f": "write", "key": "x", "value": 9},
        {"process": 2, "type": "fail", "f": "write", "key": "x", "value": 9},
        {"process": 3, "type": "invoke", "f": "read", "key": "x", "value": None},
        {"process": 3, "type": "fail", "f": "read", "key": "x", "value": 9},
        {"process": 3, "type": "invoke", "f": "read", "key": "x", "value": None},
        {"process": 3, "type": "ok", "f": "read", "key": "x", "value": 1},
    ]
    assert check_events(events).linearizable is True


def test_keys_are_checked_independently_and_the_bad_key_is_reported() -> None:
    ops = [op(1, "write", 1, 0, 1, key="a"), op(2, "read", 1, 2, 3, key="a"),
           op(1, "write", 5, 4, 5, key="b"), op(2, "read", 1, 6, 7, key="b"),
           op(1, "write", 1, 8, 9, key="c")]
    result = check_operations(ops)
    assert result.linearizable is False
    assert result.key == "b"
    assert "'b'" in result.explanation
    # the same values on one key would be fine: a read of 1 after "a"'s write
    assert check_operations([o for o in ops if o.key != "b"]).linearizable is True


def test_explanation_names_the_prefix_and_the_stuck_operations() -> None:
    ops = [op(1, "write", 1, 0, 1), op(1, "write", 2, 2, 3), op(2, "read", 2, 4, 5),
           op(2, "read", 1, 6, 7)]
    explanation = check_operations(ops).explanation
    assert "longest linearizable prefix: 3 of 4" in explanation
    assert "1 write 2 [2, 3]" in explanation
    assert "none of these can be linearized next:\n  2 read 1 [6, 7]" in explanation


def test_deep_history_needs_no_recursion() -> None:
    ops = []
    for i in range(3 * sys.getrecursionlimit()):
        ops += [op(1, "write", i, 4 * i, 4 * i + 1), op(2, "read", i, 4 * i + 2, 4 * i + 3)]
    assert check_operations(ops).linearizable is True


def _exponential_history() -> list[Operation]:
    """20 concurrent writes, then reads of 5 and 6 in order: no write can follow
    the first read, yet every subset of the writes looks promising."""
    writes = [op(p, "write", p, 0, 10) for p in range(20)]
    return writes + [op(30, "read", 5, 11, 12), op(30, "read", 6, 13, 14)]


def test_time_bound_gives_an_unknown_verdict() -> None:
    started = time.monotonic()
    result = check_operations(_exponential_history(), timeout_s=0.3)
    assert result == CheckResult(None, "x", result.explanation)
    assert "timed out" in result.explanation
    assert time.monotonic() - started < 5


# ----------------------------------------------------------------------------- brute force


def _brute_force(ops: list[Operation]) -> bool:
    """Every order of every allowed subset: ok ops required, unknown ones optional."""
    for key in {o.key for o in ops}:
        live = [o for o in ops if o.key == key and not (o.f != "read" and o.result is False)
                and not (o.f == "read" and o.return_time is None)]
        required = [o for o in live if o.return_time is not None]
        optional = [o for o in live if o.return_time is None]
        subsets = (s for r in range(len(optional) + 1) for s in itertools.combinations(optional, r))
        if not any(_legal(order) for s in subsets for order in itertools.permutations(required + list(s))):
            return False
    return True


def _legal(order: tuple[Operation, ...]) -> bool:
    for i, earlier in enumerate(order):  # nothing may be placed after an op that returned before it began
        if any(o.return_time is not None and o.return_time < earlier.invoke_time for o in order[i + 1:]):
            return False
    state = None
    for o in order:
        if o.f == "read" and o.result != state or o.f == "cas" and o.value[0] != state:
            return False
        state = o.value if o.f == "write" else o.value[1] if o.f == "cas" else state
    return True


def _random_history(rng: random.Random) -> list[Operation]:
    ops = []
    for process in range(rng.randint(1, 6)):
        start = rng.randint(0, 12)
        end = None if rng.random() < 0.2 else start + rng.randint(0, 6)
        f = rng.choice(["read", "write", "cas"])
        value = {"read": rng.choice([None, 0, 1]), "write": rng.choice([0, 1, 2]),
                 "cas": (rng.choice([None, 0, 1]), rng.choice([0, 1, 2]))}[f]
        ops.append(op(process, f, value, start, end, result=rng.random() > 0.15, key=rng.choice("xxy")))
    return ops


def test_agrees_with_brute_force_on_random_small_histories() -> None:
    rng = random.Random(20240611)
    verdicts = []
    for _ in range(1500):
        ops = _random_history(rng)
        expected = _brute_force(ops)
        assert check_operations(ops).linearizable is expected, ops
        verdicts.append(expected)
    assert 0.2 < sum(verdicts) / len(verdicts) < 0.8  # both verdicts well exercised


# ----------------------------------------------------------------------------- recorder and CLI


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LINCHECK), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def _record_register_clients(recorder: HistoryRecorder, threads: int = 4, ops_each: int = 60) -> None:
    """Clients of a correct, lock-protected in-memory register."""
    register, lock = {"k": None}, threading.Lock()

    def client(process: int) -> None:
        rng = random.Random(process)
        for _ in range(ops_each):
            f = rng.choice(["read", "write", "cas"])
            value = {"read": None, "write": rng.randrange(4), "cas": [rng.randrange(4), rng.randrange(4)]}[f]
            handle = recorder.invoke(process, f, "k", value)
            with lock:
                current = register["k"]
                if f == "write" or f == "cas" and current == value[0]:
                    register["k"] = value if f == "write" else value[1]
            if f == "read":
                recorder.ok(handle, current)
            elif f == "cas" and current != value[0]:
                recorder.fail(handle)
            else:
                recorder.ok(handle)

    workers = [threading.Thread(target=client, args=(p,)) for p in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_recorder_history_of_a_correct_register_is_linearizable(tmp_path: Path) -> None:
    recorder = HistoryRecorder()
    _record_register_clients(recorder)
    events = recorder.events()
    assert len(events) == 2 * 4 * 60
    assert all(a["time"] <= b["time"] for a, b in zip(events, events[1:]))
    assert check_events(events).linearizable is True
    path = tmp_path / "history.jsonl"
    recorder.dump(path)
    assert [json.loads(line) for line in path.read_text().splitlines()] == events
    assert check_file(path).linearizable is True


def test_recorder_rejects_misuse() -> None:
    recorder = HistoryRecorder()
    handle = recorder.invoke(1, "write", "k", 1)
    with pytest.raises(ValueError):
        recorder.invoke(1, "read", "k")  # one operation at a time per process
    recorder.info(handle)
    with pytest.raises(ValueError):
        recorder.ok(handle)  # already completed
    handle = recorder.invoke(1, "read", "k")  # still open at the end: unknown
    with pytest.raises(ValueError):
        recorder.ok(handle)  # a read must say what it returned
    assert [e["type"] for e in recorder.events()] == ["invoke", "info", "invoke"]
    assert check_events(recorder.events()).linearizable is True


def test_cli_round_trip_exit_codes(tmp_path: Path) -> None:
    good = HistoryRecorder()
    handle = good.invoke("a", "write", "k", 1)
    good.ok(handle)
    handle = good.invoke("b", "read", "k")
    good.ok(handle, 1)
    good.dump(tmp_path / "good.jsonl")

    bad = HistoryRecorder()
    handle = bad.invoke("a", "write", "k", 1)
    bad.ok(handle)
    handle = bad.invoke("b", "read", "k")
    bad.ok(handle, None)
    bad.dump(tmp_path / "bad.jsonl")

    run = _run_cli(tmp_path / "good.jsonl")
    assert (run.returncode, run.stdout.strip()) == (0, f"{tmp_path / 'good.jsonl'}: linearizable")
    run = _run_cli(tmp_path / "good.jsonl", tmp_path / "bad.jsonl")
    assert run.returncode == 1
    assert "bad.jsonl: not linearizable" in run.stdout
    assert "b read nil" in run.stdout

    (tmp_path / "broken.jsonl").write_text('{"process": 1, "type": "invoke"\n')
    (tmp_path / "orphan.jsonl").write_text('{"process": 1, "type": "ok", "f": "read", "key": "k"}\n')
    (tmp_path / "empty.log").write_text("nothing to see here\n")
    for name in ["broken.jsonl", "orphan.jsonl", "empty.log", "does-not-exist.log"]:
        run = _run_cli(tmp_path / name)
        assert run.returncode == 2, name
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr


def test_cli_timeout_exit_code(tmp_path: Path) -> None:
    events = []
    for o in _exponential_history():
        events.append({"process": o.process, "type": "invoke", "f": o.f, "key": o.key, "value": o.value})
    for o in _exponential_history():
        events.append({"process": o.process, "type": "ok", "f": o.f, "key": o.key,
                       "value": o.result if o.f == "read" else o.value})
    # the reads run after the writes: move their invokes behind the write completions
    reads = [e for e in events if e["f"] == "read"]
    events = [e for e in events if e["f"] != "read"] + [reads[0], reads[2], reads[1], reads[3]]
    path = tmp_path / "hard.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    run = _run_cli("--timeout", "0.3", path)
    assert run.returncode == 3
    assert run.stdout.strip() == f"{path}: unknown (timed out)"


def test_jepsen_log_parsing(tmp_path: Path) -> None:
    log = "\n".join([
        "INFO  jepsen.core - Running test",
        "INFO  jepsen.util - 0\t:invoke\t:write\t3",
        "INFO  jepsen.util - :nemesis\t:info\t:start\tnil",
        "INFO  jepsen.util - 1   :invoke :cas    [3 4]",
        "INFO  jepsen.util - 0\t:ok\t:write\t3",
        "INFO  jepsen.util - 1\t:info\t:cas\t:timed-out",
        "INFO  jepsen.util - 2\t:invoke\t:read\tnil",
        "INFO  jepsen.util - 2\t:ok\t:read\t4",
        "INFO  jepsen.util - 3\t:invoke\t:write\t5",  # still open at the end
        "",
    ])
    path = tmp_path / "small.log"
    path.write_text(log)
    assert check_file(path).linearizable is True
    path.write_text(log.replace(":read\t4", ":read\tnil"))
    result = check_file(path)
    assert result.linearizable is False and result.key == "register"
    path.write_text(log.replace("2\t:ok\t:read\t4", "7\t:ok\t:read\t4"))
    with pytest.raises(HistoryError):
        check_file(path)
