"""Session keys at the edge: which session a request may act for.

A session id is the Raft index that opened it, so anyone can guess one.  What makes a session
its owner's is its key, a secret the client makes (or the node, at ``session_open``) and sends
with every request acting for the session: keepalive, close, ephemeral puts and the
coordination ops.  The node hashes the presented key (SHA-256) and stamps the hash into the
command (``key_hash``); the state machine compares it with the hash it stored at open, and the
leader does the same for keepalives, which never reach the log.  The key itself is never
replicated, stored, logged or echoed.  ``admin: true`` is stamped only when the caller's token
has the admin role: an admin may act for any session without its key.  A client cannot set
either field: commands are built from the fields each op takes, nothing else.
"""
from __future__ import annotations

import secrets
from typing import Any

from consensus_store.config import ClientToken, Role
from consensus_store.errors import Forbidden, InvalidRequest, NotFound
from consensus_store.state.sessions import Session, hash_session_key

MIN_KEY_CHARS = 16      # a client's own key: long enough not to be guessed
MAX_KEY_CHARS = 256
NEW_KEY_BYTES = 32      # token_urlsafe(32): 43 characters, 256 random bits


def key_for_open(body: dict[str, Any]) -> str:
    """The new session's key: the client's own (so a retried open with the same request id is
    answered with the same session), else a fresh random one."""
    key = body.get("session_key")
    if key is None:
        return secrets.token_urlsafe(NEW_KEY_BYTES)
    if (not isinstance(key, str) or not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS
            or not key.isascii() or not key.isprintable()):
        raise InvalidRequest(f"'session_key' must be {MIN_KEY_CHARS}-{MAX_KEY_CHARS} printable "
                             "ASCII characters (make it random: it is the session's only secret)")
    return key


def presented_key(body: dict[str, Any]) -> str | None:
    """The session key a request presents, if it presents one."""
    key = body.get("session_key")
    if key is not None and (not isinstance(key, str) or len(key) > MAX_KEY_CHARS):
        raise InvalidRequest(f"'session_key' must be a string of at most {MAX_KEY_CHARS} chars")
    return key


def presented_key_hash(body: dict[str, Any]) -> str | None:
    """The hash of the session key a request presents, if it presents one."""
    key = presented_key(body)
    return None if key is None else hash_session_key(key)


def is_admin(caller: ClientToken | None) -> bool:
    return caller is not None and caller.role is Role.ADMIN


def session_auth(body: dict[str, Any], caller: ClientToken | None) -> dict[str, Any]:
    """The fields a command acting for a session carries: the presented key's hash, and
    ``admin`` for an admin caller (never from the body)."""
    auth: dict[str, Any] = {}
    key_hash = presented_key_hash(body)
    if key_hash is not None:
        auth["key_hash"] = key_hash
    if is_admin(caller):
        auth["admin"] = True
    return auth


def authorize_session(engine: Any, session_id: int, key: str | None, admin: bool) -> Session:
    """The open session ``session_id``, once the caller may act for it outside the log (a
    keepalive, an inbox): NotFound if it is not open on this node's state, Forbidden without
    its key (an admin needs none)."""
    session = None
    if engine.started:
        with engine.reading() as machine:
            session = machine.sessions.get(session_id)
    if session is None:
        raise NotFound(f"session {session_id} not found (expired or closed)")
    if not admin and not session.opened_with(None if key is None else hash_session_key(key)):
        raise Forbidden(f"wrong or missing session key for session {session_id}")
    return session
