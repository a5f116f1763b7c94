"""The fenced resource of the lock and election checks: what a lock (or a leadership) protects.

``FencedResourceServer`` is a tiny TCP server on 127.0.0.1 (one JSON line per request and per
answer).  Per resource it rejects any write whose token is lower than the highest token it has
accepted, and it records every write, accepted or rejected, as a ``WriteRecord`` with (time,
resource, token, holder, pid).  ``ResourceClient`` is a worker's connection to it.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC is system-wide, so they compare across processes).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
LOCK_RESOURCE = "lock"
ELECTION_RESOURCE = "election"


@dataclass
class WriteRecord:
    t: float                 # monotonic time the resource decided
    resource: str
    token: int
    holder: str
    pid: int
    accepted: bool
    highest: int             # highest token accepted before this write

    def describe(self) -> str:
        verdict = "accepted" if self.accepted else f"REJECTED (highest {self.highest})"
        return f"t={self.t:.3f} {self.resource}: {self.holder} (pid {self.pid}) token {self.token} {verdict}"


class FencedResourceServer:
    """Per resource: rejects a token lower than the highest one accepted; logs every write.

    A context manager; ``address`` is ``127.0.0.1:PORT``.  Each connection has its own thread;
    decisions are serialised by one lock, so the record order is the decision order.
    """

    def __init__(self, log_path: Path | None = None) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.address = f"{HOST}:{self._sock.getsockname()[1]}"
        self._lock = threading.Lock()
        self._highest: dict[str, int] = {}
        self._records: list[WriteRecord] = []
        self._log = open(log_path, "a") if log_path is not None else None
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, name="fenced-resource",
                                        daemon=True)
        self._thread.start()

    def write(self, resource: str, token: int, holder: str, pid: int = 0) -> tuple[bool, int]:
        """Decide one write (also callable in-process); returns (accepted, highest before)."""
        with self._lock:
            highest = self._highest.get(resource, 0)
            accepted = token >= highest
            if accepted:
                self._highest[resource] = token
            record = WriteRecord(time.monotonic(), resource, token, holder, pid, accepted, highest)
            self._records.append(record)
            if self._log is not None:
                self._log.write(json.dumps(asdict(record)) + "\n")
        return accepted, highest

    def records(self, resource: str | None = None) -> list[WriteRecord]:
        with self._lock:
            return [r for r in self._records if resource is None or r.resource == resource]

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rwb") as stream:
                for line in stream:
                    if self._stop.is_set():
                        return
                    request = json.loads(line)
                    accepted, highest = self.write(str(request["resource"]), int(request["token"]),
                                                   str(request["holder"]), int(request.get("pid", 0)))
                    stream.write(json.dumps({"accepted": accepted, "highest": highest}).encode()
                                 + b"\n")
                    stream.flush()
        except (OSError, ValueError, KeyError):
            return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(2)
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> "FencedResourceServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResourceClient:
    """A worker's connection to the fenced resource (reconnects after an error)."""

    def __init__(self, address: str, holder: str, timeout: float = 5.0) -> None:
        host, _, port = address.rpartition(":")
        self._address = (host, int(port))
        self.holder = holder
        self._timeout = timeout
        self._stream: Any = None
        self._sock: socket.socket | None = None

    def write(self, resource: str, token: int) -> tuple[bool, int]:
        """(accepted, highest before); raises OSError when the resource cannot be reached."""
        try:
            if self._stream is None:
                self._sock = socket.create_connection(self._address, self._timeout)
                self._stream = self._sock.makefile("rwb")
            request = {"resource": resource, "token": token, "holder": self.holder,
                       "pid": os.getpid()}
            self._stream.write(json.dumps(request).encode() + b"\n")
            self._stream.flush()
            line = self._stream.readline()
            if not line:
                raise ConnectionError("resource closed the connection")
            answer = json.loads(line)
            return bool(answer["accepted"]), int(answer["highest"])
        except (OSError, ValueError):
            self.close()
            raise OSError("fenced resource unreachable") from None

    def close(self) -> None:
        for thing in (self._stream, self._sock):
            try:
                if thing is not None:
                    thing.close()
            except OSError:
                pass
        self._stream = self._sock = None
