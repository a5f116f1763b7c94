"""Group messaging outside the Raft log (docs/messaging.md): send, broadcast, calls and inboxes.

Where a session lives: on the node its client long-polls its inbox on (``inbox_poll``).  The
first poll there opens the inbox and tells the other nodes (``claim``), which drop any inbox
of that session they still hold; an inbox nobody polled for ``INBOX_IDLE_S`` is closed.  A
node sending to a session looks in its own inboxes, then at the node it last found it on,
then asks every peer (``locate``) and remembers the answer.

Delivery is at most once and in order per (sender, receiver): see ``messaging_inbox``.  A
call's envelope carries an id naming the caller's node; the reply goes to that node, which
answers the waiting request once and drops any later reply.  A node that dies takes its
inboxes and its waiting calls with it: a caller on it sees its request fail (and a retry
elsewhere finds the message already delivered: no duplicate, no reply); a receiver on it
never answers, so its caller reports it in ``no_reply`` after the timeout.

Counters (plain ints, for metrics): ``sent`` envelopes queued into this node's inboxes,
``dropped`` envelopes refused here (a full inbox, or no inbox found for the receiver).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import ssl
from typing import Any

from consensus_store.config import ClientToken, NodeConfig, node_api_token
from consensus_store.errors import Forbidden, InvalidRequest, NotFound
from consensus_store.node import messaging_targets as targets
from consensus_store.node.auth import NODE_TOKEN_NAME
from consensus_store.node.engine import Engine
from consensus_store.node.messaging_inbox import Inbox
from consensus_store.node.messaging_peers import Peers
from consensus_store.state.commands import is_int
from consensus_store.state.sessions import hash_session_key

log = logging.getLogger("consensus_store.messaging")

INBOX_IDLE_S = 15.0          # an inbox not polled this long is closed (clients poll every ≤ 10 s)
MAX_POLL_WAIT_S = 10.0
MAX_POLL_MESSAGES = 1000
MAX_CALL_WAIT_S = 60.0
SWEEP_INTERVAL_S = 1.0


class MessageHub:
    def __init__(self, config: NodeConfig, engine: Engine,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.node_id = config.id
        self._engine = engine
        api_by_node = {p.id: f"{config.scheme}://{p.api_address}" for p in config.peers}
        self._peers = Peers(api_by_node, node_api_token(config.peer_secret), ssl_context)
        self._inboxes: dict[int, Inbox] = {}
        self._where: dict[int, str] = {}            # session -> node it was last found on
        self._calls: dict[str, asyncio.Future[Any]] = {}
        self._call_ids = itertools.count(1)
        self._sweeper: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self._peers.close()

    # ---- receiving ----------------------------------------------------------------------------
    async def poll(self, body: dict[str, Any], caller: ClientToken | None) -> dict[str, Any]:
        """The next messages of the caller's session (waiting up to ``wait`` for one)."""
        session = self._authorized_session(body, caller)
        wait = _number(body, "wait", 5.0, MAX_POLL_WAIT_S)
        limit = body.get("max", 100)
        if not is_int(limit) or not 1 <= limit <= MAX_POLL_MESSAGES:
            raise InvalidRequest(f"'max' must be an integer in [1, {MAX_POLL_MESSAGES}]")
        inbox = self._open_inbox(session)
        inbox.polling += 1
        try:
            await inbox.wait(wait)
        finally:
            inbox.polling -= 1
            inbox.last_poll = _now()
        return {"messages": inbox.take(limit)}

    def _open_inbox(self, session: int) -> Inbox:
        inbox = self._inboxes.get(session)
        if inbox is None:
            inbox = self._inboxes[session] = Inbox(session, _now())
            self._where.pop(session, None)
            self._start_sweeper()
            self._peers.spawn_all({"kind": "claim", "session": session})
        return inbox

    def _authorized_session(self, body: dict[str, Any], caller: ClientToken | None) -> int:
        session_id, key = body.get("session"), body.get("session_key")
        if not is_int(session_id):
            raise InvalidRequest("'session' must be an integer")
        if key is not None and not isinstance(key, str):
            raise InvalidRequest("'session_key' must be a string")
        session = None
        if self._engine.started:
            with self._engine.reading() as machine:
                session = machine.sessions.get(session_id)
        if session is None:
            raise NotFound(f"session {session_id} not found (expired or closed)")
        admin = caller is None or caller.role.value == "admin"
        if not admin and not session.opened_with(None if key is None else hash_session_key(key)):
            raise Forbidden(f"wrong or missing session key for session {session_id}")
        return session_id

    # ---- sending ------------------------------------------------------------------------------
    async def send(self, body: dict[str, Any], *, many: bool) -> dict[str, Any]:
        """``message_send`` (one receiver) or ``message_broadcast`` (every member)."""
        envelope = _envelope(body, "message")
        to, receivers = targets.targets_of(self._engine, body, many=many)
        results = await asyncio.gather(*(self.deliver(session, {**envelope, "to": _to_one(to, label)})
                                         for label, session in receivers))
        if not many:
            return {"delivered": bool(results and results[0])}
        return {"delivered": [label for (label, _), ok in zip(receivers, results) if ok],
                "undelivered": [label for (label, _), ok in zip(receivers, results) if not ok]}

    async def call(self, body: dict[str, Any]) -> dict[str, Any]:
        """``message_call``: deliver ``request`` to each receiver and wait ``wait`` seconds for
        their replies."""
        envelope = _envelope(body, "request")
        wait = _number(body, "wait", 5.0, MAX_CALL_WAIT_S)
        to, receivers = targets.targets_of(self._engine, body, many=True)
        loop = asyncio.get_running_loop()
        waiting: dict[str, tuple[str, asyncio.Future[Any]]] = {}

        async def ask(label: str, session: int) -> bool:
            call_id = f"{secrets.token_hex(8)}{next(self._call_ids)}@{self.node_id}"
            future = self._calls[call_id] = loop.create_future()
            waiting[label] = (call_id, future)
            return await self.deliver(session, {**envelope, "to": _to_one(to, label),
                                                "call": call_id})

        try:
            sent = await asyncio.gather(*(ask(label, s) for label, s in receivers))
            bad = [label for (label, _), ok in zip(receivers, sent) if not ok]
            pending = [f for label, (_, f) in waiting.items() if label not in bad]
            if pending:
                await asyncio.wait(pending, timeout=wait)
            replies = {label: f.result() for label, (_, f) in waiting.items()
                       if label not in bad and f.done()}
            no_reply = [label for label in waiting if label not in bad and label not in replies]
            return {"replies": replies, "bad_members": bad, "no_reply": no_reply}
        finally:
            for call_id, future in waiting.values():
                self._calls.pop(call_id, None)
                future.cancel()

    async def reply(self, body: dict[str, Any], caller: ClientToken | None) -> dict[str, Any]:
        """``message_reply``: the answer of a call this session received."""
        self._authorized_session(body, caller)
        call_id = body.get("call")
        if not isinstance(call_id, str) or "@" not in call_id or len(call_id) > 600:
            raise InvalidRequest("'call' must be the call id of a message received")
        node = call_id.split("@", 1)[1]
        if node == self.node_id:
            return {"delivered": self._answer(call_id, body.get("value"))}
        if not self._peers.knows(node):
            raise InvalidRequest(f"'call' names an unknown node {node!r:.80}")
        answer = await self._peers.ask(node, {"kind": "reply", "call": call_id,
                                              "value": body.get("value")})
        return {"delivered": bool(answer and answer.get("delivered"))}

    def _answer(self, call_id: str, value: Any) -> bool:
        future = self._calls.get(call_id)
        if future is None or future.done():
            return False          # timed out, or answered already: at most one reply counts
        future.set_result(value)
        return True

    # ---- delivery -----------------------------------------------------------------------------
    async def deliver(self, session: int, envelope: dict[str, Any]) -> bool:
        """Put ``envelope`` into ``session``'s inbox, wherever it lives; False if none was
        found or it refused (full)."""
        if session in self._inboxes:
            return self._queue(session, envelope)
        node = self._where.get(session)
        if node is not None:
            answer = await self._peers.ask(node, {"kind": "deliver", "session": session,
                                                  "envelope": envelope})
            if answer is not None and answer.get("here"):
                return bool(answer.get("delivered"))
            self._where.pop(session, None)
        node = await self._locate(session)
        if node is None:
            self.dropped += 1
            return False
        self._where[session] = node
        answer = await self._peers.ask(node, {"kind": "deliver", "session": session,
                                              "envelope": envelope})
        return bool(answer and answer.get("delivered"))

    def _queue(self, session: int, envelope: dict[str, Any]) -> bool:
        outcome = self._inboxes[session].offer(envelope)
        if outcome == "queued":
            self.sent += 1
        elif outcome == "full":
            self.dropped += 1
        return outcome != "full"      # a duplicate was delivered the first time

    async def _locate(self, session: int) -> str | None:
        """The peer holding ``session``'s inbox (the most recently polled one, if several)."""
        answers = await self._peers.ask_all({"kind": "locate", "session": session})
        holders = [(a["idle_s"], node) for node, a in answers.items()
                   if a is not None and a.get("here") and isinstance(a.get("idle_s"),
                                                                      (int, float))]
        return min(holders)[1] if holders else None

    # ---- what other nodes ask (op message_forward, node token only) ----------------------------
    async def forwarded(self, body: dict[str, Any], caller: ClientToken | None) -> dict[str, Any]:
        if caller is not None and caller.name != NODE_TOKEN_NAME:
            raise Forbidden("message_forward is for the cluster's nodes only")
        kind = body.get("kind")
        if kind == "reply":
            call_id = body.get("call")
            if not isinstance(call_id, str):
                raise InvalidRequest("'call' must be a string")
            return {"delivered": self._answer(call_id, body.get("value"))}
        session = body.get("session")
        if not is_int(session):
            raise InvalidRequest("'session' must be an integer")
        inbox = self._inboxes.get(session)
        if kind == "locate":
            return {"here": inbox is not None,
                    "idle_s": None if inbox is None else inbox.idle_for(_now())}
        if kind == "claim":
            self._where.pop(session, None)
            return {"here": self._inboxes.pop(session, None) is not None}
        if kind == "deliver":
            envelope = body.get("envelope")
            if not _valid_envelope(envelope):
                raise InvalidRequest("'envelope' must be a message envelope")
            if inbox is None:
                return {"here": False, "delivered": False}
            return {"here": True, "delivered": self._queue(session, envelope)}
        raise InvalidRequest("'kind' must be locate, deliver, claim or reply")

    # ---- housekeeping -------------------------------------------------------------------------
    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while self._inboxes:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                self.close_idle(_now())
            except Exception:  # noqa: BLE001 - the sweeper must outlive one bad round
                log.exception("inbox sweep failed")

    def close_idle(self, now: float) -> None:
        """Close inboxes nobody polled for ``INBOX_IDLE_S`` and those of ended sessions."""
        live = set()
        if self._engine.started:
            with self._engine.reading() as machine:
                live = {s for s in self._inboxes if machine.sessions.get(s) is not None}
        for session, inbox in list(self._inboxes.items()):
            if session not in live or inbox.idle_for(now) > INBOX_IDLE_S:
                del self._inboxes[session]
                self.dropped += len(inbox.queue)

    def inbox_count(self) -> int:
        return len(self._inboxes)


def _now() -> float:
    return asyncio.get_running_loop().time()


def _number(body: dict[str, Any], field: str, default: float, most: float) -> float:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= most:
        raise InvalidRequest(f"'{field}' must be a number of seconds in [0, {most:g}]")
    return float(value)


def _envelope(body: dict[str, Any], field: str) -> dict[str, Any]:
    sender, seq = body.get("sender"), body.get("seq")
    if not isinstance(sender, str) or not 1 <= len(sender) <= 128:
        raise InvalidRequest("'sender' must be a string of 1 to 128 chars (the client's id)")
    if not is_int(seq) or seq < 1:
        raise InvalidRequest("'seq' must be a positive integer (the sender's message number)")
    if field not in body:
        raise InvalidRequest(f"'{field}' is required")
    return {"from": sender, "seq": seq, "message": body[field]}


def _valid_envelope(envelope: Any) -> bool:
    return (isinstance(envelope, dict) and isinstance(envelope.get("from"), str)
            and is_int(envelope.get("seq")) and "message" in envelope)


def _to_one(to: dict[str, Any], label: str) -> dict[str, Any]:
    """The ``to`` of one receiver's envelope (a group send names the member)."""
    return {**to, "member": label} if "group" in to else to
