"""The site's mode machine (DESIGN.md invariant 5: no flapping), pure: no clock, no I/O.

States: `online`, `offline`, `reconciling`. Inputs, one at a time:

- `round(any_active)`: one WAN probe round; good when any primary endpoint answered active.
- `merge_missed()`: a merge missed its request budget. It counts as one failed round, so it
  speeds detection up; it never replaces the threshold.
- `drained()`: the journal has no pending entries.

Rules (N = `offline_after_failures`, M = `online_after_successes`):

- online → offline after N consecutive failed rounds.
- offline → reconciling after M consecutive good rounds (a failed round starts the count again).
- reconciling → online on `drained()`, provided the latest round was good.
- reconciling → offline after N consecutive failed rounds, the same threshold as online: a single
  bad round while reconciling does not throw the site back offline.

Every input returns the `Transition` it caused, or None. Counters start from zero after a
transition and after a restart (the mode itself is kept by the caller).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from siteserver.timeutil import parse_iso


class Mode(StrEnum):
    """A site's mode: the one type for it, stored, sent and shown as its value."""

    ONLINE = "online"
    OFFLINE = "offline"
    RECONCILING = "reconciling"


@dataclass(frozen=True)
class Transition:
    old: Mode
    new: Mode
    cause: str


@dataclass
class ModeMachine:
    offline_after_failures: int
    online_after_successes: int
    mode: Mode = Mode.ONLINE
    failures: int = 0  # consecutive failed rounds (online, reconciling)
    successes: int = 0  # consecutive good rounds (offline)

    def __post_init__(self) -> None:
        self.mode = Mode(self.mode)  # a stored value: refused with a ValueError when unknown
        if self.offline_after_failures < 1 or self.online_after_successes < 1:
            raise ValueError("thresholds must be at least 1")

    def _go(self, new: Mode, cause: str) -> Transition:
        t = Transition(self.mode, new, cause)
        self.mode = new
        self.failures = 0
        self.successes = 0
        return t

    def _failed(self, what: str) -> Transition | None:
        self.successes = 0
        if self.mode == Mode.OFFLINE:
            return None
        self.failures += 1
        if self.failures >= self.offline_after_failures:
            return self._go(
                Mode.OFFLINE, f"{self.failures} consecutive failed rounds (last: {what}) while {self.mode}"
            )
        return None

    def round(self, any_active: bool) -> Transition | None:
        """One probe round: good when some endpoint answered active."""
        if not any_active:
            return self._failed("no primary endpoint active")
        self.failures = 0
        if self.mode == Mode.OFFLINE:
            self.successes += 1
            if self.successes >= self.online_after_successes:
                return self._go(
                    Mode.RECONCILING, f"{self.successes} consecutive rounds with an active primary endpoint"
                )
        return None

    def merge_missed(self) -> Transition | None:
        """A merge missed its budget: counts as one failed round."""
        return self._failed("a merge missed its budget")

    def drained(self) -> Transition | None:
        """The journal has no pending entries: reconciling hands back to online."""
        if self.mode == Mode.RECONCILING and self.failures == 0:
            return self._go(Mode.ONLINE, "journal drained: no pending entries")
        return None


@dataclass(frozen=True, slots=True)
class Outage:
    """A stretch from a change to offline to the next change to online (None: still going)."""

    started_at: str
    ended_at: str | None
    detection_secs: float | None  # from the last good contact to the change to offline
    merge_secs: float | None  # from the link back (reconciling) to the journal drained (online)


def outages(history: Iterable[tuple[str, Mode, float | None]]) -> list[Outage]:
    """The outages in a history of mode changes (at, mode, detection_secs), oldest first."""
    found: list[Outage] = []
    back: str | None = None
    for at, mode, detection in history:
        if mode == Mode.OFFLINE and (not found or found[-1].ended_at is not None):
            found.append(Outage(at, None, detection, None))
            back = None
        elif mode == Mode.RECONCILING and found and found[-1].ended_at is None:
            back = back or at
        elif mode == Mode.ONLINE and found and found[-1].ended_at is None:
            merge = None if back is None else round((parse_iso(at) - parse_iso(back)).total_seconds(), 3)
            found[-1] = Outage(found[-1].started_at, at, found[-1].detection_secs, merge)
    return found


__all__ = ["Mode", "ModeMachine", "Outage", "Transition", "outages"]
