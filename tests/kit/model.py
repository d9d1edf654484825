"""A model primary for in-process tests, behind `httpx.MockTransport`: real `SyncClient`s (and
real `siteserver.site.mirror.Endpoints` holding them) whose requests a function of the test
answers, so everything from signing a request to recording a verdict is the site's real code.

The real primary is exercised over HTTP in the site tests. Here a test must choose every answer,
including one the primary gave but the network lost, and block an upload on purpose — things no
real primary can be told to do; so this stands in for the network and the primary, and says so.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from siteserver.site.charging import Pusher
from siteserver.site.mirror import Endpoint, Endpoints
from siteserver.store import Database
from siteserver.store import journal as jr
from sync import signing
from sync.client import JOURNAL_PATH, SyncClient

MODEL_URL = "http://primary.test"

#: A model primary's answer to one request; raise an httpx error for a lost answer.
Handler = Callable[[httpx.Request], httpx.Response]
#: (wire entries, timeout) -> the primary's answer to a journal upload
Answer = Callable[[list[dict[str, Any]], float], httpx.Response]


def model_client(handler: Handler, *, url: str = MODEL_URL, site_id: str = "s1") -> SyncClient:
    """A real SyncClient (with a fresh key) whose requests `handler` answers."""
    return SyncClient(url, site_id, signing.generate_key(), transport=httpx.MockTransport(handler))


def model_endpoint(handler: Handler, *, url: str = MODEL_URL, state: str = "down") -> Endpoint:
    """A real Endpoint at `url` whose feed and quick clients `handler` answers."""
    client = model_client(handler, url=url)
    return Endpoint(url, client, client, state=state)


def journal_handler(answer: Answer) -> Handler:
    """A handler for journal uploads only: `answer` gets the entries and the request's timeout."""

    def handle(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", JOURNAL_PATH), request.url
        timeout: dict[str, float] = request.extensions["timeout"]
        return answer(json.loads(request.content)["entries"], timeout["read"])

    return handle


def answered(verdicts: dict[str, jr.Verdict]) -> httpx.Response:
    """The primary's 200 answer to a journal upload with these per-entry verdicts."""
    results = [
        {"txn_id": t, "status": v.status, "seq": v.seq, "balance_cents": v.balance_cents, "reason": v.reason}
        for t, v in verdicts.items()
    ]
    return httpx.Response(200, json={"results": results})


def pusher(db: Database, answer: Answer) -> tuple[Pusher, Endpoints, threading.Event]:
    """A real Pusher on `db` with one endpoint (state "active") whose journal uploads `answer`
    answers; set the event to stop its threads."""
    endpoints = Endpoints([model_endpoint(journal_handler(answer), state="active")])
    stop = threading.Event()
    return Pusher(db, endpoints, stop), endpoints, stop


@contextmanager
def uploading(
    db: Database, answer: Answer, *, release: threading.Event | None = None
) -> Iterator[tuple[Pusher, Endpoints]]:
    """A real Pusher on `db` (uploads answered by `answer`) with its uploader thread running. On
    the way out: its threads told to stop, `release` set (for an answer that may still be holding
    an upload open), the uploader joined and the endpoint's client closed."""
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
        endpoints.current().quick.close()
