"""The native client protocol: pipelined, length-prefixed JSON frames over TCP.

The wire format is described (and implemented for both ends) in ``consensus_store.wire``.
Same operations, bodies, limits and errors as the HTTP API (``api.py``), through the same
``KVService``; what differs is the cost: no HTTP parsing, many requests in flight per connection,
answers sent as soon as each completes (matched by id) and written in one batch per loop
iteration (docs/pysyncobj.md, "Client protocol cost").

Per request the node does the least it can: a read that needs no wait (``local``, or ``session``
with a ``min_index`` already applied) is answered inside ``data_received``, without a task; so
is a single-key write that joins a group-commit batch (answered from the batch's callback).  Other
writes, linearizable reads and reads that must wait for the replica run as one task each.

Each request's op must be one the connection's token role allows (``protocol.OPS_ALLOWED``;
403 otherwise, the connection stays open).  When the tokens file is reloaded, a connection looks
its token up again before its next request: a revoked token gets 401 and the connection closes.
Connections that never authenticate are closed after ``AUTH_TIMEOUT_S``.  A connection with
``MAX_IN_FLIGHT`` requests running (tasks and batched writes), or ``limits.max_in_flight_bytes``
of request frames running, or whose peer does not read its answers, is not read from until that
drains.  When a client disconnects, requests it had in flight still run to the end (a write may
already be in the log); their answers are dropped.  The port's connection cap and TLS are
``client_ports``'.
"""
from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any, Coroutine

from consensus_store.config import ClientToken
from consensus_store.errors import (AuthError, ConsensusStoreError, Forbidden, InvalidRequest,
                                    PayloadTooLarge)
from consensus_store.node.api import forbidden_message
from consensus_store.node.client_ports import ClientPort, ConnectionGate
from consensus_store.node.metrics import metrics_for
from consensus_store.node.reads import ReadWait, read_wait
from consensus_store.node.service import KVService
from consensus_store.node.validate import request_timeout
from consensus_store.protocol import OPS, OPS_ALLOWED, Kind
from consensus_store.wire import AUTH_OP, FrameReader, FrameTooLarge, decode, encode_response

log = logging.getLogger("consensus_store.native")

AUTH_TIMEOUT_S = 10.0
UNAUTHENTICATED_MAX_FRAME = 64 * 1024
MAX_IN_FLIGHT = 4096



class NativeServer:
    """Serves the native protocol on ``config.native_address``, in the node's event loop.

    Its ops are ``protocol.OPS`` by name (``put``, ``groups_members``, ``session_open``...),
    dispatched by their kind: reads may be answered inline, batchable writes join a batch,
    everything else runs as a task through ``KVService.call``.
    """

    def __init__(self, service: KVService) -> None:
        self.service = service
        self.max_frame = service.config.limits.max_request_bytes
        # at least one request of the largest size may always run
        self.max_in_flight_bytes = max(service.config.limits.max_in_flight_bytes,
                                       self.max_frame + 1)
        self.connections: set[_Connection] = set()
        self._port: ClientPort | None = None
        self.ops = sorted({AUTH_OP, *OPS})

    async def start(self, gate: ConnectionGate, ssl_context: Any = None) -> None:
        """Listen on ``native_address``: at most ``gate.limit`` connections, over TLS when
        ``ssl_context`` is given (``client_ports``)."""
        address = self.service.config.native_address
        assert address is not None
        self._port = ClientPort("native", lambda: _Connection(self), gate, ssl_context)
        try:
            await self._port.listen(address)
        except OSError as exc:
            self._port = None
            raise OSError(exc.errno, f"native_address {address}: {exc.strerror or exc}") from None

    async def close(self) -> None:
        """Stop listening, drop every connection and cancel the requests they had running."""
        port, self._port = self._port, None
        for connection in list(self.connections):
            connection.abort()
        if port is not None:
            await port.close()


class _Connection(asyncio.Protocol):
    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.service = server.service
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.frames = FrameReader(UNAUTHENTICATED_MAX_FRAME)
        self.authenticated = False
        self.tokens = server.service.tokens
        self.caller: ClientToken | None = None          # set by _admit
        self.allowed: frozenset[str] = frozenset()      # the ops the caller's role allows
        self._supplied = b""                            # the token, looked up again on reload
        self._generation = -1                           # the tokens' generation it was checked in
        self.closed = False
        self.tasks: set[asyncio.Task] = set()
        self.batched = 0                # writes waiting in a group-commit batch (no task)
        self.in_flight_bytes = 0        # frame bytes of the requests running (tasks and batched)
        self.frame_bytes = 0            # size of the frame being handled
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._write_paused = False      # the peer does not read its answers fast enough
        self._reading = True
        self._auth_timer: asyncio.TimerHandle | None = None
        self._timing: dict[int, tuple[str, float]] = {}   # request id -> op, arrival (metrics)
        self._requests = metrics_for(self.service).requests

    # ---- transport events -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self._auth_timer = self.loop.call_later(AUTH_TIMEOUT_S, self._auth_expired)

    def data_received(self, data: bytes) -> None:
        self.frames.feed(data)
        self._handle_frames()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        self._out.clear()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def abort(self) -> None:
        """Server shutdown: cancel running requests and drop the connection."""
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # ---- frames ---------------------------------------------------------------------------------
    def _handle_frames(self) -> None:
        self._flush_scheduled = True    # answers made here go out together, at the end
        try:
            while self._reading and not self.closed:
                frame = self.frames.next()
                if frame is None:
                    break
                self.frame_bytes = len(frame)
                self._handle(frame)
        except FrameTooLarge as exc:
            error: ConsensusStoreError = PayloadTooLarge(str(exc))
            if not self.authenticated:
                error = AuthError('authenticate first: {"id": 0, "op": "auth", "token": ...}')
            self._reply(exc.request_id, error.http_status, error.to_json())
            self._close()
        finally:
            self._flush()

    def _handle(self, frame: bytearray) -> None:
        try:
            message = decode(frame)
        except ValueError as exc:    # includes UnicodeDecodeError
            return self._reject(None, InvalidRequest(f"frame is not valid UTF-8 JSON: {exc}"))
        except RecursionError:
            return self._reject(None, InvalidRequest("frame is JSON nested too deeply"))
        if not isinstance(message, dict):
            return self._reject(None, InvalidRequest("frame must be a JSON object"))
        request_id = message.pop("id", None)
        if type(request_id) is not int:
            return self._reject(None, InvalidRequest("'id' must be an integer"))
        op = message.pop("op", None)    # what is left is the HTTP API's body
        if not self.authenticated or op == AUTH_OP:
            return self._authenticate(request_id, op, message)
        if self._generation != self.tokens.generation and not self._token_still_valid(request_id):
            return
        if type(op) is not str or op not in self.allowed:   # deny by default
            return self._refuse(request_id, op)
        self._timing[request_id] = (op, perf_counter())
        try:
            spec = OPS[op]
            if spec.kind is Kind.READ:
                self._read(request_id, op, message)
            elif spec.batchable:
                self._write(request_id, op, message)
            else:
                self._spawn(request_id, self.service.call(op, message, self.caller))
        except ConsensusStoreError as exc:   # raised before any task started
            self._reply(request_id, exc.http_status, exc.to_json())
        except RecursionError:
            error = InvalidRequest("request is JSON nested too deeply")
            self._reply(request_id, error.http_status, error.to_json())
        except Exception as exc:  # noqa: BLE001 - a bug must not become a dead connection
            self._internal_error(request_id, str(op), exc)

    def _reject(self, request_id: int | None, error: ConsensusStoreError) -> None:
        if not self.authenticated:
            self._authenticate(request_id, None, {})
        else:
            self._reply(request_id, error.http_status, error.to_json())

    def _refuse(self, request_id: int, op: Any) -> None:
        """403 for an op of this server the caller's role does not allow (or the role table
        does not list); 400 for an op this server does not have."""
        if isinstance(op, str) and op in self.server.ops and self.caller is not None:
            error: ConsensusStoreError = Forbidden(forbidden_message(op, self.caller))
            self._timing[request_id] = (op, perf_counter())
        else:
            error = InvalidRequest(f"unknown op {op!r:.40}; ops: {', '.join(self.server.ops)}")
        self._reply(request_id, error.http_status, error.to_json())

    def _admit(self, caller: ClientToken, supplied: bytes) -> None:
        self.caller, self._supplied = caller, supplied
        self.allowed = OPS_ALLOWED[caller.role]
        self._generation = self.tokens.generation

    def _token_still_valid(self, request_id: int) -> bool:
        """The tokens were reloaded since this connection's token was checked: check again (its
        role may have changed too)."""
        caller = self.tokens.lookup(self._supplied)
        if caller is None:
            error = AuthError("this connection's client token was revoked (tokens file reloaded)")
            self._reply(request_id, error.http_status, error.to_json())
            self._close()
            return False
        self._admit(caller, self._supplied)
        return True

    def _authenticate(self, request_id: int | None, op: Any, message: dict[str, Any]) -> None:
        token = message.get("token")
        caller = None
        if op == AUTH_OP and isinstance(token, str) and token.isascii():
            caller = self.tokens.lookup(token.encode())
        if caller is not None:
            self._admit(caller, token.encode())    # a second auth frame switches token
            if not self.authenticated:
                self.authenticated = True
                self.frames.max_size = self.server.max_frame
                if self._auth_timer is not None:
                    self._auth_timer.cancel()
                    self._auth_timer = None
            self._reply(request_id, 200, {"ok": True})
            return
        error = AuthError('missing or wrong client token (first frame: {"id": 0, "op": "auth", '
                          '"token": ...})')
        self._reply(request_id, error.http_status, error.to_json())
        self._close()

    def _auth_expired(self) -> None:
        self._auth_timer = None
        if not self.authenticated and not self.closed:
            error = AuthError(f"no auth frame within {AUTH_TIMEOUT_S:g}s")
            self._reply(None, error.http_status, error.to_json())
            self._close()

    # ---- requests -------------------------------------------------------------------------------
    def _read(self, request_id: int, op: str, message: dict[str, Any]) -> None:
        """Answer at once when the read needs no wait (``reads.read_wait``); else run it as a
        task."""
        wait, _ = read_wait(message, self.service.engine.applied_index)
        coroutine = self.service.call(op, message, self.caller)
        if wait is not ReadWait.NONE:
            self._spawn(request_id, coroutine)
            return
        try:
            coroutine.send(None)
        except StopIteration as done:
            self._reply(request_id, 200, done.value)
        except ConsensusStoreError as exc:
            self._reply(request_id, exc.http_status, exc.to_json())
        except Exception as exc:  # noqa: BLE001 - a bug must not become a dead connection
            self._internal_error(request_id, "read", exc)
        else:   # it did suspend after all: start over in a task (reads have no side effects)
            coroutine.close()
            self._spawn(request_id, self.service.call(op, message, self.caller))

    def _write(self, request_id: int, op: str, message: dict[str, Any]) -> None:
        """Single-key writes join a group-commit batch without a task (a task per write cost
        more than the rest of the write on this thread); the others run as a task."""
        service = self.service
        seconds = service.timeout_s(request_timeout(message))
        command = service.command_for(op, message, caller=self.caller)
        started = self.loop.time()
        size = self.frame_bytes

        def deliver(outcome: Any) -> None:
            self.batched -= 1
            if outcome is None:   # the batch did not confirm it: alone, with the usual retries
                left = max(0.0, seconds - (self.loop.time() - started))
                self.in_flight_bytes -= size     # counted again by _spawn
                self._spawn(request_id, service.write_command(command, left, alone=True), size)
                return
            try:
                _, result = service.engine.applied_answer(*outcome)
            except ConsensusStoreError as exc:
                self._reply(request_id, exc.http_status, exc.to_json())
            else:
                self._reply(request_id, 200, result)
            self._request_ended(size)

        if service.engine.try_write_in_batch(command, seconds, deliver):
            self.batched += 1
            self._request_started(size)
        else:
            self._spawn(request_id, service.write_command(command, seconds))

    def _in_flight(self) -> int:
        return len(self.tasks) + self.batched

    def _request_started(self, size: int) -> None:
        self.in_flight_bytes += size
        if (self._in_flight() >= MAX_IN_FLIGHT
                or self.in_flight_bytes >= self.server.max_in_flight_bytes):
            self._update_reading()          # stop reading until requests drain

    def _request_ended(self, size: int) -> None:
        self.in_flight_bytes -= size
        if (not self._reading and self._in_flight() < MAX_IN_FLIGHT // 2
                and self.in_flight_bytes < self.server.max_in_flight_bytes // 2):
            self._update_reading()

    def _spawn(self, request_id: int, coroutine: Coroutine[Any, Any, dict[str, Any]],
               size: int | None = None) -> None:
        """Run a request as a task; ``size``: its frame's bytes (default: the frame being
        handled)."""
        size = self.frame_bytes if size is None else size
        task = self.loop.create_task(self._run(request_id, coroutine, size))
        self.tasks.add(task)
        self._request_started(size)

    async def _run(self, request_id: int, coroutine: Coroutine[Any, Any, dict[str, Any]],
                   size: int) -> None:
        try:
            body = await coroutine
            status = 200
        except ConsensusStoreError as exc:
            body, status = exc.to_json(), exc.http_status
        except RecursionError:
            body, status = InvalidRequest("request is JSON nested too deeply").to_json(), 400
        except Exception as exc:  # noqa: BLE001 - answered as 500, like the HTTP API
            self._internal_error(request_id, "request", exc)
            body = None
        finally:
            self.tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
        if body is not None:
            self._reply(request_id, status, body)
        self._request_ended(size)

    def _internal_error(self, request_id: int, what: str, exc: Exception) -> None:
        log.error("native %s failed", what, exc_info=exc)
        self._reply(request_id, 500, {"error": "internal", "message": type(exc).__name__})

    # ---- answers ------------------------------------------------------------------------------
    def _reply(self, request_id: int | None, status: int, body: dict[str, Any]) -> None:
        timing = self._timing.pop(request_id, None) if request_id is not None else None
        if timing is not None:
            self._requests.observe(timing[0], status, perf_counter() - timing[1])
        if self.closed:
            return
        body["header"] = self.service.header()
        try:
            data = encode_response(request_id, status, body)
        except (TypeError, ValueError, RecursionError) as exc:
            log.error("native answer not JSON-serialisable: %s", exc)
            data = encode_response(request_id, 500, {"error": "internal",
                                                     "message": "answer is not JSON"})
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write every answer queued since the last flush in one call."""
        self._flush_scheduled = False
        out = self._out
        if out and not self.closed and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _close(self) -> None:
        """Send what is queued, then close (no more frames are handled)."""
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _update_reading(self) -> None:
        reading = (not self._write_paused and self._in_flight() < MAX_IN_FLIGHT
                   and self.in_flight_bytes < self.server.max_in_flight_bytes)
        if reading == self._reading or self.transport is None or self.transport.is_closing():
            return
        self._reading = reading
        if reading:
            self.transport.resume_reading()
            self.loop.call_soon(self._handle_frames)   # frames already buffered
        else:
            self.transport.pause_reading()
