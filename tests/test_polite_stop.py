"""A polite stop (SIGTERM) while print providers long-poll: the polls are answered, nothing is
cut off mid-request, no error is logged, and the process exits 0 without waiting out the poll."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from siteserver import sample
from tests.kit.primary import Primary


def test_sigterm_answers_waiting_long_polls_and_exits_cleanly(primary: Primary, world: sample.World) -> None:
    answers: list[httpx.Response] = []

    def poll() -> None:
        with primary.client(world.provider) as c:
            answers.append(
                c.get("/api/provider/v1/releases", params={"printer": "mono-1", "wait": 60}, timeout=90)
            )

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)  # the poll is waiting inside the server
    t0 = time.monotonic()
    primary.process.signal(signal.SIGTERM)
    code = primary.process.wait(timeout=30)
    took = time.monotonic() - t0
    t.join(timeout=30)
    log = primary.process.log_tail(20_000)
    assert code == 0, log
    assert [r.status_code for r in answers] == [200], log
    assert answers[0].json() == {"releases": []}
    assert "Traceback" not in log and " ERROR " not in log, log
    # Far below the 60 s the poll asked for (and below uvicorn's 5 s forced cancel).
    assert took < 5, f"stop took {took:.1f}s"
