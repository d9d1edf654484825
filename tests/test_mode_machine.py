"""The site's mode machine (siteserver.domain.modes), pure: DESIGN.md invariant 5, no flapping."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from siteserver.domain.modes import Mode, ModeMachine, Transition


class ModeRules(RuleBasedStateMachine):
    """Random good/bad rounds, missed pushes and drain events. A shadow keeps its own count of the
    evidence since the last change; no transition may happen without the required evidence."""

    @initialize(
        fail=st.integers(1, 6),
        ok=st.integers(1, 6),
        mode=st.sampled_from([Mode.ONLINE, Mode.OFFLINE, Mode.RECONCILING]),
    )
    def start(self, fail: int, ok: int, mode: Mode) -> None:
        self.m = ModeMachine(fail, ok, mode=mode)
        self.n, self.k = fail, ok
        self.bad_run = 0  # consecutive failed rounds (missed pushes included) since the last change
        self.good_run = 0  # consecutive good rounds since the last change
        self.last_good = True  # whether the latest round (since the last change) was good

    def _check(self, before: Mode, t: Transition | None, kind: str) -> None:
        if t is None:
            assert self.m.mode == before
            return
        assert t.old == before and t.new == self.m.mode and t.cause
        if t.new == Mode.OFFLINE:
            assert before in (Mode.ONLINE, Mode.RECONCILING)
            assert kind == "bad" and self.bad_run >= self.n, (self.bad_run, self.n)
        elif t.new == Mode.RECONCILING:
            assert before == Mode.OFFLINE and kind == "good" and self.good_run >= self.k
        else:
            assert before == Mode.RECONCILING and kind == "drain" and self.last_good
        self.bad_run = self.good_run = 0
        self.last_good = True

    @rule(active=st.booleans())
    def probe_round(self, active: bool) -> None:
        before = self.m.mode
        if active:
            self.good_run += 1
            self.bad_run = 0
        else:
            self.bad_run += 1
            self.good_run = 0
        self.last_good = active
        self._check(before, self.m.round(active), "good" if active else "bad")

    @rule()
    def merge_missed(self) -> None:
        before = self.m.mode
        self.bad_run += 1
        self.good_run = 0
        self.last_good = False
        self._check(before, self.m.merge_missed(), "bad")

    @rule()
    def drained(self) -> None:
        before = self.m.mode
        self._check(before, self.m.drained(), "drain")

    @invariant()
    def counters_below_thresholds(self) -> None:
        assert self.m.failures < self.n
        assert self.m.successes < self.k


ModeRules.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestModeRules = ModeRules.TestCase


def feed(m: ModeMachine, rounds: list[bool]) -> list[Transition]:
    out = []
    for r in rounds:
        t = m.round(r)
        if t:
            out.append(t)
        if mode_of(m) == Mode.RECONCILING:
            t = m.drained()
            if t:
                out.append(t)
    return out


@pytest.mark.parametrize("start", [Mode.ONLINE, Mode.OFFLINE, Mode.RECONCILING])
def test_a_flapping_link_changes_nothing(start: Mode) -> None:
    """1 round up, 1 round down, 30 rounds, thresholds 3/5: at most the first change, then none."""
    m = ModeMachine(3, 5, mode=start)
    changes = []
    for i in range(30):
        t = m.round(i % 2 == 0)
        if t:
            changes.append((i, t))
    assert changes == [], changes
    assert mode_of(m) == start


def test_offline_after_n_failures_then_reconciling_then_online() -> None:
    m = ModeMachine(3, 5)
    assert feed(m, [False, False]) == [] and mode_of(m) == Mode.ONLINE
    [t] = feed(m, [False])
    assert (t.old, t.new) == (Mode.ONLINE, Mode.OFFLINE) and "3 consecutive" in t.cause
    assert feed(m, [True] * 4) == [] and mode_of(m) == Mode.OFFLINE
    # A bad round restarts the count.
    assert feed(m, [False] + [True] * 4) == [] and mode_of(m) == Mode.OFFLINE
    back = m.round(True)
    assert back is not None and (back.old, back.new) == (Mode.OFFLINE, Mode.RECONCILING)
    assert m.drained() is not None and mode_of(m) == Mode.ONLINE


def test_missed_push_speeds_detection_but_never_alone() -> None:
    m = ModeMachine(3, 5)
    assert m.merge_missed() is None
    assert m.round(False) is None
    t = m.round(False)
    assert t is not None and t.new == Mode.OFFLINE
    m = ModeMachine(3, 5)
    assert m.merge_missed() is None
    assert m.round(True) is None  # a good round wipes the evidence
    assert m.failures == 0


def test_reconciling_waits_for_the_drain_and_falls_back_on_the_same_threshold() -> None:
    m = ModeMachine(3, 2, mode=Mode.OFFLINE)
    m.round(True)
    assert m.round(True) is not None and mode_of(m) == Mode.RECONCILING
    assert m.round(False) is None and mode_of(m) == Mode.RECONCILING  # one bad round is not enough
    assert m.drained() is None  # and the latest round was bad: no hand-back yet
    assert m.round(True) is None
    assert m.drained() is not None and mode_of(m) == Mode.ONLINE
    m = ModeMachine(3, 2, mode=Mode.RECONCILING)
    assert [m.round(False) for _ in range(3)][-1] == Transition(Mode.RECONCILING, Mode.OFFLINE, m_cause(m))


def mode_of(m: ModeMachine) -> Mode:
    """The machine's mode now (a call, so a type checker does not carry an earlier narrowing over)."""
    return m.mode


def m_cause(m: ModeMachine) -> str:
    return "3 consecutive failed rounds (last: no primary endpoint active) while reconciling"


def test_drained_does_nothing_outside_reconciling() -> None:
    for mode in (Mode.ONLINE, Mode.OFFLINE):
        m = ModeMachine(3, 5, mode=mode)
        assert m.drained() is None and mode_of(m) == mode


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ModeMachine(3, 5, mode="sideways")  # type: ignore[arg-type]  # a stored value, checked at run time
    with pytest.raises(ValueError):
        ModeMachine(0, 5)
