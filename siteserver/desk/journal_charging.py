"""How a site charges: the outbox journal, decided locally, confirmed by the primary in time.

`JournalCharging.charge_for` runs inside the flow's write transaction: the site decides against
the account's effective local balance (online rule or offline policies,
siteserver.domain.offline), and an allowed charge becomes a `pending` journal entry in the same
transaction as its local effect (invariant 1). `confirm` then merges the entries into the primary
(sync.merge) within `wan.request_budget_ms`: when the primary answers in time its verdict is
recorded and is the answer; when it does not, the entry stays pending and the local decision
stands (invariant 2: offline is the same path with the merge failing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence

import sqlite_utils

from siteserver.config import Offline
from siteserver.domain import AccountState, JobStatus, same_use
from siteserver.domain import offline as offline_rules
from siteserver.domain.merge import MergeVerdict
from siteserver.domain.modes import Mode
from siteserver.store import accounts as accounts_store
from siteserver.store import journal as journal_store
from siteserver.store import ledger
from siteserver.store.db import Database
from siteserver.store.settings import get_policies
from sync.merge import Merger

from .charging import ChargeAsk, Charging

log = logging.getLogger("siteserver.site.journal")


class JournalCharging(Charging):
    """A site's charges: journal entries decided locally, confirmed by the primary in time."""

    release_status = JobStatus.RELEASING
    confirms = True

    def __init__(
        self,
        db: Database,
        merger: Merger,
        site_mode: Callable[[], Mode],
        *,
        budget_secs: float,
        budget_missed: threading.Event,
        on_budget_missed: Callable[[], None] | None = None,
        limits: Offline | None = None,
    ) -> None:
        self.db = db
        self.merger = merger
        #: the site's mode as the WAN monitor knows it now (it stores each change too): every
        #: decision and answer reads it here, not from disk
        self.site_mode = site_mode
        self.budget_secs = budget_secs
        #: set when a merge missed its budget, cleared by the merger when an upload is answered:
        #: while set, decide offline
        self.budget_missed = budget_missed
        #: called (thread-safe, cheap) whenever a request's merge got no verdict within the budget:
        #: evidence of a dead WAN for the site's WAN monitor
        self.on_budget_missed = on_budget_missed
        #: `[offline]` of the site's configuration: the caps on offline spending
        self.limits = limits or Offline()

    # -- the one local decision ------------------------------------------------------------------

    def offline(self) -> bool:
        """Decide alone: the site's mode is not `online`, or the last merge missed its budget."""
        return self.budget_missed.is_set() or self.site_mode() != Mode.ONLINE

    def merges_now(self) -> bool:
        """Whether `confirm` will merge an entry written now at once (unless the site is known to
        be offline): then the entry is marked sent in its own transaction (store.journal.mark_sent)."""
        return self.site_mode() != Mode.OFFLINE

    def _retry(self, conn: sqlite_utils.Database, ask: ChargeAsk) -> tuple[ledger.Outcome, int | None] | None:
        """A retry (e.g. usage after a lost answer): the first decision stands."""
        prior = journal_store.get(conn, ask.txn_id)
        if prior is None or prior.status == "rejected":
            return None
        prior_id = accounts_store.account_by_label(conn, prior.account)
        if prior.amount_cents == -ask.cost_cents and same_use(prior.use, ask.use) and prior_id is not None:
            balance = journal_store.effective_balance(conn, prior_id)
            return ledger.Outcome(ask.txn_id, "duplicate", prior.amount_cents, balance), prior_id
        return ledger.Outcome(ask.txn_id, "conflict", -ask.cost_cents, reason=ledger.REUSED_TXN_ID), None

    def _caps(self, conn: sqlite_utils.Database, username: str, offline: bool) -> offline_rules.Caps:
        limits = self.limits
        if not offline or (
            limits.max_offline_spend_per_user_cents is None and limits.max_offline_spend_site_cents is None
        ):
            return offline_rules.NO_CAPS
        return offline_rules.Caps(
            limits.max_offline_spend_per_user_cents,
            limits.max_offline_spend_site_cents,
            journal_store.offline_spent_by(conn, username),
            journal_store.offline_spend(conn).site_cents,
        )

    def charge_for(self, conn: sqlite_utils.Database, ask: ChargeAsk) -> tuple[ledger.Outcome, int | None]:
        """Decide locally (the online rule, or the mirrored offline policies when offline) and, if
        allowed, write the pending journal entry."""
        retried = self._retry(conn, ask)
        if retried is not None:
            return retried
        offline = self.offline()
        policies = get_policies(conn)
        user = ask.user if ask.user is not None and not ask.user.disabled else None
        named = accounts_store.get_shared_account(conn, ask.account) if ask.account is not None else None
        question = offline_rules.ChargeQuestion(
            username=ask.username,
            cost_cents=ask.cost_cents,
            enforcement=ask.enforcement,
            user_known=user is not None,
            named_account=ask.account,
            named_allowed=named is not None and ask.username in named.members,
        )
        target = offline_rules.target_of(question, policies, offline=offline)
        account_id: int | None = None
        if target.allowed:
            if target.shared_account is None:
                account_id = user.account_id if user is not None else None
            else:
                shared = accounts_store.get_shared_account(conn, target.shared_account)
                account_id = shared.account_id if shared is not None else None
        states: dict[str | None, AccountState] = {}
        if account_id is not None:
            states[target.shared_account] = journal_store.account_state(conn, account_id)
        caps = self._caps(conn, ask.username, offline)
        decision = offline_rules.decide(question, policies, states, offline=offline, caps=caps)
        balance = states[target.shared_account].balance_cents if account_id is not None else None
        if not decision.allowed or account_id is None:
            out = ledger.Outcome(ask.txn_id, "denied", -ask.cost_cents, balance, reason=decision.reason)
            return out, account_id
        assert balance is not None
        label = journal_store.label_of(conn, account_id)
        assert label is not None
        flags = decision.flags
        by = offline_rules.by_flag(ask.username)
        if offline and by is not None:
            flags = (*flags, by)
        journal_store.append(
            conn,
            txn_id=ask.txn_id,
            account=label,
            amount_cents=-ask.cost_cents,
            kind=ask.kind,
            enforcement=decision.enforcement.value,
            occurred_at=ask.occurred_at,
            flags=flags,
            ref=ask.ref,
            printer=ask.printer,
            pages=ask.pages,
            sent=self.merges_now(),
            use=ask.use,
        )
        return ledger.Outcome(ask.txn_id, "applied", -ask.cost_cents, balance - ask.cost_cents), account_id

    def balance(self, conn: sqlite_utils.Database, account_id: int, stored: int) -> int:
        found = journal_store.effective_balance(conn, account_id)
        return stored if found is None else found

    def mode(self) -> Mode:
        mode = self.site_mode()
        return Mode.OFFLINE if mode == Mode.ONLINE and self.budget_missed.is_set() else mode

    def _missed_budget(self, txn_ids: Sequence[str]) -> None:
        """No verdict in the budget: offline for this request (and the next, until an upload is
        answered). The local decision is the answer, so the entries are facts from now on, marked
        (`offline`, `budget:missed`); a refusal the primary sent too late is undone."""
        self.budget_missed.set()
        self.merger.wake.set()
        if self.on_budget_missed is not None:
            try:
                self.on_budget_missed()
            except Exception:
                log.exception("on_budget_missed failed")
        flags = (offline_rules.OFFLINE_FLAG, "budget:missed")
        with contextlib.suppress(RuntimeError):  # the database is closed: the site is stopping
            self.db.write_sync(lambda conn: journal_store.settle_answered(conn, txn_ids, flags))

    async def confirm(self, txn_ids: Sequence[str]) -> dict[str, MergeVerdict] | None:
        if self.site_mode() == Mode.OFFLINE:
            # The WAN monitor already knows no primary answers: spending the budget on a merge that
            # cannot be answered would only slow the branch down. Same path, the merge deferred:
            # the entries stay pending; the background merge sends them once the link is back.
            # Nothing is read back: the commit's answer stands as it is.
            return None
        found_rows = await self.db.read(lambda conn: journal_store.rows(conn, txn_ids), snapshot=False)
        # Answers the background merge may already have recorded since the commit count as this
        # request's.
        known = {r.txn_id: v for r in found_rows if (v := journal_store.verdict_of(r)) is not None}
        # Only entries marked sent with their write: any other is the background merge's (it marks first).
        rows = [r for r in found_rows if r.status == "pending" and r.sent]
        if not rows:
            return known
        budget = self.budget_secs
        try:
            found = await asyncio.wait_for(asyncio.wrap_future(self.merger.submit(rows, budget)), budget)
        except TimeoutError:
            # No verdict in the budget: the entries stay pending, the local decision stands.
            # The merge finishes on its thread and records whatever answer it gets.
            found = None
        if found is None:
            await asyncio.to_thread(self._missed_budget, [r.txn_id for r in rows])
            return known
        return {**known, **found}
