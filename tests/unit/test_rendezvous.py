"""route(group, key): rendezvous hashing moves about 1/N of keys when membership changes."""
from __future__ import annotations

from consensus_store.api.groups import rendezvous
from consensus_store.models import Member


def members(count: int) -> list[Member]:
    return [Member(f"m{i}", "n1", None, i, 1) for i in range(count)]


def test_same_members_same_answer() -> None:
    assert rendezvous(members(5), "k") == rendezvous(list(reversed(members(5))), "k")
    assert rendezvous([], "k") is None


def test_adding_a_member_moves_about_one_nth_of_keys() -> None:
    keys = [f"key-{i}" for i in range(20_000)]
    before = {k: rendezvous(members(9), k) for k in keys}
    after = {k: rendezvous(members(10), k) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    fraction = len(moved) / len(keys)
    print(f"joining 1 member to 9 moved {fraction:.3f} of keys (ideal 0.100)")
    assert 0.08 < fraction < 0.12
    assert all(after[k].id == "m9" for k in moved)      # keys move only to the newcomer


def test_removing_a_member_moves_only_its_keys() -> None:
    keys = [f"key-{i}" for i in range(20_000)]
    before = {k: rendezvous(members(10), k) for k in keys}
    remaining = [m for m in members(10) if m.id != "m3"]
    after = {k: rendezvous(remaining, k) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k].id == "m3" for k in moved)
    assert 0.08 < len(moved) / len(keys) < 0.12
