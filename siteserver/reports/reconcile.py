"""A reconciliation report made: every journal entry of the window, page by page, compared with
the primary's ledger rows of its txn_id (fetched over the signed sync API, one call per page),
written as the report's lines; the outages, totals and check kept as its head. Memory stays flat:
no more than one page is held, whatever the window."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlite_utils

from siteserver import contract
from siteserver.domain import format_cents
from siteserver.domain.offline import spender
from siteserver.store import Database
from siteserver.store import journal as journal_store
from siteserver.store import reports as reports_store
from siteserver.timeutil import iso, now_iso, parse_iso
from sync.wire import LedgerRow

from .check import mismatch
from .totals import Totals

log = logging.getLogger("siteserver.reports")
_json = json.JSONEncoder(check_circular=False).encode  # one encoder for every line

#: journal entries per page: one look-up call to the primary, one write of report lines
PAGE = 5000
DEFAULT_WINDOW = timedelta(days=30)

#: the primary's ledger rows of these txn_ids (raises when the primary cannot be asked)
Lookup = Callable[[list[str]], Sequence[LedgerRow]]
#: the outages of the site (from its mode history), as its status shows them
Outages = Callable[[], list[contract.OutageOut]]


def window(body: contract.ReportIn) -> tuple[str, str]:
    until = body.until or now_iso()
    since = body.since or iso(parse_iso(until) - DEFAULT_WINDOW)
    return since, until


def site_status(row: journal_store.JournalRow) -> str:
    return {"applied": "merged", "duplicate": "merged"}.get(row.status, row.status)


def entry_view(row: journal_store.JournalRow, found: Sequence[LedgerRow] | None) -> dict[str, Any]:
    """The report's entry: the site's row, and the primary's side as its ledger stands (or, when
    it could not be asked, as the primary answered the merge)."""
    one = found[0] if found is not None and len(found) == 1 else None
    conflict = one.conflict.domain() if one is not None and one.conflict is not None else row.conflict
    account: str | None = None
    amount: int | None = None
    if one is not None:
        account, amount = one.account, one.amount_cents
    elif row.status in ("applied", "duplicate"):
        account = row.primary_account or row.account
        amount = row.amount_cents if row.primary_amount_cents is None else row.primary_amount_cents
    return {
        "txn_id": row.txn_id,
        "occurred_at": row.occurred_at,
        "username": spender(row.flags, row.account),
        "account": row.account,
        "kind": row.kind,
        "printer": row.printer,
        "pages": row.pages,
        "amount_cents": row.amount_cents,
        "offline": "offline" in row.flags,
        "flags": list(row.flags),
        "site_status": site_status(row),
        "primary_status": row.primary_status,
        "primary_account": account,
        "primary_amount_cents": amount,
        "primary_seq": one.seq if one is not None else row.primary_seq,
        "conflict": None if conflict is None else {"kind": conflict.kind, "action": conflict.action},
        "reason": row.reason,
    }


@dataclass
class _Check:
    verified: bool = True
    unreachable: str | None = None
    checked: int = 0
    pending: int = 0
    site_cents: int = 0
    primary_cents: int = 0
    mismatches: int = 0
    first: tuple[str, str] | None = None
    entries: int = 0
    totals: Totals = field(default_factory=Totals)

    def public(self) -> dict[str, Any]:
        agree = None if not self.verified else self.mismatches == 0 and self.site_cents == self.primary_cents
        return {
            "books_agree": agree,
            "verified_against_primary": self.verified,
            "entries_checked": self.checked,
            "pending": self.pending,
            "site_total_cents": self.site_cents,
            "primary_total_cents": self.primary_cents if self.verified else None,
            "summary": self.summary(agree),
        }

    def summary(self, agree: bool | None) -> str:
        pending = (
            f" {self.pending} pending entries are not merged yet and were not checked."
            if self.pending
            else ""
        )
        if agree is None:
            return (
                f"Not verified: the primary could not be asked ({self.unreachable}); {self.entries} entries"
                " are listed as the site saw them, and the books cannot be said to agree." + pending
            )
        if agree:
            return (
                f"The books agree: all {self.checked} answered entries of the window match the primary's"
                f" ledger as it stands ({format_cents(-self.site_cents)} charged)." + pending
            )
        first = "" if self.first is None else f" First: {self.first[0]}: {self.first[1]}."
        return (
            f"The books do not agree: {self.mismatches} of {self.checked} answered entries differ from the"
            f" primary's ledger (the site: {format_cents(-self.site_cents)} charged, the primary:"
            f" {format_cents(-self.primary_cents)}).{first}" + pending
        )


def make_report(
    db: Database, site_id: str, body: contract.ReportIn, lookup: Lookup, outages: Outages
) -> contract.ReportCreatedOut:
    """Make and keep a report of the window; runs on a plain thread (it reads and writes the
    site's database a page at a time and calls the primary)."""
    since, until = window(body)
    report_id = str(uuid.uuid4())
    generated_at = now_iso()
    c = _Check()
    n = 0
    try:
        # The primary's rows of the next page are fetched while this page is checked and written.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-lookup") as ahead:
            # Entries re-written during the report (a job released again) get a new seq: stop at
            # the last one there was when it began, so that none is listed twice.
            last = db.read_sync(journal_store.last_seq)
            page = db.read_sync(_page(since, until, 0, last))
            upcoming: Future[Sequence[LedgerRow]] | None = ahead.submit(_fetch, lookup, page)
            while page:
                following = db.read_sync(_page(since, until, page[-1].seq, last))
                coming = ahead.submit(_fetch, lookup, following) if following and c.verified else None
                found = _found(c, upcoming)
                lines = [_line(c, r, found) for r in page]
                db.write_sync(_add(report_id, n, lines))
                n += len(lines)
                page, upcoming = following, coming
        check = c.public()
        summary = {
            "site_id": site_id,
            "outages": [o.model_dump() for o in outages() if _overlaps(o, since, until)],
            "totals": c.totals.public(),
            "check": check,
        }
        head = reports_store.ReportHead(report_id, since, until, generated_at, summary)
        db.write_sync(lambda conn: reports_store.finish(conn, head))
    except BaseException:
        db.write_sync(lambda conn: reports_store.drop_unfinished(conn, report_id))
        raise
    log.info("reconciliation report %s (%s .. %s): %s", report_id, since, until, check["summary"])
    return contract.ReportCreatedOut(
        report_id=report_id,
        books_agree=check["books_agree"],
        verified_against_primary=check["verified_against_primary"],
        summary=check["summary"],
    )


def _page(
    since: str, until: str, after: int, last: int
) -> Callable[[sqlite_utils.Database], list[journal_store.JournalRow]]:
    return lambda conn: journal_store.in_window(
        conn, since, until, after_seq=after, through_seq=last, limit=PAGE
    )


def _add(
    report_id: str, first: int, lines: list[reports_store.ReportLine]
) -> Callable[[sqlite_utils.Database], None]:
    return lambda conn: reports_store.add_lines(conn, report_id, first, lines)


def _overlaps(o: contract.OutageOut, since: str, until: str) -> bool:
    return o.started_at <= until and (o.ended_at is None or o.ended_at >= since)


def _fetch(lookup: Lookup, page: list[journal_store.JournalRow]) -> Sequence[LedgerRow]:
    """The primary's rows of a page's answered entries (on the look-ahead thread)."""
    txn_ids = [r.txn_id for r in page if r.status != "pending"]
    return lookup(txn_ids) if txn_ids else []


def _found(c: _Check, upcoming: Future[Sequence[LedgerRow]] | None) -> dict[str, list[LedgerRow]] | None:
    """The primary's rows by txn_id; None once the primary could not be asked (then the rest of
    the report is not verified either: one answer for the whole window)."""
    if not c.verified or upcoming is None:
        return None
    try:
        rows = upcoming.result()
    except Exception as e:
        c.verified = False
        c.unreachable = str(e) or type(e).__name__
        log.warning("reconciliation: the primary's ledger could not be asked: %s", c.unreachable)
        return None
    found: dict[str, list[LedgerRow]] = {}
    for r in rows:
        found.setdefault(str(r.txn_id), []).append(r)
    return found


def _line(
    c: _Check, row: journal_store.JournalRow, found: dict[str, list[LedgerRow]] | None
) -> reports_store.ReportLine:
    rows = None if found is None else found.get(row.txn_id, [])
    if found is not None and row.status == "pending":
        rows = []
    view = entry_view(row, rows)
    c.entries += 1
    why = None
    if row.status == "pending":
        c.pending += 1
    elif rows is not None:
        c.checked += 1
        why = mismatch(row, rows)
    if row.status in ("applied", "duplicate"):
        c.site_cents += row.amount_cents
        c.primary_cents += sum(r.amount_cents for r in rows or ())
    if why is not None:
        c.mismatches += 1
        c.first = c.first or (row.txn_id, why)
    if row.status != "rejected":
        account = view["primary_account"] or row.account
        c.totals.add(
            user=view["username"], account=account, printer=row.printer, kind=row.kind, cents=row.amount_cents
        )
    conflict = view["conflict"]
    return reports_store.ReportLine(
        _json(view),
        None if conflict is None else json.dumps({"txn_id": row.txn_id, **conflict}),
        None if why is None else json.dumps({"txn_id": row.txn_id, "why": why}),
    )
