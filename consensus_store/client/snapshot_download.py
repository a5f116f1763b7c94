"""``Client.snapshot_save``: stream a node's backup (``POST /v1/snapshot``) into a file.

The file is written to ``FILE.part`` (0600: it holds every value), synced, read back and
checked whole (header, counts, SHA-256: backup_file.py), and only then renamed to ``FILE``,
so ``FILE`` is never a partial backup.  The endpoints are tried in the client's order; a node
that is down or answers 503 passes the request on to the next.  A native endpoint
(``tcp://``, ``tls://``) names the node whose HTTP address its status gives: the snapshot is
a stream, which only the HTTP API carries.
"""
from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Callable

import httpx

from consensus_store import backup_file as backup
from consensus_store.client.endpoints import scheme_of
from consensus_store.errors import (ConfigError, ConsensusStoreError, InvalidRequest, Timeout,
                                    Unavailable, error_from_json)
from consensus_store.protocol import OPS

WRITE_BYTES = 1 << 20
HTTP_SCHEME = {"tcp": "http", "tls": "https", "http": "http", "https": "https"}
StatusOf = Callable[[str], Any]       # endpoint -> NodeStatus (its api_address)


def save_snapshot(endpoints: list[str], token: str | None, ssl_context: ssl.SSLContext | None,
                  path: Path, *, consistency: str, timeout: float,
                  status_of: StatusOf) -> backup.BackupHeader:
    """Save the first answering node's backup to ``path``; its verified header."""
    if consistency not in ("linearizable", "local"):
        raise InvalidRequest("consistency must be 'linearizable' or 'local'")
    failures: list[str] = []
    for endpoint in endpoints:
        try:
            url = _http_endpoint(endpoint, status_of)
            return _download(url, token, ssl_context, path, consistency, timeout)
        except (Unavailable, Timeout) as exc:
            failures.append(exc.message)
    raise Unavailable("no node gave a snapshot: " + "; ".join(failures))


def _http_endpoint(endpoint: str, status_of: StatusOf) -> str:
    scheme = scheme_of(endpoint)
    if scheme in ("http", "https"):
        return endpoint.rstrip("/")
    api = status_of(endpoint).api_address
    if not api:
        raise Unavailable(f"{endpoint}: its status names no HTTP address")
    return f"{HTTP_SCHEME[scheme]}://{api}"


def _download(url: str, token: str | None, ssl_context: ssl.SSLContext | None, path: Path,
              consistency: str, timeout: float) -> backup.BackupHeader:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    partial = path.with_name(path.name + ".part")
    # The node confirms with the majority and copies the state before its first byte.
    limits = httpx.Timeout(timeout, read=max(timeout, 60.0))
    try:
        with httpx.Client(headers=headers, timeout=limits,
                          verify=ssl_context if ssl_context is not None else True) as http:
            with http.stream("POST", url + OPS["snapshot"].path,
                             json={"consistency": consistency, "timeout": timeout}) as response:
                if response.status_code != 200:
                    response.read()
                    raise _refusal(url, response)
                _write(partial, response)
        with open(partial, "rb") as file:
            header = backup.verify(file, str(partial))
        os.replace(partial, path)
        return header
    except httpx.TimeoutException:
        raise Timeout(f"{url}: the snapshot did not arrive within {timeout:g}s") from None
    except httpx.TransportError as exc:
        raise Unavailable(f"{url}: {exc.__class__.__name__}: {exc}") from None
    except backup.BackupDamaged as exc:    # cut on the way (the node stopped): another node
        raise Unavailable(exc.message) from None
    except OSError as exc:                  # our side: no other node can help
        raise ConfigError(f"{path}: cannot write the backup: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(partial)
        except FileNotFoundError:
            pass


def _refusal(url: str, response: httpx.Response) -> ConsensusStoreError:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = error_from_json(response.status_code, body)
    error.message = f"{url}: {error.message}"
    return error


def _write(partial: Path, response: httpx.Response) -> None:
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            for chunk in response.iter_bytes(WRITE_BYTES):
                out.write(chunk)
            out.flush()
            os.fsync(fd)
    finally:
        os.close(fd)
