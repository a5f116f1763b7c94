"""Network namespaces as separate hosts, for tests (Linux, root, iproute2's ``ip``).

``NamespaceHosts(3)`` makes one namespace per host, each with its own interface and address
(10.200.0.1, .2, .3 by default) and its own loopback, plus a hub namespace holding the bridge
that joins them, so nothing is added to the namespace the tests run in.  A process started
under ``exec_prefix(i)`` (``ip netns exec NAME``, which execs: its PID is the process's own)
sees only its host's addresses and reaches the others over the bridge, as separate machines
would.  With ``hostnames``, each namespace also gets an ``/etc/hosts`` naming every host
(``/etc/netns/NAME/hosts``, which ``ip netns exec`` mounts over ``/etc/hosts``): hosts that
find each other by DNS name.  ``delete`` removes exactly the namespaces and files it created;
the interfaces and the bridge go with their namespaces.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

IP_TIMEOUT_S = 10.0
NETNS_ETC = Path("/etc/netns")      # ip netns exec: /etc/netns/NAME/FILE over /etc/FILE


class NamespaceError(RuntimeError):
    """An ``ip`` command failed (its stderr in the message)."""


def _ip(*arguments: str) -> None:
    done = subprocess.run(["ip", *arguments], capture_output=True, text=True,
                          timeout=IP_TIMEOUT_S)
    if done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(arguments)}: {done.stderr.strip()}")


def unavailable_reason() -> str | None:
    """Why this machine cannot make namespace hosts (a test's skip reason), or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CAP_SYS_ADMIN)"
    if shutil.which("ip") is None:
        return "no 'ip' command (iproute2)"
    probe = f"cs-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (NamespaceError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace here: {exc}"
    try:
        _ip("netns", "delete", probe)
    except (NamespaceError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot delete a network namespace here: {exc}"
    return None


class NamespaceHosts:
    """``count`` hosts on one private /24 (``subnet``.1 .. ``subnet``.count)."""

    def __init__(self, count: int, subnet: str = "10.200.0",
                 hostnames: list[str] | None = None) -> None:
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.hub = f"cs-hub-{tag}"
        self.names = [f"cs-host{i + 1}-{tag}" for i in range(count)]
        self.addresses = [f"{subnet}.{i + 1}" for i in range(count)]
        self.hostnames = hostnames
        self._created: list[str] = []
        self._created_paths: list[Path] = []     # deleted in reverse: files, then their dirs

    def __enter__(self) -> "NamespaceHosts":
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def create(self) -> None:
        try:
            self._add(self.hub)
            _ip("-n", self.hub, "link", "add", "hub", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "hub", "up")
            for position, (name, address) in enumerate(zip(self.names, self.addresses)):
                self._add(name)
                port = f"port{position + 1}"    # the hub's end of this host's cable
                _ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                    "netns", name)
                _ip("-n", self.hub, "link", "set", port, "master", "hub", "up")
                _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", name, "link", "set", "eth0", "up")
                _ip("-n", name, "link", "set", "lo", "up")
            if self.hostnames is not None:
                self._write_hosts_files()
        except BaseException:
            self.delete()
            raise

    def _add(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)

    def _write_hosts_files(self) -> None:
        assert self.hostnames is not None
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{a} {h}" for a, h in zip(self.addresses, self.hostnames)]
        self._make_dir(NETNS_ETC)
        for name in self.names:
            self._make_dir(NETNS_ETC / name)
            hosts = NETNS_ETC / name / "hosts"
            hosts.write_text("\n".join(lines) + "\n")
            self._created_paths.append(hosts)

    def _make_dir(self, path: Path) -> None:
        if not path.exists():
            path.mkdir(mode=0o755)
            self._created_paths.append(path)

    def exec_prefix(self, position: int) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.names[position])

    def delete(self) -> None:
        """Delete the namespaces this object created (processes in them must be gone first:
        a namespace lives on while a process holds it)."""
        errors = []
        while self._created:
            name = self._created.pop()
            try:
                _ip("netns", "delete", name)
            except (NamespaceError, OSError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
        while self._created_paths:
            path = self._created_paths.pop()
            try:
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:    # /etc/netns, shared with other users
                    errors.append(f"{path}: {exc}")
        if errors:
            raise NamespaceError("; ".join(errors))
