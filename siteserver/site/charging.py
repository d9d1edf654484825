"""How a site charges: the outbox journal, decided locally, confirmed by the primary in time.

`JournalCharging.charge` runs inside the flow's write transaction: the domain rule `authorize()`
decides against the account's effective local balance, and an allowed charge becomes a `pending`
journal entry in the same transaction as its local effect (invariant 1). `confirm` then pushes the
entries to the primary (signed `POST /api/sync/v1/journal`) with at most `wan.request_budget_ms`:
when the primary answers in time its verdict is recorded and is the answer; when it does not, the
entry stays pending and the local decision stands (invariant 2: offline is the same path with the
push failing). `Pusher` drains whatever stays pending, every ~2 s and right after a failed push.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import httpx
import sqlite_utils

from siteserver.domain import AccountState, JobStatus, authorize
from siteserver.frontdesk import Charging
from siteserver.store import Database, ledger
from siteserver.store import journal as jr
from siteserver.timeutil import now_iso

from .mirror import Endpoints, read_state
from .status import mode_of

log = logging.getLogger("siteserver.site.journal")

PUSH_INTERVAL_SECS = 2.0
PUSH_BATCH = 500
BACKGROUND_TIMEOUT_SECS = 10.0


class Pusher:
    """Uploads journal entries to the primary and records the per-entry verdicts."""

    def __init__(self, db: Database, endpoints: Endpoints, stop: threading.Event) -> None:
        self.db = db
        self.endpoints = endpoints
        self.stop = stop
        self.wake = threading.Event()

    def push(self, entries: Sequence[jr.JournalRow], timeout: float) -> dict[str, jr.Verdict] | None:
        """One upload (on a plain thread); None when the primary gave no answer. Verdicts are
        recorded before returning; entries without one stay pending."""
        if not entries:
            return {}
        ep = self.endpoints.current()
        attempted = [e.txn_id for e in entries]
        verdicts: dict[str, jr.Verdict] | None = None
        try:
            r = ep.quick.upload_journal([e.wire() for e in entries], timeout=timeout)
            if r.status_code == 200:
                verdicts = {
                    str(x["txn_id"]): jr.Verdict(x["status"], x["seq"], x["balance_cents"], x["reason"])
                    for x in r.json()["results"]
                }
                self.endpoints.ok(ep)
            else:
                log.warning("journal upload to %s answered HTTP %d", ep.url, r.status_code)
                if r.status_code >= 500 or r.status_code == 401:
                    self.endpoints.failed(ep, r.status_code)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            if not self.stop.is_set():
                log.info("journal upload to %s failed: %s", ep.url, e or type(e).__name__)
                if isinstance(e, httpx.HTTPError):
                    self.endpoints.failed(ep, None)
        found = verdicts or {}
        try:
            self.db.write_sync(lambda d: jr.record(d, attempted, found, now=now_iso()), fenced=False)
        except RuntimeError:  # the database is closed: the site is stopping
            return None
        if verdicts is None:
            self.wake.set()
        return verdicts

    def push_pending_once(self, timeout: float = BACKGROUND_TIMEOUT_SECS) -> int:
        """Upload the oldest pending entries (one batch); returns how many were sent."""
        rows = self.db.read_sync(lambda d: jr.pending(d, PUSH_BATCH))
        if not rows:
            return 0
        if self.push(rows, timeout) is None:
            return -len(rows)
        return len(rows)

    def run(self) -> None:
        """The pusher thread: never dies."""
        while not self.stop.is_set():
            sent = 0
            try:
                sent = self.push_pending_once()
            except Exception:
                if self.stop.is_set():
                    return
                log.exception("journal push failed")
            if sent >= PUSH_BATCH:
                continue  # more waiting: at once
            if sent < 0:  # its own push failed: one interval before the next try
                self.stop.wait(PUSH_INTERVAL_SECS)
                self.wake.clear()
                continue
            self.wake.wait(PUSH_INTERVAL_SECS)  # or at once, after a request's push failed
            self.wake.clear()


class JournalCharging(Charging):
    """A site's charges: journal entries decided locally, confirmed by the primary in time."""

    release_status = JobStatus.RELEASING
    confirms = True
    reads_state = True

    def __init__(self, db: Database, pusher: Pusher, *, budget_secs: float) -> None:
        self.db = db
        self.pusher = pusher
        self.budget_secs = budget_secs

    def charge(self, db: sqlite_utils.Database, entry: ledger.Entry) -> ledger.Outcome:
        label = jr.label_of(db, entry.account_id)
        if label is None:
            return ledger.Outcome(entry.txn_id, "denied", entry.amount_cents, reason="unknown account")
        prior = jr.get(db, entry.txn_id)
        if prior is not None and prior.status != "rejected":
            if prior.account == label and prior.amount_cents == entry.amount_cents:
                bal = jr.effective_balance(db, entry.account_id)
                return ledger.Outcome(entry.txn_id, "duplicate", entry.amount_cents, bal)
            return ledger.Outcome(
                entry.txn_id,
                "conflict",
                entry.amount_cents,
                reason="txn_id already used for a different account or amount",
            )
        balance = jr.effective_balance(db, entry.account_id)
        assert balance is not None
        restricted, overdraft = db.execute(
            "SELECT restricted, overdraft_cents FROM accounts WHERE id = ?", [entry.account_id]
        ).fetchone()
        verdict = authorize(
            AccountState(balance, bool(restricted), int(overdraft)), entry.amount_cents, entry.enforcement
        )
        if not verdict.allowed:
            return ledger.Outcome(entry.txn_id, "denied", entry.amount_cents, balance, reason=verdict.reason)
        jr.append(
            db,
            txn_id=entry.txn_id,
            account=label,
            amount_cents=entry.amount_cents,
            kind=entry.kind,
            enforcement=entry.enforcement.value,
            occurred_at=entry.occurred_at,
            flags=entry.flags,
            ref=entry.ref,
        )
        return ledger.Outcome(entry.txn_id, "applied", entry.amount_cents, balance + entry.amount_cents)

    def balance(self, db: sqlite_utils.Database, account_id: int, stored: int) -> int:
        found = jr.effective_balance(db, account_id)
        return stored if found is None else found

    def mode(self, db: sqlite_utils.Database) -> str:
        return mode_of(read_state(db))

    async def confirm(self, txn_ids: Sequence[str]) -> dict[str, jr.Verdict]:
        rows = await self.db.read(lambda d: [r for r in jr.rows(d, txn_ids) if r.status == "pending"])
        if not rows:
            return {}
        budget = self.budget_secs
        try:
            found = await asyncio.wait_for(asyncio.to_thread(self.pusher.push, rows, budget), budget)
        except TimeoutError:
            # No verdict in the budget: the entries stay pending, the local decision stands.
            # The push finishes on its thread and records whatever answer it gets.
            self.pusher.wake.set()
            return {}
        return found or {}


def recover_releasing(db: sqlite_utils.Database) -> int:
    """At start: jobs left 'releasing' by a stop between a release and its confirmation. No push
    is in flight, so the journal decides: a rejected charge puts the job back on hold, any other
    (pending or merged) lets it print."""
    held = db.execute(
        "UPDATE jobs SET status = 'held', printer = NULL, grayscale = NULL, account_id = NULL,"
        " balance_after_cents = NULL, released_at = NULL, released_by_device = NULL"
        " WHERE status = 'releasing' AND txn_id IN (SELECT txn_id FROM journal WHERE status = 'rejected')"
    ).rowcount
    released = db.execute("UPDATE jobs SET status = 'released' WHERE status = 'releasing'").rowcount
    return int(held) + int(released)
