"""Held jobs: where a submitted job goes (held, printed now, denied), where it may be released,
and when it expires."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class JobStatus(StrEnum):
    HELD = "held"  # waiting for its owner at a device
    RELEASING = "releasing"  # at a site: charged locally, waiting (within the budget) for the primary
    RELEASED = "released"  # released at a device and charged; the provider fetches it
    PRINTING = "printing"  # sent straight to a printer without hold, charged
    PRINTED = "printed"
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class QueueTarget:
    """What a provider's `queue` names: a printer, or one of the site's Find-Me queues."""

    name: str
    printers: frozenset[str]  # the printers where a job in it may print
    findme: bool
    hold: bool  # held until released at a device, or printed at once

    @classmethod
    def for_printer(cls, name: str, *, hold: bool) -> QueueTarget:
        return cls(name=name, printers=frozenset({name}), findme=False, hold=hold)

    @classmethod
    def for_findme(cls, name: str, printers: Set[str]) -> QueueTarget:
        return cls(name=name, printers=frozenset(printers), findme=True, hold=True)


def resolve_queue(
    queue: str, printer_hold: Mapping[str, bool], findme_queues: Mapping[str, Set[str]]
) -> QueueTarget | None:
    """A printer's name wins over a Find-Me queue of the same name (printers are global names)."""
    if queue in printer_hold:
        return QueueTarget.for_printer(queue, hold=printer_hold[queue])
    if queue in findme_queues:
        return QueueTarget.for_findme(queue, findme_queues[queue])
    return None


def releasable_at(job_queue: str, device_printer: str, findme_queues: Mapping[str, Set[str]]) -> bool:
    """A secure-print job releases only at its printer; a Find-Me job at any member printer."""
    if job_queue == device_printer:
        return True
    return device_printer in findme_queues.get(job_queue, ())


def hold_expires_at(submitted_at: datetime, hold_timeout_minutes: int) -> datetime:
    return submitted_at + timedelta(minutes=hold_timeout_minutes)


def is_expired(submitted_at: datetime, now: datetime, hold_timeout_minutes: int) -> bool:
    return now >= hold_expires_at(submitted_at, hold_timeout_minutes)
