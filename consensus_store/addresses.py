"""Addresses in node configs: ``HOST:PORT`` with HOST an IPv4 literal, a DNS name (``localhost``
included) or a bracketed IPv6 literal (``[::1]:7101``), kept in one canonical form.

Two spellings of one address: ``authority`` (``[::1]:7101``) for URLs, config files and people;
``str(RaftAddress)`` (``::1:7101``) for pysyncobj, which names nodes by it.  Pure functions of
strings; ``fail(message)`` builds the caller's error (config.py's names the file and key).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Address:
    """A host and port from a config.  ``host`` is canonical: an IPv4 literal, an IPv6 literal
    without brackets in its compressed form (``::1``), or a lower-case DNS name (``localhost``
    included), so equal addresses compare equal however they were written."""
    host: str
    port: int

    @property
    def authority(self) -> str:
        """``host:port`` as a URL and a config file write it (IPv6 in brackets: ``[::1]:7101``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.authority


@dataclass(frozen=True)
class RaftAddress(Address):
    """A ``raft_address``.  Its ``str`` is the node's name inside pysyncobj (its membership,
    status keys and leader): ``host:port`` with an IPv6 literal *unbracketed* (``::1:7101``),
    because pysyncobj splits at the last colon and hands the host to ``getaddrinfo``, which does
    not take brackets.  Every node derives the name from the same canonical host, so the names
    match across the cluster.  Config files and messages for people use ``authority``."""

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"



_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
ADDRESS_FORMS = "HOST:PORT (an IPv4 address, a DNS name, localhost, or [IPv6]:PORT)"


def parse_address(text: str, fail: Any) -> Address:
    """``HOST:PORT`` -> Address; ``fail(message)`` builds the error to raise.  IPv6 literals
    must be bracketed (``[::1]:7101``): without brackets the port cannot be told apart."""
    if text.startswith("["):
        inner, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise fail(f"{text!r} is not [IPV6]:PORT")
        try:
            host = ipaddress.IPv6Address(inner).compressed
        except ValueError:
            raise fail(f"{text!r}: {inner!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if ":" in host:
            raise fail(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:7101")
        if not sep or not host:
            raise fail(f"{text!r} is not {ADDRESS_FORMS}")
        host = parse_host(host, fail, text)
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise fail(f"{text!r}: the port must be a number from 1 to 65535")
    return Address(host, int(port_text))


def parse_raft_address(text: str, fail: Any) -> RaftAddress:
    """``HOST:PORT`` -> the ``RaftAddress`` pysyncobj knows a node by (see ``RaftAddress``)."""
    address = parse_address(text, fail)
    return RaftAddress(address.host, address.port)


def parse_host(host: str, fail: Any, text: str | None = None) -> str:
    """An IPv4 literal, an unbracketed IPv6 literal or a DNS name, in canonical form."""
    shown = repr(text if text is not None else host)
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    name = host.lower()
    labels = name.split(".")
    if (len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels)
            or labels[-1].isdigit()):
        raise fail(f"{shown}: {host!r} is not an IP address or a DNS name")
    return name
