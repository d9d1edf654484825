"""Device sessions: bound to their device, idle timeout, bounded table with O(1) eviction."""

from __future__ import annotations

import pytest

from siteserver.domain import NotFound, SessionRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_session_works_only_at_its_device_until_idle() -> None:
    clock = Clock()
    reg = SessionRegistry(idle_timeout_secs=60, clock=clock)
    s = reg.open("alice", "mfd-1")
    assert reg.get(s.session_id, "mfd-1").username == "alice"
    with pytest.raises(NotFound):
        reg.get(s.session_id, "mfd-2")
    clock.now = 59
    reg.get(s.session_id, "mfd-1")  # use keeps it alive
    clock.now = 59 + 60
    with pytest.raises(NotFound):
        reg.get(s.session_id, "mfd-1")


def test_close_and_close_user() -> None:
    reg = SessionRegistry()
    a1, a2, b = reg.open("alice", "d1"), reg.open("alice", "d2"), reg.open("bob", "d1")
    reg.close(b.session_id, "d2")  # another device cannot close it
    reg.get(b.session_id, "d1")
    reg.close_user("alice")
    for s, d in ((a1, "d1"), (a2, "d2")):
        with pytest.raises(NotFound):
            reg.get(s.session_id, d)
    reg.close(b.session_id, "d1")
    assert len(reg) == 0


def test_a_full_table_drops_the_least_recently_used_session() -> None:
    clock = Clock()
    reg = SessionRegistry(max_sessions=3, clock=clock)
    s = [reg.open(f"u{i}", "d") for i in range(3)]
    reg.get(s[0].session_id, "d")  # s[0] is now the most recently used
    reg.open("u3", "d")
    assert len(reg) == 3
    with pytest.raises(NotFound):
        reg.get(s[1].session_id, "d")
    reg.get(s[0].session_id, "d")
    reg.get(s[2].session_id, "d")


def test_many_logins_stay_bounded_and_idle_ones_go_first() -> None:
    clock = Clock()
    reg = SessionRegistry(idle_timeout_secs=10, max_sessions=1000, clock=clock)
    for i in range(5000):
        clock.now = i * 0.001
        reg.open(f"u{i}", "d")
    assert len(reg) == 1000
    clock.now = 100.0  # everything idle: the next login sweeps the idle ones out
    reg.open("late", "d")
    assert len(reg) == 1
