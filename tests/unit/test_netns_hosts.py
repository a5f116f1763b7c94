"""The namespace hosts of the tests say why they cannot exist instead of failing."""
from __future__ import annotations

import pytest

from consensus_store.testing import netns


def test_not_root_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.sys, "platform", "linux")
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert "needs root" in (netns.unavailable_reason() or "")


def test_no_ip_command_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.sys, "platform", "linux")
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    assert "no 'ip' command" in (netns.unavailable_reason() or "")


def test_names_are_unique_per_object_and_addresses_follow_the_subnet() -> None:
    one, two = netns.NamespaceHosts(3), netns.NamespaceHosts(3, subnet="10.201.0")
    assert len(set(one.names + two.names + [one.hub, two.hub])) == 8
    assert two.addresses == ["10.201.0.1", "10.201.0.2", "10.201.0.3"]
    assert one.exec_prefix(1) == ("ip", "netns", "exec", one.names[1])
