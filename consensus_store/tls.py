"""TLS contexts for the client ports, built once from files; shared by the node and the clients.

It sits at the top of the package, like ``wire``, because both layers need it (the client must
never import ``consensus_store.node``); it imports only the standard library and ``errors``.

Both sides speak TLS 1.2 or later.  A client verifies the node's certificate and host name by
default (against ``cacert``, else the system's trust store); a node asks for a client
certificate only when ``[tls] client_ca_file`` is set, and then requires one that CA signed.
A file that cannot be loaded is a ``ConfigError`` naming the file and the option or key.
"""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Callable

from consensus_store.errors import ConfigError

__all__ = ["certificate_problem", "client_context", "server_context", "TLS_SCHEMES"]

TLS_SCHEMES = ("https", "tls")     # endpoint schemes that mean TLS (HTTP API, native protocol)

Fail = Callable[[str, Path, str], ConfigError]

# OpenSSL reasons that no other endpoint and no retry will fix
_TRUST_REASONS = frozenset({
    "CERTIFICATE_VERIFY_FAILED", "TLSV13_ALERT_CERTIFICATE_REQUIRED", "CERTIFICATE_REQUIRED",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL",
    "WRONG_VERSION_NUMBER", "SSLV3_ALERT_HANDSHAKE_FAILURE",
})


def _fail(name: str, path: Path, problem: str) -> ConfigError:
    return ConfigError(f"{name}: {path}: {problem}")


def server_context(cert_file: Path, key_file: Path, client_ca_file: Path | None = None, *,
                   fail: Fail = _fail) -> ssl.SSLContext:
    """What a node serves its client ports with.  ``fail(key, path, problem)`` builds the error
    (the node's config names the file and ``tls.<key>``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert_file, key_file, ("cert_file", "key_file"), fail)
    if client_ca_file is not None:
        _load_ca(context, client_ca_file, "client_ca_file", fail)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(cacert: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None, *, fail: Fail = _fail,
                   names: tuple[str, str, str] = ("cacert", "cert", "key")) -> ssl.SSLContext:
    """What a client (or a node calling another node's API) connects with: the server's
    certificate and host name are always verified; ``cert``/``key`` present a client
    certificate (``key`` may be omitted when ``cert`` holds both)."""
    if key is not None and cert is None:
        raise ConfigError(f"{names[2]}: give {names[1]} too (the client certificate)")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cacert is not None:
        _load_ca(context, Path(cacert), names[0], fail)
    if cert is not None:
        _load_chain(context, Path(cert), Path(key) if key is not None else None,
                    (names[1], names[2]), fail)
    return context


def _load_ca(context: ssl.SSLContext, path: Path, name: str, fail: Fail) -> None:
    _check_readable(path, name, fail)
    try:
        context.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError) as exc:
        raise fail(name, path, f"not a PEM CA certificate ({_reason(exc)})") from None


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path | None, names: tuple[str, str],
                fail: Fail) -> None:
    _check_readable(cert, names[0], fail)
    if key is not None:
        _check_readable(key, names[1], fail)
    try:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    except (ssl.SSLError, ValueError) as exc:
        # OpenSSL does not say which file it disliked: name both
        where = cert if key is None else f"{cert} with {names[1]} {key}"
        raise fail(names[0], Path(str(where)), "cannot load the certificate and its private "
                                               f"key ({_reason(exc)})") from None


def _check_readable(path: Path, name: str, fail: Fail) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise fail(name, path, f"cannot read: {exc.strerror or exc}") from None


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or str(exc) or exc.__class__.__name__


def certificate_problem(exc: BaseException | None) -> str | None:
    """What is wrong with the trust between client and node, if ``exc`` or what caused it says
    so (rather than a network fault that another try could get past)."""
    for _ in range(8):    # httpx and asyncio wrap the ssl error once or twice
        if exc is None:
            return None
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"the node's certificate is not trusted: {exc.verify_message}"
        if isinstance(exc, ssl.SSLError) and exc.reason in _TRUST_REASONS:
            hint = " (is the node serving TLS?)" if exc.reason == "WRONG_VERSION_NUMBER" else ""
            return f"TLS failed: {exc.reason}{hint}"
        exc = exc.__cause__ or exc.__context__
    return None
