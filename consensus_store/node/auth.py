"""Client credentials: which bearer token has which role, reloaded when the tokens file changes.

The peer secret is never a client credential (config refuses a token equal to it).  Nodes call
each other's client API with ``node_api_token`` (derived from the peer secret, role admin).
Tokens are compared in constant time; a lookup walks every token so the time does not say
which one nearly matched.
"""
from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

from consensus_store.config import ClientToken, NodeConfig, Role, load_tokens, node_api_token
from consensus_store.errors import ConfigError

log = logging.getLogger("consensus_store.auth")

NODE_TOKEN_NAME = "node"


class TokenStore:
    def __init__(self, config: NodeConfig) -> None:
        self.path: Path = config.tokens_file
        node_token = node_api_token(config.peer_secret)
        self._node = (node_token.encode(), ClientToken(NODE_TOKEN_NAME, node_token, Role.ADMIN))
        self._peer_secret = config.peer_secret
        self._tokens: tuple[tuple[bytes, ClientToken], ...] = ()
        self._stamp: tuple[int, int, int] | None = None
        self.generation = 0
        """Counts installs: a connection that authenticated under an older generation looks its
        token up again before its next request (a removed token stops working)."""
        self._install(config.tokens)
        self._stamp = self._file_stamp()

    def lookup(self, supplied: bytes) -> ClientToken | None:
        """The token ``supplied`` names, or None."""
        found = None
        if hmac.compare_digest(supplied, self._node[0]):
            found = self._node[1]
        for secret, token in self._tokens:
            if hmac.compare_digest(supplied, secret):
                found = token
        return found

    def reload_if_changed(self, force: bool = False) -> bool:
        """Re-read the tokens file if its size, mtime or inode changed (or ``force``: SIGHUP).
        A bad file is logged and the tokens in force stay; returns whether new tokens were
        installed."""
        stamp = self._file_stamp()
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp
        try:
            tokens = load_tokens(self.path, ConfigError)   # messages name the file
        except ConfigError as exc:
            log.error("tokens file not reloaded, the previous tokens stay in force: %s", exc)
            return False
        if any(hmac.compare_digest(t.token, self._peer_secret) for t in tokens):
            log.error("tokens file not reloaded: a token equals the peer secret")
            return False
        self._install(tokens)
        log.info("reloaded %d client tokens from %s", len(tokens), self.path)
        return True

    def _install(self, tokens: tuple[ClientToken, ...]) -> None:
        self._tokens = tuple((t.token.encode(), t) for t in tokens)
        self.generation += 1

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)
