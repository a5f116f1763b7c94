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
from typing import Any, Callable

from consensus_store import fast_json
from consensus_store.config import ClientToken, NodeConfig, node_api_token
from consensus_store.errors import Forbidden, InvalidRequest
from consensus_store.node import messaging_targets as targets
from consensus_store.node.auth import NODE_TOKEN_NAME
from consensus_store.node.engine import Engine
from consensus_store.node.messaging_inbox import Inbox
from consensus_store.node.messaging_peers import Peers
from consensus_store.node.session_keys import authorize_session, is_admin
from consensus_store.state.commands import is_int

log = logging.getLogger("consensus_store.messaging")

INBOX_IDLE_S = 15.0          # an inbox not polled this long is closed (clients poll every ≤ 10 s)
MAX_POLL_WAIT_S = 10.0
MAX_POLL_MESSAGES = 1000
MAX_CALL_WAIT_S = 60.0
SWEEP_INTERVAL_S = 1.0
MAX_BATCH = 10000            # sessions or envelopes in one node-to-node request
MAX_REMEMBERED = 100000      # sessions whose node is remembered


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
        admin = caller is None or is_admin(caller)      # None: the embedded node itself
        authorize_session(self._engine, session_id, key, admin)
        return session_id

    # ---- sending ------------------------------------------------------------------------------
    async def send(self, body: dict[str, Any], *, many: bool) -> dict[str, Any]:
        """``message_send`` (one receiver) or ``message_broadcast`` (every member)."""
        envelope = _envelope(body, "message")
        to, receivers = targets.targets_of(self._engine, body, many=many)
        results = await self.deliver_many([(session, {**envelope, "to": _to_one(to, label)})
                                           for label, session in receivers])
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
        items = []
        for label, session in receivers:
            call_id = f"{secrets.token_hex(8)}{next(self._call_ids)}@{self.node_id}"
            waiting[label] = (call_id, loop.create_future())
            self._calls[call_id] = waiting[label][1]
            items.append((session, {**envelope, "to": _to_one(to, label), "call": call_id}))
        try:
            sent = await self.deliver_many(items)
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
    async def deliver_many(self, items: list[tuple[int, dict[str, Any]]]) -> list[bool]:
        """Put each envelope into its session's inbox, wherever it lives (one forward per
        peer, not per message); False where no inbox was found or it refused (full)."""
        done: dict[int, bool] = {}
        remote: list[int] = []
        for i, (session, envelope) in enumerate(items):
            if session in self._inboxes:
                done[i] = self._queue(session, envelope) == "ok"
            else:
                remote.append(i)
        if remote:
            by_node = _group(remote, lambda i: self._where.get(items[i][0]))
            unknown = by_node.pop(None, [])
            unknown += await self._forward_batches(items, by_node, done)
            if unknown:
                where = await self._locate({items[i][0] for i in unknown})
                if len(self._where) > MAX_REMEMBERED:      # ended sessions: start over
                    self._where.clear()
                self._where.update(where)
                missing = [i for i in unknown if items[i][0] not in where]
                by_node = _group([i for i in unknown if items[i][0] in where],
                                 lambda i: where[items[i][0]])
                missing += await self._forward_batches(items, by_node, done)
                for i in missing:
                    done[i] = False
                    self.dropped += 1
        return [done[i] for i in range(len(items))]

    async def _forward_batches(self, items: list[tuple[int, dict[str, Any]]],
                               by_node: dict[Any, list[int]], done: dict[int, bool]) -> list[int]:
        """Deliver each node's batch; returns the items whose session was not there."""
        async def one(node: str, batch: list[int]) -> list[int]:
            body = {"kind": "deliver", "items": [{"session": items[i][0],
                                                  "envelope": items[i][1]} for i in batch]}
            answer = await self._peers.ask(node, body)
            results = answer.get("results") if answer is not None else None
            if not isinstance(results, list) or len(results) != len(batch):
                results = ["absent"] * len(batch)
            absent = []
            for i, result in zip(batch, results):
                if result == "absent":
                    self._where.pop(items[i][0], None)
                    absent.append(i)
                else:
                    done[i] = result == "ok"
            return absent
        answers = await asyncio.gather(*(one(node, batch) for node, batch in by_node.items()))
        return [i for absent in answers for i in absent]

    def _queue(self, session: int, envelope: dict[str, Any]) -> str:
        """"ok" (queued, or a duplicate: it was delivered the first time) or "full"."""
        outcome = self._inboxes[session].offer(envelope)
        if outcome == "queued":
            self.sent += 1
        elif outcome == "full":
            self.dropped += 1
            return "full"
        return "ok"

    async def _locate(self, sessions: set[int]) -> dict[int, str]:
        """The peer holding each session's inbox (the most recently polled one, if several)."""
        answers = await self._peers.ask_all({"kind": "locate", "sessions": sorted(sessions)})
        best: dict[int, tuple[float, str]] = {}
        for node, answer in answers.items():
            held = answer.get("idle_s") if answer is not None else None
            for key, idle in (held.items() if isinstance(held, dict) else ()):
                session = int(key) if key.isdigit() else None
                if session in sessions and isinstance(idle, (int, float)):
                    if session not in best or idle < best[session][0]:
                        best[session] = (idle, node)
        return {session: node for session, (_, node) in best.items()}

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
        if kind == "locate":
            sessions = body.get("sessions")
            if (not isinstance(sessions, list) or len(sessions) > MAX_BATCH
                    or not all(is_int(s) for s in sessions)):
                raise InvalidRequest(f"'sessions' must be a list of at most {MAX_BATCH} ids")
            now = _now()
            return {"idle_s": {str(s): self._inboxes[s].idle_for(now) for s in sessions
                               if s in self._inboxes}}
        if kind == "deliver":
            batch = body.get("items")
            if (not isinstance(batch, list) or len(batch) > MAX_BATCH
                    or not all(isinstance(item, dict) and is_int(item.get("session"))
                               and _valid_envelope(item.get("envelope")) for item in batch)):
                raise InvalidRequest(f"'items' must be a list of at most {MAX_BATCH} "
                                     "{session, envelope}")
            return {"results": [self._queue(item["session"], item["envelope"])
                                if item["session"] in self._inboxes else "absent"
                                for item in batch]}
        if kind == "claim":
            session = body.get("session")
            if not is_int(session):
                raise InvalidRequest("'session' must be an integer")
            self._where.pop(session, None)
            inbox = self._inboxes.pop(session, None)
            if inbox is not None:
                self.dropped += len(inbox.queue)
            return {"here": inbox is not None}
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
    return {"from": sender, "seq": seq, "message": body[field],
            "size": len(fast_json.encode(body[field]))}


def _valid_envelope(envelope: Any) -> bool:
    return (isinstance(envelope, dict) and isinstance(envelope.get("from"), str)
            and is_int(envelope.get("seq")) and "message" in envelope
            and is_int(envelope.get("size", 0)) and envelope.get("size", 0) >= 0)


def _group(indexes: list[int], key: Callable[[int], Any]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for i in indexes:
        groups.setdefault(key(i), []).append(i)
    return groups


def _to_one(to: dict[str, Any], label: str) -> dict[str, Any]:
    """The ``to`` of one receiver's envelope (a group send names the member)."""
    return {**to, "member": label} if "group" in to else to
