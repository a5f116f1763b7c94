"""The classic Erlang leader demo on consensus_store.

Three worker processes join the group "pool" and campaign in the election "pool"; one leads.
The demo kills the leader with -9, another worker takes over (after the dead one's session TTL),
then restarts the killed worker, which rejoins as a follower.

    python tools/pool_demo.py                 # starts a throwaway 3-node cluster
    python tools/pool_demo.py --config cluster_configs/local/node1.toml   # use a running one
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from consensus_store.client import Client
from consensus_store.launcher import LocalCluster, write_cluster_configs
from consensus_store.testing.polling import poll_until

REPO = Path(__file__).resolve().parents[1]

SESSION_TTL_S = 2.0


def worker(endpoints: str, token: str, name: str) -> None:
    """One pool worker: join, campaign, report leadership changes until killed."""
    client = Client(endpoints.split(","), token=token, session_ttl=SESSION_TTL_S)
    client.groups.create("pool")
    client.groups.join("pool", member=name)
    election = client.election("pool")
    election.campaign(name, block=False)
    for leader in election.observe():
        if leader is None:
            continue
        role = "LEADER" if leader.member == name else f"follower of {leader.member}"
        print(json.dumps({"worker": name, "role": role, "token": leader.token}), flush=True)


class Demo:
    def __init__(self, endpoints: list[str], token: str) -> None:
        self.endpoints, self.token = endpoints, token
        self.workers: dict[str, subprocess.Popen] = {}
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.2f}s] {text}", flush=True)

    def start_worker(self, name: str) -> None:
        process = subprocess.Popen(
            [sys.executable, __file__, "--worker", name, "--endpoints", ",".join(self.endpoints),
             "--token", self.token], stdout=subprocess.PIPE, text=True)
        self.workers[name] = process
        threading.Thread(target=self._relay, args=(name, process), daemon=True).start()
        self.say(f"started {name} (pid {process.pid})")

    def _relay(self, name: str, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            event = json.loads(line)
            self.say(f"{event['worker']}: {event['role']} (leadership token {event['token']})")

    def leader(self, client: Client, exclude: str = "", timeout: float = 30.0) -> str:
        def elected() -> str | None:
            leader = client.election("pool").leader(consistency="linearizable")
            return leader.member if leader is not None and leader.member != exclude else None
        found = poll_until(elected, timeout)
        if found is None:
            raise SystemExit("no leader elected in time")
        return found

    def run(self) -> None:
        with Client(self.endpoints, token=self.token) as client:
            for name in ("worker-a", "worker-b", "worker-c"):
                self.start_worker(name)
            first = self.leader(client)
            members = [m.id for m in client.groups.members("pool", consistency="linearizable")]
            self.say(f"pool members: {members}; leader: {first}")
            time.sleep(1.0)
            self.workers[first].send_signal(signal.SIGKILL)
            self.workers[first].wait()
            killed_at = time.monotonic()
            self.say(f"kill -9 {first}")
            second = self.leader(client, exclude=first)
            self.say(f"{second} took over {time.monotonic() - killed_at:.2f}s after the kill "
                     f"(session TTL {SESSION_TTL_S}s)")
            self.start_worker(first)
            poll_until(lambda: first in [m.id for m in client.groups.members(
                "pool", consistency="linearizable")], 20)
            time.sleep(1.0)
            self.say(f"{first} rejoined; leader is still {self.leader(client)}")
        for process in self.workers.values():
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="node config of a running cluster")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.endpoints, args.token, args.worker)
        return
    if args.config:
        client = Client.from_config(args.config, protocol="http")
        Demo(client.endpoints, client._token).run()
        return
    root = Path(tempfile.mkdtemp(prefix="pool-demo-"))
    cluster = LocalCluster(write_cluster_configs(root / "configs", 3), data_root=root / "data")
    try:
        cluster.start()
        cluster.wait_for_leader(30)
        Demo(cluster.endpoints, cluster.token).run()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
