"""A model primary for in-process tests, behind `httpx.MockTransport`: real `SyncClient`s (and
real `sync.endpoints.Endpoints` holding them) whose requests a function of the test
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

from siteserver.domain.merge import MergeVerdict
from siteserver.store import Database
from sync import signing, wire
from sync.client import SyncClient
from sync.endpoints import Endpoint, Endpoints
from sync.merge import Merger

MODEL_URL = "http://primary.test"

#: A model primary's answer to one request; raise an httpx error for a lost answer.
Handler = Callable[[httpx.Request], httpx.Response]
#: (wire entries, timeout) -> the primary's answer to a merge
Answer = Callable[[list[dict[str, Any]], float], httpx.Response]


def model_client(handler: Handler, *, url: str = MODEL_URL, site_id: str = "s1") -> SyncClient:
    """A real SyncClient (with a fresh key) whose requests `handler` answers."""
    return SyncClient(url, site_id, signing.generate_key(), transport=httpx.MockTransport(handler))


def model_endpoint(handler: Handler, *, url: str = MODEL_URL, state: str = "down") -> Endpoint:
    """A real Endpoint at `url` whose feed and quick clients `handler` answers."""
    client = model_client(handler, url=url)
    return Endpoint(url, client, client, state=state)


def journal_handler(answer: Answer) -> Handler:
    """A handler for merges only: `answer` gets the entries and the request's timeout."""

    def handle(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", wire.url_path(wire.MERGE_PATH)), request.url
        timeout: dict[str, float] = request.extensions["timeout"]
        return answer(json.loads(request.content)["entries"], timeout["read"])

    return handle


def answered(verdicts: dict[str, MergeVerdict]) -> httpx.Response:
    """The primary's 200 answer to a merge with these per-entry verdicts (amounts in the receipt
    are not known here: 0)."""
    results = [
        wire.MergeResult.model_validate(
            {
                "txn_id": t,
                "status": v.status,
                "seq": v.seq,
                "balance_cents": v.balance_cents,
                "reason": v.reason,
            }
        )
        for t, v in verdicts.items()
    ]
    receipt = wire.Receipt(
        entries=len(results),
        applied=sum(r.status == "applied" for r in results),
        duplicate=sum(r.status == "duplicate" for r in results),
        rejected=sum(r.status == "rejected" for r in results),
        applied_cents=0,
    )
    body = wire.MergeOut(results=results, receipt=receipt)
    return httpx.Response(200, content=body.model_dump_json(), headers={"Content-Type": "application/json"})


def merger(db: Database, answer: Answer) -> tuple[Merger, Endpoints, threading.Event]:
    """A real Merger on `db` with one endpoint (state "active") whose merges `answer` answers; set
    the event to stop its threads."""
    endpoints = Endpoints([model_endpoint(journal_handler(answer), state="active")])
    stop = threading.Event()
    return Merger(db, endpoints, stop), endpoints, stop


@contextmanager
def uploading(
    db: Database, answer: Answer, *, release: threading.Event | None = None
) -> Iterator[tuple[Merger, Endpoints]]:
    """A real Merger on `db` (merges answered by `answer`) with its uploader thread running. On
    the way out: its threads told to stop, `release` set (for an answer that may still be holding
    an upload open), the uploader joined and the endpoint's client closed."""
    p, endpoints, stop = merger(db, answer)
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
