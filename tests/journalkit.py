"""A journal-upload endpoint for in-process tests of the site's `Pusher`
(siteserver.site.charging): the primary's answer to each upload comes from a function the test
supplies, at the HTTP client's boundary (`quick.upload_journal`), so everything from marking
entries sent to recording verdicts is the site's real code.

The real primary is exercised over HTTP in the site tests. Here a test must choose every answer,
including one the primary gave but the network lost, and block an upload on purpose — things no
real primary can be told to do; so this stands in for the network and the primary, and says so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from siteserver.site.charging import Pusher
from siteserver.site.mirror import Endpoints
from siteserver.store import Database
from siteserver.store import journal as jr

#: (wire entries, timeout) -> the primary's HTTP answer; raise an httpx error for a lost answer
Answer = Callable[[list[dict[str, Any]], float], httpx.Response]


class _Quick:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def upload_journal(self, entries: list[dict[str, Any]], *, timeout: float) -> httpx.Response:
        return self.answer(entries, timeout)


@dataclass
class _Endpoint:
    url: str
    quick: _Quick


@dataclass
class ModelEndpoints:
    """What `Pusher` uses of `siteserver.site.mirror.Endpoints`: one endpoint, failures counted."""

    answer: Answer
    failures: int = 0
    ep: _Endpoint = field(init=False)

    def __post_init__(self) -> None:
        self.ep = _Endpoint("model://primary", _Quick(self.answer))

    def current(self) -> _Endpoint:
        return self.ep

    def ok(self, ep: _Endpoint) -> None:
        pass

    def failed(self, ep: _Endpoint, status: int | None) -> None:
        self.failures += 1


def answered(verdicts: dict[str, jr.Verdict]) -> httpx.Response:
    """The primary's 200 answer to a journal upload with these per-entry verdicts."""
    results = [
        {"txn_id": t, "status": v.status, "seq": v.seq, "balance_cents": v.balance_cents, "reason": v.reason}
        for t, v in verdicts.items()
    ]
    return httpx.Response(200, json={"results": results})


def pusher(db: Database, answer: Answer) -> tuple[Pusher, ModelEndpoints, threading.Event]:
    """A real Pusher on `db` whose uploads `answer` answers; set the event to stop its threads."""
    endpoints = ModelEndpoints(answer)
    stop = threading.Event()
    return Pusher(db, cast(Endpoints, endpoints), stop), endpoints, stop


@contextmanager
def uploading(
    db: Database, answer: Answer, *, release: threading.Event | None = None
) -> Iterator[tuple[Pusher, ModelEndpoints]]:
    """A real Pusher on `db` (uploads answered by `answer`) with its uploader thread running. On
    the way out: its threads told to stop, `release` set (for an answer that may still be holding
    an upload open), and the uploader joined."""
    p, endpoints, stop = pusher(db, answer)
    thread = threading.Thread(target=p.run_uploader, daemon=True)
    thread.start()
    try:
        yield p, endpoints
    finally:
        stop.set()
        if release is not None:
            release.set()
        thread.join(5)
