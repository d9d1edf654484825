"""Grouped journal uploads (`Merger.submit` / `run_uploader`, sync/merge.py): the
requests waiting when an uploader starts go out as one upload, each request gets its own
verdicts, a request that gave up is left out, a failed upload answers every request None, and
the upload's timeout is what is left of the requests' budget. The primary's answers come from
tests/kit/model.py (a model primary behind httpx.MockTransport: an upload has to be held open
on purpose here)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlite_utils

from migrations.site import migrations
from siteserver.domain.merge import MergeVerdict
from siteserver.domain.money import MAX_AMOUNT_CENTS
from siteserver.store import Database
from siteserver.store import journal as journal_store
from sync.client import MAX_RETRY_AFTER_SECS, retry_after
from sync.errors import MergeUnsettled
from sync.merge import MERGE_INTERVAL_SECS
from tests.kit.model import Answer, answered, merger, uploading
from tests.kit.primary import open_database


def t(i: int) -> str:
    """The i-th test entry's txn_id (a UUID, as every txn_id on the wire)."""
    return str(uuid.UUID(int=i))


@pytest.fixture
def site_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh site database with pending entries t1..t6 on alice's account."""

    def fill(d: sqlite_utils.Database) -> None:
        for i in range(1, 7):
            journal_store.append(
                d,
                txn_id=t(i),
                account="user:alice",
                amount_cents=-10 * i,
                kind="copy",
                enforcement="fact",
                occurred_at="2026-01-01T00:00:00Z",
            )

    with open_database(tmp_path / "site.db", migrations) as db:
        db.write_sync(fill, fenced=False)
        yield db


class Primary:
    """Applies everything it gets; the first upload waits until `release` is set."""

    def __init__(self) -> None:
        self.uploads: list[list[str]] = []
        self.timeouts: list[float] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.seq = 0

    def __call__(self, wire: list[dict[str, Any]], timeout: float) -> httpx.Response:
        self.uploads.append([e["txn_id"] for e in wire])
        self.timeouts.append(timeout)
        if len(self.uploads) == 1:
            self.entered.set()
            assert self.release.wait(10)
        verdicts = {}
        for e in wire:
            self.seq += 1
            verdicts[e["txn_id"]] = MergeVerdict("applied", self.seq, 0)
        return answered(verdicts)


def rows(db: Database, *txn_ids: str) -> list[journal_store.JournalRow]:
    return db.read_sync(lambda d: journal_store.rows(d, txn_ids))


def test_requests_waiting_together_go_out_as_one_upload(site_db: Database) -> None:
    primary = Primary()
    with uploading(site_db, primary, release=primary.release) as (p, _):
        first = p.submit(rows(site_db, t(1)), 5)
        assert primary.entered.wait(5)
        # While the first upload is held open, three more requests arrive; one gives up.
        second = p.submit(rows(site_db, t(2)), 5)
        gave_up = p.submit(rows(site_db, t(3)), 5)
        third = p.submit(rows(site_db, t(4), t(5)), 5)
        assert gave_up.cancel()
        primary.release.set()
        assert set(first.result(5) or {}) == {t(1)}
        assert set(second.result(5) or {}) == {t(2)}
        assert set(third.result(5) or {}) == {t(4), t(5)}
        assert gave_up.cancelled()
        assert primary.uploads == [[t(1)], [t(2), t(4), t(5)]]
        # Marked sent before they left, answered after; t3 (given up) never left.
        status = {r.txn_id: (r.status, r.sent) for r in rows(site_db, t(1), t(2), t(3), t(4), t(5))}
        assert status == {
            t(1): ("applied", True),
            t(2): ("applied", True),
            t(3): ("pending", False),
            t(4): ("applied", True),
            t(5): ("applied", True),
        }


def test_a_failed_upload_answers_every_request_none(site_db: Database) -> None:
    def broken(wire: list[dict[str, Any]], timeout: float) -> httpx.Response:
        raise RuntimeError("a bug in the upload path")

    def lost(wire: list[dict[str, Any]], timeout: float) -> httpx.Response:
        raise httpx.ReadTimeout("the answer was lost")

    answers: list[Answer] = [broken, lost]
    for answer in answers:
        with uploading(site_db, answer) as (p, endpoints):
            a = p.submit(rows(site_db, t(1)), 5)
            b = p.submit(rows(site_db, t(2)), 5)
            assert a.result(5) is None and b.result(5) is None
            # The uploader survived: it takes the next request too.
            assert p.submit(rows(site_db, t(6)), 5).result(5) is None
        assert [r.status for r in rows(site_db, t(1), t(2), t(6))] == ["pending"] * 3
        if answer is lost:
            assert endpoints.current().state == "down"  # a network failure counted against the endpoint


def test_the_upload_gets_what_is_left_of_the_budget(site_db: Database) -> None:
    primary = Primary()
    with uploading(site_db, primary, release=primary.release) as (p, _):
        first = p.submit(rows(site_db, t(1)), 5)
        assert primary.entered.wait(5)
        waiting = p.submit(rows(site_db, t(2)), 0.5)
        time.sleep(0.3)  # t2 waits for an uploader for most of its budget
        primary.release.set()
        assert first.result(5) is not None and waiting.result(5) is not None
        assert primary.timeouts[0] == pytest.approx(5, abs=0.5)
        assert 0.0 < primary.timeouts[1] <= 0.25, primary.timeouts


def test_an_entry_the_protocol_refuses_stays_pending_and_is_retried(site_db: Database) -> None:
    """An entry that does not fit the merge's wire form (here an amount past the protocol's bound,
    written straight into the journal) is never sent; the merge is an unanswered one: the entries
    stay pending with the attempt counted, the background merge is woken, and settling them is
    `MergeUnsettled` (the feed waits), not an error that would blame the feed's endpoint."""
    too_big = t(99)
    site_db.write_sync(
        lambda d: journal_store.append(
            d,
            txn_id=too_big,
            account="user:alice",
            amount_cents=-(MAX_AMOUNT_CENTS + 1),
            kind="copy",
            enforcement="fact",
            occurred_at="2026-01-01T00:00:00Z",
            sent=True,
        ),
        fenced=False,
    )
    primary = Primary()
    primary.release.set()
    with uploading(site_db, primary) as (merger, _):
        assert merger.merge(rows(site_db, t(1), too_big), 1.0) is None
        assert primary.uploads == []  # nothing left the site
        assert merger.wake.is_set()
        with pytest.raises(MergeUnsettled):
            merger.settle_in_doubt({"user:alice"})
    attempts = site_db.read_sync(
        lambda d: dict(
            d.execute("SELECT txn_id, attempts FROM journal WHERE txn_id IN (?, ?)", [t(1), too_big])
        )
    )
    assert attempts == {t(1): 2, too_big: 2}  # the merge and the settling each counted one attempt
    assert {r.txn_id: r.status for r in rows(site_db, t(1), too_big)} == {t(1): "pending", too_big: "pending"}


def test_a_primary_shedding_load_is_obeyed_with_jitter_otherwise(site_db: Database) -> None:
    """A 429 (or 503) with `Retry-After` makes the background merge wait at least that long before
    its next try; any other failure waits about one interval, jittered (0.5 to 1.5 times) so that sites cut
    off together do not come back in step. The entries stay pending meanwhile."""

    def shedding(wire: list[dict[str, Any]], timeout: float) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "30"}, json={"error": "busy", "detail": "x"})

    def down(wire: list[dict[str, Any]], timeout: float) -> httpx.Response:
        return httpx.Response(500, json={"error": "internal_error", "detail": "x"})

    shed, endpoints, stop = merger(site_db, shedding)
    try:
        assert shed.merge_pending_once() < 0
        assert 29 <= shed.backoff_secs() <= 30
        assert endpoints.current().state == "active"  # a busy primary is not a dead one
    finally:
        stop.set()
        endpoints.current().quick.close()
    failing, endpoints, stop = merger(site_db, down)
    try:
        assert failing.merge_pending_once() < 0
        waits = [failing.backoff_secs() for _ in range(200)]
        assert all(0.5 * MERGE_INTERVAL_SECS <= w <= 1.5 * MERGE_INTERVAL_SECS for w in waits)
        assert len(set(waits)) > 100  # jittered, not one fixed interval
    finally:
        stop.set()
        endpoints.current().quick.close()
    assert {r.status for r in rows(site_db, *(t(i) for i in range(1, 7)))} == {"pending"}


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        (429, "12", 12.0),
        (503, "0.5", 0.5),
        (503, "999999", MAX_RETRY_AFTER_SECS),
        (429, "soon", None),
        (429, "-3", None),
        (500, "12", None),
        (429, None, None),
    ],
)
def test_retry_after_is_read_from_429_and_503_only(
    status: int, header: str | None, expected: float | None
) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    assert retry_after(httpx.Response(status, headers=headers)) == expected
