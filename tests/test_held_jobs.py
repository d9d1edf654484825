"""Held jobs: which queue a job goes to, where it may be released, and when it expires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from siteserver.domain import JobStatus, QueueTarget, is_expired, releasable_at, resolve_queue
from siteserver.domain.jobs import hold_expires_at

PRINTER_HOLD = {"mono-1": True, "color-1": True, "direct-1": False}
FINDME = {"findme": {"mono-1", "color-1"}, "lobby": {"direct-1"}}


def test_resolve_printer_queue() -> None:
    t = resolve_queue("mono-1", PRINTER_HOLD, FINDME)
    assert t == QueueTarget("mono-1", frozenset({"mono-1"}), findme=False, hold=True)
    t = resolve_queue("direct-1", PRINTER_HOLD, FINDME)
    assert t is not None
    assert (t.findme, t.hold, t.printers) == (False, False, frozenset({"direct-1"}))


def test_resolve_findme_queue_is_always_held() -> None:
    t = resolve_queue("findme", PRINTER_HOLD, FINDME)
    assert t == QueueTarget("findme", frozenset({"mono-1", "color-1"}), findme=True, hold=True)
    # even when every member printer prints at once
    t = resolve_queue("lobby", PRINTER_HOLD, FINDME)
    assert t is not None
    assert (t.findme, t.hold, t.printers) == (True, True, frozenset({"direct-1"}))


def test_printer_name_wins_over_findme_queue_of_the_same_name() -> None:
    findme = {**FINDME, "direct-1": {"mono-1", "color-1"}}
    t = resolve_queue("direct-1", PRINTER_HOLD, findme)
    assert t == QueueTarget.for_printer("direct-1", hold=False)


def test_unknown_queue_is_none() -> None:
    assert resolve_queue("nope", PRINTER_HOLD, FINDME) is None
    assert resolve_queue("", PRINTER_HOLD, FINDME) is None
    assert resolve_queue("MONO-1", PRINTER_HOLD, FINDME) is None  # names are exact


def test_findme_target_is_a_snapshot() -> None:
    members = {"mono-1"}
    t = QueueTarget.for_findme("q", members)
    members.add("color-1")
    assert t.printers == frozenset({"mono-1"})


def test_secure_print_job_releases_only_at_its_printer() -> None:
    assert releasable_at("mono-1", "mono-1", FINDME)
    assert not releasable_at("mono-1", "color-1", FINDME)
    assert not releasable_at("mono-1", "direct-1", FINDME)


def test_findme_job_releases_at_any_member() -> None:
    assert releasable_at("findme", "mono-1", FINDME)
    assert releasable_at("findme", "color-1", FINDME)
    assert not releasable_at("findme", "direct-1", FINDME)
    assert not releasable_at("lobby", "mono-1", FINDME)
    assert not releasable_at("gone", "mono-1", FINDME)  # a deleted queue releases nowhere


def test_expiry_boundary() -> None:
    submitted = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert hold_expires_at(submitted, 240) == datetime(2024, 3, 1, 16, 0, tzinfo=UTC)
    assert not is_expired(submitted, submitted, 240)
    assert not is_expired(submitted, submitted + timedelta(minutes=240, microseconds=-1), 240)
    assert is_expired(submitted, submitted + timedelta(minutes=240), 240)  # at the deadline
    assert is_expired(submitted, submitted + timedelta(days=3), 240)
    assert not is_expired(submitted, submitted - timedelta(hours=1), 240)  # clock skew: not expired


def test_expiry_across_days_and_timezones() -> None:
    submitted = datetime(2024, 12, 31, 23, 30, tzinfo=UTC)
    later = datetime(2025, 1, 1, 3, 30, tzinfo=UTC)
    assert is_expired(submitted, later, 240)
    assert not is_expired(submitted, later, 241)
    # the same instant in another offset compares equal
    cet = timezone(timedelta(hours=1))
    assert is_expired(submitted, later.astimezone(cet), 240)


def test_job_status_values() -> None:
    assert {s.value for s in JobStatus} == {
        "held",
        "releasing",
        "released",
        "printing",
        "printed",
        "denied",
        "expired",
    }
    assert JobStatus("held") is JobStatus.HELD
