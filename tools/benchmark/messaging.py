"""Group messaging bench (docs/messaging.md): broadcast to M members, multi_call round trips.

    python tools/benchmark/messaging.py [--members 100] [--processes 4] [--rounds 20]
                                        [--calls 300] [--wide-calls 30] [--native]

Starts a throwaway 3-node cluster on loopback, then ``--processes`` member processes hosting
``--members`` members in all (each member its own client, session and inbox, on the nodes in
turn); the sender is this process, on node 1.  Measured:
- broadcast: the time from just before ``groups.broadcast`` until the last member has the
  message (each member notes its receive time; one machine, one clock), and the per-member
  p50; ``--rounds`` rounds;
- multi_call to one member on another node: the call's round trip, ``--calls`` calls;
- multi_call to every member: the call's round trip, ``--wide-calls`` calls.
Every wait is bounded; the member processes are ended by PID.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from consensus_store.client import Client  # noqa: E402
from consensus_store.launcher import LocalCluster, write_cluster_configs  # noqa: E402
from consensus_store.testing.polling import wait_until  # noqa: E402

GROUP = "bench"
ROUND_TIMEOUT_S = 20.0


def member_process(endpoints: list[str], token: str, names: list[str],
                   report: "multiprocessing.Queue[Any]", stop: Any) -> None:
    """Host ``names`` as members (one client each, on ``endpoints`` in turn); put
    (name, message, receive time) on ``report`` for each message; reply to calls."""
    clients = []
    for i, name in enumerate(names):
        client = Client([endpoints[i % len(endpoints)]], token=token, session_ttl=10.0)
        client.inbox().open()
        client.groups.join(GROUP, member=name)

        def on_message(message: Any, name: str = name) -> None:
            if message.is_call:
                message.reply(name)
            else:
                report.put((name, message.message, time.time()))
        clients.append((client, client.on_message(on_message)))
    report.put(("ready", len(clients), time.time()))
    stop.wait(600)
    for client, handler in clients:
        handler.stop(0)
        client.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python tools/benchmark/messaging.py")
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--wide-calls", type=int, default=30)
    parser.add_argument("--native", action="store_true", help="clients use tcp:// endpoints")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cs-msg-bench-") as tmp:
        root = Path(tmp)
        cluster = LocalCluster(write_cluster_configs(root / "configs", 3), data_root=root / "d")
        cluster.start()
        processes: list[multiprocessing.Process] = []
        stop = multiprocessing.Event()
        try:
            cluster.wait_for_leader(30)
            run(cluster, args, processes, stop)
        finally:
            stop.set()
            for process in processes:
                process.join(10)
                if process.is_alive() and process.pid is not None:
                    process.kill()          # by its own PID
            cluster.stop()


def endpoints_of(cluster: LocalCluster, native: bool) -> list[str]:
    if not native:
        return cluster.endpoints
    return [f"tcp://{n.config.native_address}" for n in cluster.nodes.values()]


def run(cluster: LocalCluster, args: argparse.Namespace,
        processes: list[multiprocessing.Process], stop: Any) -> None:
    endpoints = endpoints_of(cluster, args.native)
    report: multiprocessing.Queue[Any] = multiprocessing.Queue()
    names = [f"m{i:03d}" for i in range(args.members)]
    with Client([endpoints[0]], token=cluster.token) as sender:
        sender.groups.create(GROUP)
        share = (len(names) + args.processes - 1) // args.processes
        for p in range(args.processes):
            part = names[p * share:(p + 1) * share]
            if part:
                process = multiprocessing.Process(
                    target=member_process, args=(endpoints[1:] + endpoints[:1], cluster.token,
                                                 part, report, stop), daemon=True)
                process.start()
                processes.append(process)
        ready = 0
        deadline = time.monotonic() + 120
        while ready < len(names):
            kind, count, _ = report.get(timeout=max(1.0, deadline - time.monotonic()))
            if kind == "ready":
                ready += count
        wait_until(lambda: len(sender.groups.members(GROUP)) == len(names), 30, "members")
        print(f"{len(names)} members in {len(processes)} processes, 3-node cluster, "
              f"{'native' if args.native else 'HTTP'} clients")
        broadcast_rounds(sender, report, names, args.rounds)
        calls(sender, names, args)


def broadcast_rounds(sender: Client, report: "multiprocessing.Queue[Any]", names: list[str],
                     rounds: int) -> None:
    to_all, per_member = [], []
    for r in range(rounds):
        started = time.time()
        result = sender.groups.broadcast(GROUP, r)
        assert not result.undelivered, result.undelivered
        got: dict[str, float] = {}
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        while len(got) < len(names) and time.monotonic() < deadline:
            name, message, at = report.get(timeout=ROUND_TIMEOUT_S)
            if message == r:
                got[name] = at
        assert len(got) == len(names), f"round {r}: {len(got)} of {len(names)} got it"
        to_all.append(max(got.values()) - started)
        per_member.extend(at - started for at in got.values())
    print(f"broadcast to {len(names)}: delivery to all p50 {ms(statistics.median(to_all))}, "
          f"p99 {ms(percentile(to_all, 0.99))}, max {ms(max(to_all))} ({rounds} rounds); "
          f"per member p50 {ms(statistics.median(per_member))}, "
          f"p99 {ms(percentile(per_member, 0.99))}")


def calls(sender: Client, names: list[str], args: argparse.Namespace) -> None:
    one: list[float] = []
    target = names[0]                  # lives on node 2; the sender's node is node 1
    for _ in range(args.calls):
        started = time.perf_counter()
        reply = call_member(sender, target)
        one.append(time.perf_counter() - started)
        assert reply == target, reply
    print(f"call to one member (another node): p50 {ms(statistics.median(one))}, "
          f"p99 {ms(percentile(one, 0.99))} ({len(one)} calls)")
    wide = []
    for _ in range(args.wide_calls):
        started = time.perf_counter()
        result = sender.groups.multi_call(GROUP, "ping", timeout=5)
        wide.append(time.perf_counter() - started)
        assert len(result.replies) == len(names), result.not_answering
    print(f"multi_call to {len(names)} members: p50 {ms(statistics.median(wide))}, "
          f"p99 {ms(percentile(wide, 0.99))} ({len(wide)} calls)")


def call_member(sender: Client, member: str) -> Any:
    """One member's reply, by the op the group calls use (``message_call`` with a member)."""
    from consensus_store.api.messaging import call_one
    return call_one(sender, {"group": GROUP, "member": member}, member, "ping", 5.0)


if __name__ == "__main__":
    main(sys.argv[1:])
