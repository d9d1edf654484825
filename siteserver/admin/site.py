"""The site's administration (CONTRACT.md, "Site administration"): its status computed from real
state (mode, primary endpoints, sync cursor and lag, journal counts, outages, offline exposure),
a pull now and a merge now; and what its health URL shows."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import httpx
import sqlite_utils

from siteserver import contract
from siteserver.config import Offline
from siteserver.domain import Conflict, Enforcement, Unavailable, found
from siteserver.domain.merge import JournalStatus
from siteserver.reports import reconcile, render
from siteserver.store import Database, sync_state
from siteserver.store import journal as journal_store
from siteserver.store import reports as reports_store
from siteserver.timeutil import now_iso, parse_iso, utcnow
from sync import wire
from sync.endpoints import Endpoints
from sync.errors import SyncFailed
from sync.merge import Merger
from sync.pull import Mirror

#: one look-up call of a report's check (a page of 1000 txn_ids)
LOOKUP_TIMEOUT_SECS = 30.0
ReportFormat = Literal["json", "csv", "html"]

#: a merge now sends at most this many batches: entries keep arriving while the site serves
MERGE_NOW_ROUNDS = 100


def outages(conn: sqlite_utils.Database) -> list[contract.OutageOut]:
    """Each stretch that began with a change to offline and ended with the next change to online,
    with how fast it was noticed and merged, and what was charged in it."""
    shown = []
    for o in sync_state.outages(conn):
        count, cents = journal_store.between(conn, o.started_at, o.ended_at or now_iso())
        shown.append(
            contract.OutageOut(
                started_at=o.started_at,
                ended_at=o.ended_at,
                detection_secs=o.detection_secs,
                merge_secs=o.merge_secs,
                offline_transactions=count,
                offline_cents=cents,
            )
        )
    return shown


def journal_counts(conn: sqlite_utils.Database) -> contract.JournalCountsOut:
    return contract.JournalCountsOut(**journal_store.counts(conn))


def offline_exposure(conn: sqlite_utils.Database, caps: Offline) -> contract.OfflineExposureOut:
    """How close the site is to its offline caps: offline charges not yet merged, and the limits."""
    return contract.OfflineExposureOut(
        **journal_store.offline_spend(conn).public(),
        site_cap_cents=caps.max_offline_spend_site_cents,
        per_user_cap_cents=caps.max_offline_spend_per_user_cents,
    )


def site_status(
    conn: sqlite_utils.Database, site_id: str, primary: contract.PrimaryOut, caps: Offline
) -> contract.SiteStatusOut:
    state = sync_state.read(conn)
    last = state.last_sync_at
    lag = round((utcnow() - parse_iso(last)).total_seconds(), 3) if last else None
    change = sync_state.last_mode_change(conn)
    return contract.SiteStatusOut(
        site_id=site_id,
        mode=state.mode,
        since=state.mode_since,
        mode_cause=change.cause if change is not None else None,
        primary=primary,
        sync=contract.SyncOut(cursor=state.cursor, last_sync_at=last, lag_secs=lag),
        journal=contract.JournalCountsOut(
            **journal_store.counts(conn), oldest_pending_at=journal_store.oldest_pending_at(conn)
        ),
        outages=outages(conn),
        offline_exposure=offline_exposure(conn, caps),
    )


def entry_out(row: journal_store.JournalRow) -> contract.JournalEntryOut:
    return contract.JournalEntryOut.model_validate(row, from_attributes=True)


@dataclass
class SiteAdmin:
    db: Database
    site_id: str
    endpoints: Endpoints
    mirror: Mirror
    merger: Merger
    caps: Offline
    tls: contract.TlsOut | None = None
    _reporting: threading.Lock = field(default_factory=threading.Lock)

    async def health(self) -> contract.SiteHealthOut:
        state = await self.db.read(sync_state.read)
        return contract.SiteHealthOut(status="OK", mode=state.mode)

    async def status(self) -> contract.SiteStatusOut:
        view = self.endpoints.view()
        status = await self.db.read(lambda conn: site_status(conn, self.site_id, view, self.caps))
        return status.model_copy(update={"merge": self.merger.progress.view(), "tls": self.tls})

    async def pull_now(self) -> contract.PullOut:
        """One pull from the primary, at once; `primary_unreachable` (503) when it fails."""
        try:
            cursor = await asyncio.to_thread(self.mirror.pull_now)
        except (httpx.HTTPError, SyncFailed) as e:
            raise Unavailable(
                f"the pull from the primary failed: {e or type(e).__name__}", code="primary_unreachable"
            ) from e
        return contract.PullOut(cursor=cursor)

    async def journal(self, status: JournalStatus, after_seq: int, limit: int) -> contract.JournalEntriesOut:
        rows = await self.db.read(
            lambda conn: journal_store.with_status(conn, status, after_seq=after_seq, limit=limit)
        )
        return contract.JournalEntriesOut(
            entries=[entry_out(r) for r in rows], next_seq=rows[-1].seq if rows else after_seq
        )

    async def retry(self, txn_id: str) -> contract.JournalEntryOut:
        """A rejected `fact` (a charge that happened: a copy, an offline release) is merged again,
        e.g. once the admin has put back the account it names. An `authorize` entry's release was
        undone when it was rejected: nothing was printed, so there is nothing to bill."""

        def retry_rejected(conn: sqlite_utils.Database) -> journal_store.JournalRow:
            row = found(journal_store.get(conn, txn_id), f"no journal entry {txn_id}")
            if row.status != "rejected":
                raise Conflict(f"journal entry {txn_id} is {row.status}, not rejected")
            if row.enforcement != Enforcement.FACT.value:
                raise Conflict(
                    f"journal entry {txn_id} was a release the primary refused: it was undone, not printed"
                )
            retried = journal_store.retry_rejected(conn, txn_id)
            assert retried is not None
            return retried

        row = await self.db.write(retry_rejected, fenced=False)
        self.merger.wake.set()  # the background merge sends it at once
        return entry_out(row)

    async def create_report(self, body: contract.ReportIn) -> contract.ReportCreatedOut:
        """Make a reconciliation report of the window (one at a time), checked against the
        primary's ledger as it stands."""

        def lookup(txn_ids: list[str]) -> list[wire.LedgerRow]:
            return self.endpoints.current().quick.lookup(txn_ids, timeout=LOOKUP_TIMEOUT_SECS).rows

        def made() -> contract.ReportCreatedOut:
            with self._reporting:
                return reconcile.make_report(
                    self.db, self.site_id, body, lookup, lambda: self.db.read_sync(outages)
                )

        return await asyncio.to_thread(made)

    async def report(self, report_id: str, form: ReportFormat) -> tuple[Iterator[bytes], str]:
        """A kept report as a byte stream in `form`, and its media type; 404 when unknown."""
        head = await self.db.read(lambda conn: reports_store.head(conn, report_id))
        found(head, f"no reconciliation report {report_id}")
        assert head is not None
        return render.RENDERERS[form](self.db, head), render.MEDIA_TYPES[form]

    async def merge_now(self) -> contract.MergeNowOut:
        """Merge the pending journal now (in batches, oldest first); how many entries were sent
        and the journal counts after the primary's verdicts were recorded."""
        merged = 0
        for _ in range(MERGE_NOW_ROUNDS):
            sent = await asyncio.to_thread(self.merger.merge_pending_once, background=False)
            if sent < 0:
                raise Unavailable("the primary did not answer the merge", code="primary_unreachable")
            merged += sent
            if sent == 0:
                break
        return contract.MergeNowOut(merged=merged, journal=await self.db.read(journal_counts))
