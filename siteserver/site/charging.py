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
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import httpx
import sqlite_utils

from siteserver.config import Offline
from siteserver.domain import AccountState, JobStatus, authorize
from siteserver.domain import offline as off
from siteserver.frontdesk import ChargeAsk, Charging
from siteserver.store import Database, ledger
from siteserver.store import accounts as acc
from siteserver.store import journal as jr
from siteserver.store.accounts import account_by_label
from siteserver.store.settings import get_policies
from siteserver.timeutil import now_iso

from .mirror import Endpoints

log = logging.getLogger("siteserver.site.journal")

PUSH_INTERVAL_SECS = 2.0
PUSH_BATCH = 500
BACKGROUND_TIMEOUT_SECS = 10.0
#: threads uploading requests' entries; each takes every ask waiting when it starts (one upload)
UPLOADERS = 3
#: the shortest upload timeout, for a group whose budget is (almost) spent: still one real try
MIN_UPLOAD_SECS = 0.05


@dataclass(slots=True)
class _Ask:
    """A request's entries waiting for an uploader, and where its verdicts go."""

    entries: Sequence[jr.JournalRow]
    deadline: float  # time.monotonic() by which the request stops waiting
    future: Future[dict[str, jr.Verdict] | None]


class Pusher:
    """Uploads journal entries to the primary and records the per-entry verdicts."""

    def __init__(self, db: Database, endpoints: Endpoints, stop: threading.Event) -> None:
        self.db = db
        self.endpoints = endpoints
        self.stop = stop
        self.wake = threading.Event()
        #: called (on the pushing thread) after each upload the primary answered
        self.on_answered: Callable[[], None] | None = None
        self._asks: queue.SimpleQueue[_Ask] = queue.SimpleQueue()

    def push(self, entries: Sequence[jr.JournalRow], timeout: float) -> dict[str, jr.Verdict] | None:
        """One upload (on a plain thread); None when the primary gave no answer. Verdicts are
        recorded before returning; entries without one stay pending."""
        if not entries:
            return {}
        unsent = [e.txn_id for e in entries if not e.sent]
        if unsent:  # committed before anything leaves: from now on the entries may be in doubt
            try:
                self.db.write_sync(lambda d: jr.mark_sent(d, unsent), fenced=False)
            except RuntimeError:  # the database is closed: the site is stopping
                return None
        ep = self.endpoints.current()
        verdicts: dict[str, jr.Verdict] | None = None
        try:
            r = ep.quick.upload_journal([e.wire() for e in entries], timeout=timeout)
            if r.status_code == 200:
                verdicts = {
                    str(x["txn_id"]): jr.Verdict(x["status"], x["seq"], x["balance_cents"], x["reason"])
                    for x in r.json()["results"]
                }
                self.endpoints.ok(ep)
                if self.on_answered is not None:
                    self.on_answered()
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
            self.db.write_sync(lambda d: jr.record(d, entries, found, now=now_iso()), fenced=False)
        except RuntimeError:  # the database is closed: the site is stopping
            return None
        if verdicts is None:
            self.wake.set()
        return verdicts

    def submit(
        self, entries: Sequence[jr.JournalRow], timeout: float
    ) -> Future[dict[str, jr.Verdict] | None]:
        """A request's entries, uploaded together with every other request's waiting at the same
        moment (group upload: one signed request, one primary transaction for all of them), within
        `timeout` seconds from now (the time spent waiting for an uploader included)."""
        fut: Future[dict[str, jr.Verdict] | None] = Future()
        self._asks.put(_Ask(entries, time.monotonic() + timeout, fut))
        return fut

    def run_uploader(self) -> None:
        """An uploader thread (UPLOADERS of them): never dies."""
        while not self.stop.is_set():
            try:
                first = self._asks.get(timeout=0.5)
            except queue.Empty:
                continue
            group = [first]
            size = len(first.entries)
            while size < PUSH_BATCH:
                try:
                    nxt = self._asks.get_nowait()
                except queue.Empty:
                    break
                group.append(nxt)
                size += len(nxt.entries)
            # A request that gave up (its budget ran out) is not waited for; its entries stay
            # pending for the background pusher.
            group = [a for a in group if a.future.set_running_or_notify_cancel()]
            if not group:
                continue
            entries = list({e.txn_id: e for a in group for e in a.entries}.values())
            left = min(a.deadline for a in group) - time.monotonic()
            try:
                verdicts = self.push(entries, max(left, MIN_UPLOAD_SECS))
            except Exception:
                log.exception("journal upload failed")
                verdicts = None
            for a in group:
                found = (
                    None
                    if verdicts is None
                    else {e.txn_id: verdicts[e.txn_id] for e in a.entries if e.txn_id in verdicts}
                )
                a.future.set_result(found)

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

    def __init__(
        self,
        db: Database,
        pusher: Pusher,
        site_mode: Callable[[], str],
        *,
        budget_secs: float,
        limits: Offline | None = None,
    ) -> None:
        self.db = db
        self.pusher = pusher
        #: the site's mode as the WAN monitor knows it now (`online`/`offline`/`reconciling`; the
        #: monitor stores each change too): every decision and answer reads it here, not from disk
        self.site_mode = site_mode
        self.budget_secs = budget_secs
        #: `[offline]` of the site's configuration: the caps on offline spending
        self.limits = limits or Offline()
        #: called (thread-safe, cheap) whenever a request's push got no verdict within the budget;
        #: the site app wires its mode machine here (`note_push_missed`)
        self.on_push_missed: Callable[[], None] | None = None
        # A push missed its budget and no upload has been answered since: decide offline.
        self._missed = threading.Event()
        pusher.on_answered = self._missed.clear

    # -- the one local decision ------------------------------------------------------------------

    def offline(self, db: sqlite_utils.Database) -> bool:
        """Decide alone: the site's mode is not `online`, or the last push missed its budget."""
        return self._missed.is_set() or self.site_mode() != "online"

    def pushes_now(self) -> bool:
        """Whether `confirm` will push an entry written now at once (unless the site is known to
        be offline): then the entry is marked sent in its own transaction (store.journal.mark_sent)."""
        return self.site_mode() != "offline"

    def charge_for(self, db: sqlite_utils.Database, ask: ChargeAsk) -> tuple[ledger.Outcome, int | None]:
        """Decide locally (siteserver.domain.offline.decide: the online rule, or the mirrored
        offline policies when offline) and, if allowed, write the pending journal entry."""
        prior = jr.get(db, ask.txn_id)
        if prior is not None and prior.status != "rejected":
            # A retry (e.g. usage after a lost answer): the first decision stands.
            prior_id = account_by_label(db, prior.account)
            if prior.amount_cents == -ask.cost_cents and prior_id is not None:
                bal = jr.effective_balance(db, prior_id)
                return ledger.Outcome(ask.txn_id, "duplicate", prior.amount_cents, bal), prior_id
            return ledger.Outcome(
                ask.txn_id,
                "conflict",
                -ask.cost_cents,
                reason="txn_id already used for a different account or amount",
            ), None
        offline = self.offline(db)
        policies = get_policies(db)
        user = ask.user if ask.user is not None and not ask.user.disabled else None
        named = acc.get_shared_account(db, ask.account) if ask.account is not None else None
        question = off.Ask(
            username=ask.username,
            cost_cents=ask.cost_cents,
            enforcement=ask.enforcement,
            user_known=user is not None,
            named_account=ask.account,
            named_allowed=named is not None and ask.username in named.members,
        )
        target = off.target_of(question, policies, offline=offline)
        account_id: int | None = None
        if target.allowed:
            if target.shared_account is None:
                account_id = user.account_id if user is not None else None
            else:
                shared = acc.get_shared_account(db, target.shared_account)
                account_id = shared.account_id if shared is not None else None
        states: dict[str | None, AccountState] = {}
        if account_id is not None:
            states[target.shared_account] = _state(db, account_id)
        caps = off.NO_CAPS
        if offline and (
            self.limits.max_offline_spend_per_user_cents is not None
            or self.limits.max_offline_spend_site_cents is not None
        ):
            spend = jr.offline_spend(db)
            caps = off.Caps(
                self.limits.max_offline_spend_per_user_cents,
                self.limits.max_offline_spend_site_cents,
                jr.offline_spent_by(db, ask.username),
                spend.site_cents,
            )
        decision = off.decide(question, policies, states, offline=offline, caps=caps)
        balance = states[target.shared_account].balance_cents if account_id is not None else None
        if not decision.allowed or account_id is None:
            out = ledger.Outcome(ask.txn_id, "denied", -ask.cost_cents, balance, reason=decision.reason)
            return out, account_id
        assert balance is not None
        label = jr.label_of(db, account_id)
        assert label is not None
        flags = decision.flags
        by = jr.by_flag(ask.username)
        if offline and by is not None:
            flags = (*flags, by)
        jr.append(
            db,
            txn_id=ask.txn_id,
            account=label,
            amount_cents=-ask.cost_cents,
            kind=ask.kind,
            enforcement=decision.enforcement.value,
            occurred_at=ask.occurred_at,
            flags=flags,
            ref=ask.ref,
            sent=self.pushes_now(),
        )
        return ledger.Outcome(ask.txn_id, "applied", -ask.cost_cents, balance - ask.cost_cents), account_id

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
            sent=self.pushes_now(),
        )
        return ledger.Outcome(entry.txn_id, "applied", entry.amount_cents, balance + entry.amount_cents)

    def balance(self, db: sqlite_utils.Database, account_id: int, stored: int) -> int:
        found = jr.effective_balance(db, account_id)
        return stored if found is None else found

    def mode(self, db: sqlite_utils.Database) -> str:
        mode = self.site_mode()
        return "offline" if mode == "online" and self._missed.is_set() else mode

    def _missed_budget(self, txn_ids: Sequence[str]) -> None:
        """No verdict in the budget: offline for this request (and the next, until an upload is
        answered). Entries decided by the online rule are marked so (`offline`, `budget:missed`)."""
        self._missed.set()
        self.pusher.wake.set()
        if self.on_push_missed is not None:
            try:
                self.on_push_missed()
            except Exception:
                log.exception("on_push_missed failed")

        with contextlib.suppress(RuntimeError):  # the database is closed: the site is stopping
            self.db.write_sync(lambda d: jr.add_flags(d, txn_ids, (off.OFFLINE, "budget:missed")))

    async def confirm(self, txn_ids: Sequence[str]) -> dict[str, jr.Verdict] | None:
        if self.site_mode() == "offline":
            # The WAN monitor already knows no primary answers: spending the budget on a push that
            # cannot be answered would only slow the branch down. Same path, the push deferred:
            # the entries stay pending; the pusher merges them once the monitor sees the link back.
            # Nothing is read back: the commit's answer stands as it is.
            return None
        found_rows = await self.db.read(lambda d: jr.rows(d, txn_ids), snapshot=False)
        # Answers the pusher may already have recorded since the commit count as this request's.
        known = {r.txn_id: v for r in found_rows if (v := jr.verdict_of(r)) is not None}
        # Only entries marked sent with their write: any other is the pusher's (it marks first).
        rows = [r for r in found_rows if r.status == "pending" and r.sent]
        if not rows:
            return known
        budget = self.budget_secs
        try:
            found = await asyncio.wait_for(asyncio.wrap_future(self.pusher.submit(rows, budget)), budget)
        except TimeoutError:
            # No verdict in the budget: the entries stay pending, the local decision stands.
            # The push finishes on its thread and records whatever answer it gets.
            found = None
        if found is None:
            await asyncio.to_thread(self._missed_budget, [r.txn_id for r in rows])
            return known
        return {**known, **found}


def _state(db: sqlite_utils.Database, account_id: int) -> AccountState:
    balance = jr.effective_balance(db, account_id)
    restricted, overdraft = db.execute(
        "SELECT restricted, overdraft_cents FROM accounts WHERE id = ?", [account_id]
    ).fetchone()
    return AccountState(balance or 0, bool(restricted), int(overdraft))


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
