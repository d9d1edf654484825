"""The high-availability guard in-process: real SQLite file, Guard objects driven by hand.

No guard thread runs here unless a test says so: `tick()` is called by hand and every guard reads
one injected fake clock, so who holds the lease at which instant is deterministic.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from migrations.primary import migrations
from siteserver.config import HighAvailabilityGuard
from siteserver.domain import NotActive
from siteserver.primary.guard import DuplicateServer, Guard, Role
from siteserver.store import Database
from tests.kit.primary import FakeClock, open_database

pytestmark = pytest.mark.timeout(60)  # a hang fails its own test, not the whole run

INTERVAL = 1.0
STARTUP_TIMEOUT = 2.0
STEP = 0.25  # the "heartbeat" the tests tick at (a real guard ticks at interval / 6)


def role_of(g: Guard) -> Role:
    """The guard's role now (a call, so a type checker does not carry an earlier narrowing over)."""
    return g.role


def settings(enabled: bool = True) -> HighAvailabilityGuard:
    return HighAvailabilityGuard(
        **{
            "enabled": enabled,
            "fail-over-interval-secs": INTERVAL,
            "startup-timeout-secs": STARTUP_TIMEOUT,
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def other_db(fresh_db: Database) -> Iterator[Database]:
    """A second process's view of the same database file (its own writer and readers)."""
    with open_database(fresh_db.path, migrations) as db:
        yield db


@pytest.fixture
def guards() -> Iterator[list[Guard]]:
    """Every guard a test makes; stopped at the end so no thread outlives its database."""
    made: list[Guard] = []
    yield made
    for g in made:
        if g._thread is not None:
            g._stop.set()
            g._thread.join(timeout=5)
        if g._activation is not None:
            g._activation.join(timeout=5)


def make_guard(
    guards: list[Guard],
    db: Database,
    clock: FakeClock,
    *,
    server_uuid: str | None = None,
    on_activate: Callable[[], None] | None = None,
    enabled: bool = True,
    register: bool = True,
) -> Guard:
    g = Guard(
        db,
        server_uuid or str(uuid.uuid4()),
        settings(enabled),
        on_activate=on_activate,
        clock=clock,
    )
    guards.append(g)
    if register:
        g._register()  # what start() does first, without the guard thread
    return g


@pytest.fixture
def a_active_b_passive(
    fresh_db: Database, other_db: Database, clock: FakeClock, guards: list[Guard]
) -> tuple[Guard, Guard]:
    """Two members: a (on fresh_db) has taken the free lease and is active; b (on other_db) is
    registered and has not ticked yet."""
    a = make_guard(guards, fresh_db, clock)
    b = make_guard(guards, other_db, clock)
    activate(a)
    return a, b


def lease(db: Database) -> tuple[str | None, int, int]:
    row = db.read_sync(
        lambda d: d.execute("SELECT holder_uuid, epoch, beat FROM ha_lease WHERE id = 1").fetchone()
    )
    return row[0], row[1], row[2]


def activate(g: Guard) -> None:
    """Tick a guard that should take a free or stale lease, and wait for its activation hook."""
    g.tick()
    assert g.role in (Role.STARTING, Role.ACTIVE)
    assert g.wait_until_active(5), "the activation hook did not finish"
    assert g.role is Role.ACTIVE
    assert g.is_active()


def settings_value(db: Database, key: str) -> Any:
    row = db.read_sync(lambda d: d.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone())
    return None if row is None else row[0]


def put_setting(key: str) -> Callable[[Any], None]:
    return lambda d: d.execute("INSERT INTO settings (key, value) VALUES (?, ?)", [key, "x"])


# -- taking the lease ------------------------------------------------------------------------


def test_a_free_lease_is_taken_at_the_first_tick(
    fresh_db: Database, clock: FakeClock, guards: list[Guard]
) -> None:
    assert lease(fresh_db) == (None, 0, 0)
    a = make_guard(guards, fresh_db, clock)
    assert role_of(a) is Role.PASSIVE and not a.is_active()
    activate(a)
    holder, epoch, _ = lease(fresh_db)
    assert (holder, epoch, a.epoch) == (a.server_uuid, 1, 1)


def test_passive_takes_over_only_after_the_beat_is_still_for_the_interval(
    fresh_db: Database, clock: FakeClock, a_active_b_passive: tuple[Guard, Guard]
) -> None:
    a, b = a_active_b_passive

    # While the active member beats, the passive one never takes over, however long it watches.
    for _ in range(int(10 * INTERVAL / STEP)):
        clock.advance(STEP)
        a.tick()
        b.tick()
        assert role_of(b) is Role.PASSIVE
        assert a.is_active() and not b.is_active()
    assert lease(fresh_db)[:2] == (a.server_uuid, 1)

    # The active member dies after its last beat, which the passive one saw at `seen`.
    seen = clock()
    while clock() - seen < INTERVAL:
        b.tick()
        assert role_of(b) is Role.PASSIVE, f"took over after {clock() - seen}s of a still beat"
        assert lease(fresh_db)[0] == a.server_uuid
        clock.advance(STEP)
    assert clock() - seen == INTERVAL
    activate(b)
    assert lease(fresh_db)[:2] == (b.server_uuid, 2)
    assert b.epoch == 2


def test_a_beat_that_moves_slowly_but_within_the_interval_keeps_the_passive_waiting(
    fresh_db: Database, clock: FakeClock, a_active_b_passive: tuple[Guard, Guard]
) -> None:
    a, b = a_active_b_passive
    b.tick()
    for _ in range(10):  # the active beats just under every interval (a slow, loaded machine)
        for _ in range(3):
            clock.advance(INTERVAL * 0.3)
            b.tick()
            assert role_of(b) is Role.PASSIVE
        a.tick()
    assert lease(fresh_db)[:2] == (a.server_uuid, 1)


def test_each_takeover_increments_the_epoch_and_the_replaced_member_steps_down(
    fresh_db: Database, clock: FakeClock, a_active_b_passive: tuple[Guard, Guard]
) -> None:
    a, b = a_active_b_passive
    epochs = [a.epoch]
    active, passive = a, b
    for _ in range(4):
        passive.tick()  # sees the current beat
        clock.advance(INTERVAL)  # the active one is frozen for the whole interval
        activate(passive)
        epochs.append(passive.epoch)
        assert lease(fresh_db)[:2] == (passive.server_uuid, passive.epoch)
        # The frozen one wakes up: it is not active, and its next beat makes it passive.
        assert not active.is_active()
        active.tick()
        assert active.role is Role.PASSIVE and not active.is_active()
        assert lease(fresh_db)[0] == passive.server_uuid
        active, passive = passive, active
    assert epochs == [1, 2, 3, 4, 5]


# -- fencing ---------------------------------------------------------------------------------


def test_fence_refuses_a_write_after_another_member_took_the_lease(
    fresh_db: Database, other_db: Database, clock: FakeClock, guards: list[Guard]
) -> None:
    a = make_guard(guards, fresh_db, clock)
    b = make_guard(guards, other_db, clock)
    fresh_db.set_fence(a.fence)
    other_db.set_fence(b.fence)
    activate(a)
    fresh_db.write_sync(put_setting("by-a-before"), fenced=True)
    assert settings_value(fresh_db, "by-a-before") == "x"

    # a freezes; b takes over.
    b.tick()
    clock.advance(INTERVAL)
    activate(b)
    other_db.write_sync(put_setting("by-b"), fenced=True)

    # a wakes up and writes before its guard beats: the fence, in the write transaction, refuses.
    assert role_of(a) is Role.ACTIVE  # what the frozen member still believes
    a._last_renewed = clock()  # even if its own clock said the lease was fresh
    with pytest.raises(NotActive):
        fresh_db.write_sync(put_setting("by-a-after"), fenced=True)
    assert settings_value(fresh_db, "by-a-after") is None
    assert settings_value(other_db, "by-a-after") is None
    assert role_of(a) is Role.PASSIVE  # the refused fence stepped it down at once
    # A whole group of writes is refused, not only the first one.
    futures = [fresh_db.submit(put_setting(f"group-{i}"), fenced=True) for i in range(5)]
    for f in futures:
        with pytest.raises(NotActive):
            f.result(timeout=5)
    assert all(settings_value(fresh_db, f"group-{i}") is None for i in range(5))
    # The new active member still writes.
    other_db.write_sync(put_setting("by-b-later"), fenced=True)
    assert settings_value(fresh_db, "by-b-later") == "x"
    assert lease(fresh_db)[:2] == (b.server_uuid, 2)


def test_a_passive_member_never_writes_through_the_fence(
    fresh_db: Database, other_db: Database, a_active_b_passive: tuple[Guard, Guard]
) -> None:
    _, b = a_active_b_passive
    other_db.set_fence(b.fence)
    b.tick()
    with pytest.raises(NotActive):
        other_db.write_sync(put_setting("by-passive"), fenced=True)
    assert settings_value(fresh_db, "by-passive") is None
    # Unfenced work (the guard's own bookkeeping) still runs on a passive member.
    other_db.write_sync(put_setting("unfenced"), fenced=False)
    assert settings_value(fresh_db, "unfenced") == "x"


def test_a_member_paused_right_after_renewing_is_not_active_once_replaced(
    fresh_db: Database, clock: FakeClock, guards: list[Guard]
) -> None:
    """The lease runs from when a renewal *started*, not from when the member looked at its clock
    after the commit: a pause between the two (SIGSTOP, a stalled VM) must not make two members
    answer "active" at the same instant."""
    with open_database(fresh_db.path, migrations) as b_db:
        b = make_guard(guards, b_db, clock)
        pause: list[Callable[[], None]] = []

        class PausingDatabase(Database):
            def write_sync(self, fn: Any, *, fenced: bool = True, timeout: float | None = None) -> Any:
                out = super().write_sync(fn, fenced=fenced, timeout=timeout)
                while pause:
                    pause.pop()()  # the member is frozen here, after its commit
                return out

        a_db = PausingDatabase(fresh_db.path)
        a_db.open(migrations)
        try:
            a = make_guard(guards, a_db, clock)
            activate(a)
            b.tick()

            def frozen_for_a_while() -> None:
                b.tick()  # sees the beat a just committed
                clock.advance(INTERVAL)
                activate(b)
                clock.advance(STEP)

            clock.advance(STEP)
            pause.append(frozen_for_a_while)
            a.tick()  # commits its renewal, freezes, then carries on
            assert b.is_active()
            assert not a.is_active(), "two members answer active at the same instant"
            a.tick()
            assert role_of(a) is Role.PASSIVE
        finally:
            a_db.close()


# -- activation ------------------------------------------------------------------------------


def test_a_slow_activation_hook_gives_way_after_the_startup_timeout(
    fresh_db: Database, other_db: Database, clock: FakeClock, guards: list[Guard]
) -> None:
    gate = threading.Event()

    def slow_activation() -> None:
        gate.wait(30)

    a = make_guard(guards, fresh_db, clock, on_activate=slow_activation)
    b = make_guard(guards, other_db, clock)
    try:
        a.tick()
        assert role_of(a) is Role.STARTING and not a.is_active()
        assert lease(fresh_db)[:2] == (a.server_uuid, 1)
        b.tick()
        # Within the startup timeout a keeps the lease (it beats), and b waits.
        while clock.t + STEP <= 1000.0 + STARTUP_TIMEOUT:
            clock.advance(STEP)
            a.tick()
            b.tick()
            assert role_of(a) is Role.STARTING and role_of(b) is Role.PASSIVE
            assert lease(fresh_db)[0] == a.server_uuid
        clock.advance(STEP)  # now past startup-timeout-secs
        a.tick()
        assert role_of(a) is Role.PASSIVE and not a.is_active()
        holder, epoch, _ = lease(fresh_db)
        assert (holder, epoch) == (None, 1)  # given back, not taken by anyone yet
        # The other member takes the free lease at its next beat, without waiting the interval.
        activate(b)
        assert lease(fresh_db)[:2] == (b.server_uuid, 2)
        # a's hook finishing late does not make it active any more.
        gate.set()
        assert a._activation is not None
        a._activation.join(timeout=5)
        assert role_of(a) is Role.PASSIVE and not a.is_active()
        a.tick()
        assert role_of(a) is Role.PASSIVE
    finally:
        gate.set()


def test_a_member_that_gave_way_waits_before_it_tries_again(
    fresh_db: Database, clock: FakeClock, guards: list[Guard]
) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def hook() -> None:
        calls.append(1)
        if len(calls) == 1:
            gate.wait(30)  # the first activation hangs

    a = make_guard(guards, fresh_db, clock, on_activate=hook)
    try:
        a.tick()
        clock.advance(STARTUP_TIMEOUT + STEP)
        a.tick()
        assert role_of(a) is Role.PASSIVE and lease(fresh_db)[0] is None
        # Alone, it does not grab the lease straight back (no tight give-way/take-over loop) ...
        clock.advance(STEP)
        a.tick()
        assert role_of(a) is Role.PASSIVE and lease(fresh_db)[0] is None
        # ... but after a cool-down it tries again, with a new epoch.
        clock.advance(2 * INTERVAL)
        activate(a)
        assert lease(fresh_db)[:2] == (a.server_uuid, 2)
    finally:
        gate.set()


def test_a_failing_activation_hook_gives_way_at_the_next_beat(
    fresh_db: Database, other_db: Database, clock: FakeClock, guards: list[Guard]
) -> None:
    """An activation that fails must not sit on the lease (answering 503 STARTING) for the whole
    startup-timeout-secs while a healthy member could serve."""

    def broken() -> None:
        raise RuntimeError("database has unapplied migrations")

    a = make_guard(guards, fresh_db, clock, on_activate=broken)
    b = make_guard(guards, other_db, clock)
    a.tick()
    assert a._activation is not None
    a._activation.join(timeout=5)
    assert not a.is_active()
    b.tick()
    clock.advance(STEP)
    a.tick()
    assert role_of(a) is Role.PASSIVE
    assert lease(fresh_db)[0] is None
    activate(b)
    assert lease(fresh_db)[:2] == (b.server_uuid, 2)


# -- stopping --------------------------------------------------------------------------------


def test_a_stopped_guard_releases_the_lease_for_an_immediate_takeover(
    fresh_db: Database, clock: FakeClock, a_active_b_passive: tuple[Guard, Guard]
) -> None:
    a, b = a_active_b_passive
    b.tick()
    a.stop()
    assert role_of(a) is Role.STOPPED and not a.is_active()
    assert lease(fresh_db)[:2] == (None, 1)
    members = fresh_db.read_sync(lambda d: [r[0] for r in d.execute("SELECT server_uuid FROM ha_members")])
    assert members == [b.server_uuid]
    # No waiting for the fail-over interval: the very next beat takes the free lease.
    clock.advance(STEP)
    activate(b)
    assert lease(fresh_db)[:2] == (b.server_uuid, 2)
    a.tick()  # a stopped guard does nothing
    assert role_of(a) is Role.STOPPED


def test_stopping_a_passive_guard_leaves_the_active_lease_alone(
    fresh_db: Database, clock: FakeClock, a_active_b_passive: tuple[Guard, Guard]
) -> None:
    a, b = a_active_b_passive
    b.tick()
    b.stop()
    assert lease(fresh_db)[:2] == (a.server_uuid, 1)
    clock.advance(STEP)
    a.tick()
    assert a.is_active()


def test_the_guard_thread_runs_and_stop_ends_it(
    fresh_db: Database, clock: FakeClock, guards: list[Guard]
) -> None:
    a = make_guard(guards, fresh_db, clock, register=False)
    a.start()  # registers and beats in its own thread (real time; the fake clock stands still)
    assert a.wait_until_active(10)
    beat = lease(fresh_db)[2]
    for _ in range(200):
        if lease(fresh_db)[2] > beat + 1:
            break
        threading.Event().wait(0.05)
    assert lease(fresh_db)[2] > beat + 1, "the guard thread does not renew the lease"
    a.stop()
    assert a._thread is not None and not a._thread.is_alive()
    assert lease(fresh_db)[0] is None


# -- identity --------------------------------------------------------------------------------


def test_a_live_member_with_the_same_server_uuid_is_refused(
    fresh_db: Database, other_db: Database, clock: FakeClock, guards: list[Guard]
) -> None:
    a = make_guard(guards, fresh_db, clock, register=False)
    a.start()
    assert a.wait_until_active(10)
    clone = make_guard(guards, other_db, clock, server_uuid=a.server_uuid, register=False)
    with pytest.raises(DuplicateServer, match="DUPLICATE SERVER UUID"):
        clone.start()
    assert clone._thread is None  # it never started beating
    assert a.is_active()
    assert lease(fresh_db)[:2] == (a.server_uuid, 1)
    rows = fresh_db.read_sync(
        lambda d: d.execute("SELECT server_uuid, instance_id FROM ha_members").fetchall()
    )
    assert rows == [(a.server_uuid, a.instance_id)]  # the clone did not take over the member record
    a.stop()


def test_a_dead_record_of_the_same_server_uuid_is_replaced_and_the_old_instance_stops(
    fresh_db: Database, other_db: Database, clock: FakeClock, guards: list[Guard]
) -> None:
    old = make_guard(guards, fresh_db, clock)
    activate(old)
    # `old` stops beating (frozen); a new instance with the same identity starts.
    new = make_guard(guards, other_db, clock, server_uuid=old.server_uuid)
    # If the old instance was only frozen, its next beat finds its identity taken: it must stop.
    with pytest.raises(DuplicateServer):
        old.tick()
    # The new instance takes over once the old lease's beat is still for the interval.
    new.tick()
    clock.advance(INTERVAL)
    activate(new)
    assert lease(fresh_db)[:2] == (new.server_uuid, 2)


def test_a_guard_that_is_disabled_still_fences_a_server_started_by_mistake(
    fresh_db: Database, other_db: Database, clock: FakeClock, guards: list[Guard]
) -> None:
    a = make_guard(guards, fresh_db, clock, enabled=False, register=False)
    fresh_db.set_fence(a.fence)
    a.start()
    assert a.is_active() and a.epoch == 1
    fresh_db.write_sync(put_setting("first"), fenced=True)
    b = make_guard(guards, other_db, clock, enabled=False, register=False)
    b.start()
    assert b.is_active() and b.epoch == 2
    with pytest.raises(NotActive):
        fresh_db.write_sync(put_setting("stale"), fenced=True)
    assert settings_value(fresh_db, "stale") is None
    assert settings_value(fresh_db, "first") == "x"
    a.stop()
    b.stop()
