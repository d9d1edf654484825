"""Many sites draining their journals at once: the primary lets background merges in one site at
a time and sheds the others with 429 + Retry-After (sync.apply.MergeGate, the MergeShedding
middleware), while a request's own merge (a device waiting) is never shed."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from siteserver.domain import Shed
from sync import wire
from sync.apply import HANDOVER_SECS, MERGE_DUTY, MERGE_TURN_SECS, MergeGate
from tests.kit.journal import JOURNAL, add_payers, balances, entry
from tests.kit.primary import FakeClock, Primary
from tests.kit.site import enrolled_site


def test_the_gate_takes_one_site_at_a_time_then_pauses_for_the_others() -> None:
    clock = FakeClock()
    gate = MergeGate(clock=clock)
    gate.enter("a")
    gate.enter("a")  # its pipeline: a second upload while the first applies
    with pytest.raises(Shed) as shed:
        gate.enter("b")
    assert shed.value.retry_after_secs >= MERGE_TURN_SECS
    clock.advance(1.0)
    gate.leave()
    gate.leave()
    # b was turned away: the gate now rests as long again as it was busy (MERGE_DUTY = 0.5).
    assert MERGE_DUTY == 0.5
    assert gate.refusal("b") is not None
    clock.advance(1.01)
    assert gate.refusal("b") is None
    gate.enter("b")
    gate.leave()
    # Nobody waited for b: no pause after it.
    assert gate.refusal("a") is None


def test_a_site_holds_the_gate_no_longer_than_its_turn_while_others_wait() -> None:
    clock = FakeClock()
    gate = MergeGate(clock=clock)
    gate.enter("a")
    with pytest.raises(Shed):
        gate.enter("b")
    clock.advance(MERGE_TURN_SECS + 0.1)
    with pytest.raises(Shed):  # a's turn is over: its next upload waits too
        gate.enter("a")
    gate.leave()
    assert gate.owner is None


def test_an_owner_between_two_uploads_keeps_its_turn_while_others_wait() -> None:
    """A drain's first, small upload is answered before its next is sent: in that gap the gate
    stays the owner's (HANDOVER_SECS), so a waiting site does not take it and shed the owner's
    next batch; once the owner has gone quiet the pause follows as usual."""
    clock = FakeClock()
    gate = MergeGate(clock=clock)
    gate.enter("a")  # the small first upload
    with pytest.raises(Shed):
        gate.enter("b")
    clock.advance(0.2)
    gate.leave()
    clock.advance(HANDOVER_SECS / 2)
    assert gate.refusal("b") is not None  # still a's turn
    gate.enter("a")  # its next, full batch
    clock.advance(0.8)
    gate.leave()
    clock.advance(HANDOVER_SECS + 0.01)
    # a went quiet: the gate rests as long again as a kept it busy (1.25 s, from its first upload).
    assert gate.refusal("b") is not None and gate.owner is None
    clock.advance(1.0)
    assert gate.refusal("b") is None


def test_a_busy_primary_sheds_background_merges_of_other_sites_not_requests(primary: Primary) -> None:
    add_payers(primary)
    a, b = enrolled_site(primary, "site-a"), enrolled_site(primary, "site-b")
    answers: list[int] = []
    big_done = threading.Event()

    def drain_a() -> None:
        with a.client() as c:
            for _ in range(3):  # three uploads of 5000, back to back, each until it passes
                body = {"entries": [entry("user:alice", 1) for _ in range(wire.MAX_JOURNAL_ENTRIES)]}
                while True:
                    r = c.request("POST", JOURNAL, json_body=body, params={wire.BACKGROUND: "true"})
                    answers.append(r.status_code)
                    if r.status_code != 429:
                        break
                    time.sleep(float(r.headers["Retry-After"]))  # as a site obeys it
        big_done.set()

    sheds: list[dict[str, Any]] = []
    passed = 0
    thread = threading.Thread(target=drain_a)
    thread.start()
    try:
        with b.client() as c:
            # b's own request merges (a device waiting) always pass.
            r = c.request("POST", JOURNAL, json_body={"entries": [entry("user:bob", 2)]})
            assert r.status_code == 200, r.text
            while not big_done.is_set() and not sheds:
                one = {"entries": [entry("user:bob", 3)]}
                r = c.request("POST", JOURNAL, json_body=one, params={wire.BACKGROUND: "true"})
                if r.status_code == 429:
                    sheds.append({"retry_after": r.headers.get("Retry-After"), **r.json()})
                else:
                    assert r.status_code == 200, r.text
                    passed += 1
    finally:
        thread.join(timeout=120)
    # Whichever site took the gate first, the other was shed: a while b held it (its turn lasts
    # MERGE_TURN_SECS), or b while a merged.
    assert answers.count(200) == 3 and set(answers) <= {200, 429}, answers
    assert sheds, "site b's background merge was never shed while site a merged 15000 entries"
    assert sheds[0]["error"] == "busy" and "another site" in sheds[0]["detail"]
    assert int(sheds[0]["retry_after"]) >= 1
    # A shed upload changed nothing: bob has his 2 cents of the request merge, and 3 more for
    # each background upload that passed; alice 1 for each of a's entries applied.
    got = balances(primary)
    assert got["bob"] == 100 + 2 + 3 * passed
    assert got["alice"] == 1000 + wire.MAX_JOURNAL_ENTRIES * answers.count(200)
