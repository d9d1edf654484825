"""The primary's side of a merge: a site's journal entries applied through `store.ledger.apply`,
all of an upload in one write transaction, at most once per `txn_id`, one verdict per entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlite_utils

from siteserver.domain import Enforcement
from siteserver.domain.merge import MergeStatus
from siteserver.store import Database, ledger
from siteserver.store import accounts as accounts_store
from siteserver.timeutil import now_iso

from . import wire


@dataclass
class Apply:
    db: Database
    epoch_of: Callable[[], int]

    async def merge(self, site_id: str, body: wire.MergeIn) -> wire.MergeOut:
        """Apply a site's journal entries in one write transaction; one result per entry, in order."""
        # The epoch is read inside the write transaction, as every ledger write reads it.
        return await self.db.write(
            lambda conn: apply_entries(conn, site_id, body.entries, epoch=self.epoch_of())
        )


def apply_entries(
    conn: sqlite_utils.Database, site_id: str, entries: list[wire.JournalEntry], *, epoch: int
) -> wire.MergeOut:
    now = now_iso()
    labels = {e.account for e in entries}
    account_ids = {label: accounts_store.account_by_label(conn, label) for label in labels}
    batch: list[ledger.Entry] = []
    where: list[int] = []
    for i, e in enumerate(entries):
        account_id = account_ids[e.account]
        if account_id is None:
            continue
        batch.append(
            ledger.Entry(
                str(e.txn_id),
                account_id,
                e.amount_cents,
                e.kind,
                Enforcement(e.enforcement),
                e.occurred_at,
                origin_site=site_id,
                flags=tuple(e.flags),
                ref=e.ref,
            )
        )
        where.append(i)
    outcomes = dict(zip(where, ledger.apply(conn, batch, epoch=epoch, applied_at=now), strict=True))
    results = [
        _result(e, out) if (out := outcomes.get(i)) is not None else _unknown_account(conn, e)
        for i, e in enumerate(entries)
    ]
    applied = [e.amount_cents for e, r in zip(entries, results, strict=True) if r.status == "applied"]
    receipt = wire.Receipt(
        entries=len(entries),
        applied=len(applied),
        duplicate=sum(r.status == "duplicate" for r in results),
        rejected=sum(r.status == "rejected" for r in results),
        applied_cents=sum(applied),
    )
    return wire.MergeOut(results=results, receipt=receipt)


def _answer(
    e: wire.JournalEntry,
    status: MergeStatus,
    seq: int | None = None,
    balance: int | None = None,
    reason: str | None = None,
) -> wire.MergeResult:
    return wire.MergeResult(txn_id=e.txn_id, status=status, seq=seq, balance_cents=balance, reason=reason)


def _result(e: wire.JournalEntry, out: ledger.Outcome) -> wire.MergeResult:
    if out.status == "applied" or out.status == "duplicate":
        return _answer(e, out.status, out.seq, out.balance_after_cents)
    return _answer(e, "rejected", reason=out.reason or out.status)


def _unknown_account(conn: sqlite_utils.Database, e: wire.JournalEntry) -> wire.MergeResult:
    """An entry whose account is gone (or never was). If its txn_id was applied before (the user
    deleted since), the answer is still that first application's: merging twice has one effect."""
    first = ledger.first_application(conn, str(e.txn_id))
    if first is None:
        return _answer(e, "rejected", reason="unknown account")
    if first.account == e.account and first.amount_cents == e.amount_cents:
        return _answer(e, "duplicate", first.seq, first.balance_after_cents)
    return _answer(e, "rejected", reason=ledger.REUSED_TXN_ID)
