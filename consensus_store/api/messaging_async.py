"""Messaging for asyncio (``AsyncClient``): the calls of ``api/messaging.py`` as coroutines,
``async for msg in client.inbox(): ...`` and ``await msg.reply(value)``.  Same ops, same
bodies, same guarantees (at most once, in order per sender and receiver)."""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from consensus_store.api.messaging import (DEFAULT_CALL_TIMEOUT_S, POLL_WAIT_S,
                                           REQUEST_MARGIN_S, SEEN, Broadcast, Message,
                                           MultiCall, SeenSenders, call_body, message_from,
                                           only_reply, sender_of)
from consensus_store.api.requester import AsyncRequester, JsonObject
from consensus_store.errors import ConsensusStoreError, InvalidRequest

log = logging.getLogger("consensus_store.messaging")

AuthSource = Callable[[], Awaitable[JsonObject]]


async def send(api: AsyncRequester, to: JsonObject, message: Any,
               timeout: float | None = None) -> bool:
    body = sender_of(api).stamp({**to, "message": message})
    return (await api.request("message_send", body, timeout))["delivered"]


async def broadcast(api: AsyncRequester, group: str, message: Any,
                    timeout: float | None = None) -> Broadcast:
    body = sender_of(api).stamp({"group": group, "message": message})
    result = await api.request("message_broadcast", body, timeout)
    return Broadcast(result["delivered"], result["undelivered"])


async def multi_call(api: AsyncRequester, to: JsonObject, request: Any,
                     timeout: float) -> MultiCall:
    body = call_body(api, to, request, timeout)
    return MultiCall.from_json(await api.request("message_call", body,
                                                 timeout + REQUEST_MARGIN_S))


async def call_one(api: AsyncRequester, to: JsonObject, who: str, request: Any,
                   timeout: float) -> Any:
    body = call_body(api, to, request, timeout)
    return only_reply(await api.request("message_call", body, timeout + REQUEST_MARGIN_S), who,
                      timeout)


class AsyncInbox:
    """``async for msg in client.inbox(): ...`` (see ``messaging.Inbox``)."""

    def __init__(self, api: AsyncRequester, auth: AuthSource, *, wait: float = POLL_WAIT_S,
                 idle_timeout: float | None = None) -> None:
        self._api, self._auth, self._wait, self._idle = api, auth, wait, idle_timeout
        self._buffer: list[JsonObject] = []
        self._seen = SeenSenders()
        self._closed = False

    def __aiter__(self) -> "AsyncInbox":
        return self

    async def __anext__(self) -> Message:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not self._buffer:
            waited = loop.time() - start
            if self._closed or (self._idle is not None and waited >= self._idle):
                raise StopAsyncIteration
            wait = self._wait if self._idle is None else min(self._wait, self._idle - waited)
            self._buffer = [e for e in await self.poll(wait) if self._seen.fresh(e)]
        return message_from(self._buffer.pop(0), self._reply)

    async def open(self) -> "AsyncInbox":
        """Open the inbox now (see ``messaging.Inbox.open``)."""
        self._buffer += [e for e in await self.poll(0.0) if self._seen.fresh(e)]
        return self

    async def poll(self, wait: float) -> list[JsonObject]:
        body = {**await self._auth(), "wait": max(0.0, wait), **SEEN}
        return (await self._api.request("inbox_poll", body, wait + REQUEST_MARGIN_S))["messages"]

    async def _reply(self, call_id: str, value: Any) -> bool:
        body = {**await self._auth(), "call": call_id, "value": value, **SEEN}
        return (await self._api.request("message_reply", body, None))["delivered"]

    def close(self) -> None:
        """End the iteration after the current poll."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed


class AsyncMessagingApi:
    """``send_name``, ``call_name``, ``inbox`` and ``on_message`` for ``AsyncClient`` (the
    group calls are ``client.groups.send/broadcast/multi_call``, an election's
    ``client.election(name).call_leader``, as on ``Client``).  The receiving session is the client's own (``default_session()``, from
    the asyncio coordination calls) unless one is given."""

    if TYPE_CHECKING:
        async def request(self, op: str, body: JsonObject,
                          timeout: float | None) -> JsonObject: ...

    async def send_name(self, name: str, message: Any, *, timeout: float | None = None) -> bool:
        return await send(self, {"name": name}, message, timeout)

    async def call_name(self, name: str, request: Any,
                        timeout: float = DEFAULT_CALL_TIMEOUT_S) -> Any:
        return await call_one(self, {"name": name}, f"name {name!r}", request, timeout)

    def inbox(self, session: Any = None, *, wait: float = POLL_WAIT_S,
              idle_timeout: float | None = None) -> AsyncInbox:
        """The messages of ``session`` (anything with ``auth``; default: the client's own)."""
        async def auth() -> JsonObject:
            if session is not None:
                return session.auth
            default = getattr(self, "default_session", None)
            if default is None:
                raise InvalidRequest("this client has no session of its own: pass one")
            return (await default()).auth
        return AsyncInbox(self, auth, wait=wait, idle_timeout=idle_timeout)

    def on_message(self, handler: Callable[[Message], Awaitable[Any] | Any],
                   session: Any = None) -> "asyncio.Task[None]":
        """Run ``handler(msg)`` (a coroutine function or a plain one) for each message, in a
        task of the running loop; cancel the task to stop."""
        inbox = self.inbox(session)

        async def run() -> None:
            while True:
                try:
                    async for message in inbox:
                        try:
                            result = handler(message)
                            if asyncio.iscoroutine(result):
                                await result
                        except Exception:  # noqa: BLE001 - one bad message must not stop all
                            log.exception("message handler failed")
                    return
                except ConsensusStoreError as exc:
                    if inbox.closed:
                        return
                    log.warning("inbox poll failed: %s", exc)
                    await asyncio.sleep(0.2)
        return asyncio.get_running_loop().create_task(run())
