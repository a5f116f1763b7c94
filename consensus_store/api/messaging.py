"""Messaging between sessions outside the Raft log, pg2-style (docs/messaging.md), and the
leader's view of the nodes.

A receiver is a session: members, registered names and election candidates belong to one.  It
reads its messages with ``client.inbox()`` (a long poll on one node: the node its session
"lives on" while it polls) and answers a call with ``msg.reply(value)``.  Every message a
client sends carries the client's sender id and the next number of its counter; receivers keep
the highest number seen per sender, so delivery is at most once and in order per (sender,
receiver), retries included.  Over the ``Requester`` protocol only.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from consensus_store.api.requester import JsonObject, Requester
from consensus_store.api.session import Session
from consensus_store.errors import ConsensusStoreError, NotFound, Timeout

log = logging.getLogger("consensus_store.messaging")

DEFAULT_CALL_TIMEOUT_S = 5.0
POLL_WAIT_S = 5.0          # one long poll; the node closes an inbox not polled for 15 s
REQUEST_MARGIN_S = 5.0     # a request outlives the wait it carries
MAX_SENDERS_REMEMBERED = 10000
# The node answers from a replica that has seen this client's writes (its session, its joins).
SEEN = {"consistency": "session"}


class Sender:
    """One client's sender id and message counter (thread-safe)."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def stamp(self, body: JsonObject) -> JsonObject:
        with self._lock:
            seq = next(self._numbers)
        return {**body, "sender": self.id, "seq": seq, **SEEN}


_SENDERS_LOCK = threading.Lock()


def sender_of(api: object) -> Sender:
    """The sender of ``api`` (made on first use, kept on the requester object)."""
    sender = getattr(api, "_message_sender", None)
    if sender is None:
        with _SENDERS_LOCK:
            sender = getattr(api, "_message_sender", None)
            if sender is None:
                sender = Sender()
                setattr(api, "_message_sender", sender)
    return sender


@dataclass(frozen=True)
class MultiCall:
    """What a ``multi_call`` got: ``replies`` by member, ``bad_members`` (no inbox found, or
    a full one: the request was not delivered) and ``no_reply`` (delivered, no answer in
    time: the member is slow, stuck or dead)."""
    replies: dict[str, Any]
    bad_members: list[str]
    no_reply: list[str]

    @property
    def not_answering(self) -> list[str]:
        return [*self.bad_members, *self.no_reply]

    @classmethod
    def from_json(cls, body: JsonObject) -> "MultiCall":
        return cls(dict(body["replies"]), list(body["bad_members"]), list(body["no_reply"]))


@dataclass(frozen=True)
class Broadcast:
    """Members whose inbox took the message, and those it did not reach."""
    delivered: list[str]
    undelivered: list[str]


@dataclass(frozen=True)
class NodeInfo:
    id: str
    api_address: str
    up: bool
    leader: bool
    replica: bool = False      # a read replica connected to the leader (not a voter)


@dataclass(frozen=True)
class NodeEvent:
    """``nodeup`` or ``nodedown`` of ``node``, as the leader sees its peers."""
    type: str
    node: str


@dataclass
class Message:
    """A received message: ``message`` from ``sender`` (a client id), sent ``to`` a member
    ({"group", "member"}), a name ({"name"}) or an election's leader ({"election",
    "member"}).  ``call_id`` is set when the sender waits for ``reply``."""
    sender: str
    seq: int
    to: dict[str, Any]
    message: Any
    call_id: str | None = None
    _reply: Callable[[str, Any], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def is_call(self) -> bool:
        return self.call_id is not None

    def reply(self, value: Any) -> Any:
        """Answer this call (True if the caller still waited for it; only the first reply
        counts).  The asyncio client's messages return a coroutine here."""
        if self.call_id is None or self._reply is None:
            raise NotFound("this message is not a call: there is no one to reply to")
        return self._reply(self.call_id, value)


def message_from(envelope: JsonObject, reply: Callable[[str, Any], Any]) -> Message:
    return Message(envelope["from"], envelope["seq"], envelope.get("to") or {},
                   envelope.get("message"), envelope.get("call"), reply)


class SeenSenders:
    """The receiving client's own check of (sender, seq): a message is yielded once and in
    order even if its inbox moved between nodes."""

    def __init__(self) -> None:
        self._last: OrderedDict[str, int] = OrderedDict()

    def fresh(self, envelope: JsonObject) -> bool:
        sender, seq = envelope.get("from"), envelope.get("seq")
        if not isinstance(sender, str) or type(seq) is not int:
            return False
        if self._last.get(sender, 0) >= seq:
            return False
        self._last[sender] = seq
        self._last.move_to_end(sender)
        if len(self._last) > MAX_SENDERS_REMEMBERED:
            self._last.popitem(last=False)
        return True


# ---- bodies, shared by the blocking and the asyncio calls ---------------------------------------
def call_body(api: object, to: JsonObject, request: Any, timeout: float) -> JsonObject:
    return sender_of(api).stamp({**to, "request": request, "wait": timeout})


def only_reply(result: JsonObject, who: str, timeout: float) -> Any:
    """The one reply of a call to a name or an election's leader."""
    call = MultiCall.from_json(result)
    if call.replies:
        return next(iter(call.replies.values()))
    if call.bad_members:
        raise NotFound(f"{who} has no open inbox (its client is not reading messages)")
    raise Timeout(f"{who} did not reply within {timeout:g}s")


def nodes_from(result: JsonObject) -> list[NodeInfo]:
    return [NodeInfo(n["id"], n["api_address"], bool(n["up"]), bool(n["leader"]),
                     bool(n.get("replica", False))) for n in result["nodes"]]


def node_events(before: dict[str, bool], now: dict[str, bool]) -> list[NodeEvent]:
    events = []
    for node, up in now.items():
        if before.get(node, False) != up:
            events.append(NodeEvent("nodeup" if up else "nodedown", node))
    return events


# ---- the blocking calls --------------------------------------------------------------------------
def send(api: Requester, to: JsonObject, message: Any, timeout: float | None = None) -> bool:
    """Deliver ``message`` to one receiver; True once its inbox took it."""
    body = sender_of(api).stamp({**to, "message": message})
    return api.request("message_send", body, timeout)["delivered"]


def broadcast(api: Requester, group: str, message: Any,
              timeout: float | None = None) -> Broadcast:
    body = sender_of(api).stamp({"group": group, "message": message})
    result = api.request("message_broadcast", body, timeout)
    return Broadcast(result["delivered"], result["undelivered"])


def multi_call(api: Requester, to: JsonObject, request: Any, timeout: float) -> MultiCall:
    body = call_body(api, to, request, timeout)
    return MultiCall.from_json(api.request("message_call", body, timeout + REQUEST_MARGIN_S))


def call_one(api: Requester, to: JsonObject, who: str, request: Any, timeout: float) -> Any:
    """The reply of one receiver (NotFound: it reads no inbox; Timeout: no reply in time)."""
    body = call_body(api, to, request, timeout)
    return only_reply(api.request("message_call", body, timeout + REQUEST_MARGIN_S), who,
                      timeout)


class Inbox:
    """``for msg in client.inbox(): ...``: the session's messages as they come, by long polls
    of ``wait`` seconds.  Ends after ``idle_timeout`` seconds without a message (None: never)
    or once ``close()`` is called (at the end of the current poll)."""

    def __init__(self, api: Requester, auth: Callable[[], JsonObject], *,
                 wait: float = POLL_WAIT_S, idle_timeout: float | None = None) -> None:
        self._api, self._auth, self._wait, self._idle = api, auth, wait, idle_timeout
        self._buffer: list[JsonObject] = []
        self._seen = SeenSenders()
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        last = time.monotonic()
        while not self._buffer:
            if self._closed.is_set():
                raise StopIteration
            waited = time.monotonic() - last
            if self._idle is not None and waited >= self._idle:
                raise StopIteration
            wait = self._wait if self._idle is None else min(self._wait, self._idle - waited)
            self._buffer = [e for e in self.poll(wait) if self._seen.fresh(e)]
        return message_from(self._buffer.pop(0), self._reply)

    def open(self) -> "Inbox":
        """Open the inbox now (on the node this client talks to), so that messages sent from
        now on are kept until read; iterating opens it too."""
        self._buffer += [e for e in self.poll(0.0) if self._seen.fresh(e)]
        return self

    def poll(self, wait: float) -> list[JsonObject]:
        body = {**self._auth(), "wait": max(0.0, wait), **SEEN}
        return self._api.request("inbox_poll", body, wait + REQUEST_MARGIN_S)["messages"]

    def _reply(self, call_id: str, value: Any) -> bool:
        body = {**self._auth(), "call": call_id, "value": value, **SEEN}
        return self._api.request("message_reply", body, None)["delivered"]

    def close(self) -> None:
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


class MessageHandler:
    """``client.on_message(fn)``: ``fn(msg)`` for every message, on a thread of its own;
    ``stop()`` ends it (within one poll)."""

    def __init__(self, inbox: Inbox, handler: Callable[[Message], Any]) -> None:
        self._inbox, self._handler = inbox, handler
        self._thread = threading.Thread(target=self._run, name="message-handler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                for message in self._inbox:
                    try:
                        self._handler(message)
                    except Exception:  # noqa: BLE001 - one bad message must not stop the rest
                        log.exception("message handler failed")
                return
            except ConsensusStoreError as exc:   # e.g. no node reachable now: poll again
                if self._inbox.closed:
                    return                        # stopped while a poll was out
                log.warning("inbox poll failed: %s", exc)
                time.sleep(0.2)

    def stop(self, timeout: float | None = None) -> None:
        self._inbox.close()
        self._thread.join(timeout)


class MessagingApi:
    """The messaging calls of ``Client`` and the embedded ``Node`` (mixed in beside
    ``CoordinationApi``, whose ``default_session`` receives)."""

    if TYPE_CHECKING:
        def request(self, op: str, body: JsonObject, timeout: float | None) -> JsonObject: ...
        def default_session(self) -> Session: ...

    def send_name(self, name: str, message: Any, *, timeout: float | None = None) -> bool:
        """Send to the owner of a registered name (True once its inbox took it)."""
        return send(self, {"name": name}, message, timeout)

    def call_name(self, name: str, request: Any, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> Any:
        """``GenServer.call({:global, name}, request)``: the owner's reply."""
        return call_one(self, {"name": name}, f"name {name!r}", request, timeout)

    def inbox(self, session: Session | None = None, *, wait: float = POLL_WAIT_S,
              idle_timeout: float | None = None) -> Inbox:
        """The messages of ``session`` (default: this client's own, which owns what
        ``groups.join``, ``register_name`` and ``election().campaign`` made)."""
        if session is not None:
            return Inbox(self, lambda: session.auth, wait=wait, idle_timeout=idle_timeout)
        return Inbox(self, lambda: self.default_session().auth, wait=wait,
                     idle_timeout=idle_timeout)

    def on_message(self, handler: Callable[[Message], Any], session: Session | None = None,
                   ) -> MessageHandler:
        """Call ``handler(msg)`` for each message of ``session`` on a thread of its own."""
        return MessageHandler(self.inbox(session), handler)
