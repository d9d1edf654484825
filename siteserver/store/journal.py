"""The site's outbox journal: every money-moving event at a site, until the primary has seen it.

An entry is written in the same transaction as its local effect (a job released, a copy charged),
status `pending`; the primary's per-entry answer turns it `applied`, `duplicate` or `rejected`.

The **effective balance** of an account (DESIGN.md, invariant 3) is the mirrored balance plus the
entries the mirror has not yet seen: those still `pending`, and those the primary applied at a
ledger seq beyond the account's mirrored `last_seq`. Once the change feed brings the account row
with `last_seq >= primary_seq`, the entry is in the mirrored balance and no longer added: a charge
is never subtracted twice nor forgotten, whatever order the feed and the merge answers arrive in
(the site has one writer, so each read sees one of the two states).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from siteserver.domain import AccountState
from siteserver.domain.merge import JournalStatus, MergeConflict, MergeStatus, MergeVerdict
from siteserver.store.ledger import REUSED_TXN_ID, account_label, account_label_sql

# One statement (so one consistent read without a transaction around it): the mirrored balance,
# the pending entries from the running total the triggers of migration m003 keep, and the entries
# the primary applied beyond the mirrored last_seq from the partial index journal_merged.
_LABEL = account_label_sql("a")
_EFFECTIVE = (
    "SELECT a.balance_cents"
    f" + COALESCE((SELECT u.pending_cents FROM journal_unmerged u WHERE u.account = {_LABEL}), 0)"
    " + (SELECT COALESCE(SUM(j.booked_cents), 0) FROM journal j"
    f" WHERE j.booked_account = {_LABEL} AND j.status IN ('applied', 'duplicate')"
    " AND j.primary_seq > a.last_seq)"
    " FROM accounts a WHERE a.id = ?"
)


@dataclass(frozen=True, slots=True)
class JournalRow:
    txn_id: str
    seq: int
    account: str
    amount_cents: int
    kind: str
    enforcement: str
    occurred_at: str
    flags: tuple[str, ...]
    ref: str | None
    status: JournalStatus
    primary_seq: int | None = None
    primary_balance_cents: int | None = None
    reason: str | None = None
    #: may have reached the primary (see `mark_sent`); pending and sent = in doubt
    sent: bool = False
    #: the conflict the primary settled when it booked the entry (None: booked as made)
    conflict: MergeConflict | None = None
    #: what the primary booked, when it is not the entry's account or amount
    primary_account: str | None = None
    primary_amount_cents: int | None = None
    last_attempt_at: str | None = None
    printer: str | None = None
    pages: int | None = None
    use: str | None = None  # what its txn_id was first used for (siteserver.domain.use_of)

    @property
    def primary_status(self) -> MergeStatus | None:
        """The primary's verdict as it said it (None: pending)."""
        if self.status == "pending":
            return None
        if self.status == "applied" and self.conflict is not None:
            return "applied_with_conflict"
        return self.status


_COLS = (
    "txn_id, seq, account, amount_cents, kind, enforcement, occurred_at, flags, ref, status,"
    " primary_seq, primary_balance_cents, reason, sent, conflict_kind, conflict_action,"
    " primary_account, primary_amount_cents, last_attempt_at, printer, pages, use"
)


def _row(r: Sequence[Any]) -> JournalRow:
    return JournalRow(
        txn_id=r[0],
        seq=r[1],
        account=r[2],
        amount_cents=r[3],
        kind=r[4],
        enforcement=r[5],
        occurred_at=r[6],
        flags=tuple(json.loads(r[7] or "[]")),
        ref=r[8],
        status=r[9],
        primary_seq=r[10],
        primary_balance_cents=r[11],
        reason=r[12],
        sent=bool(r[13]),
        conflict=None if r[14] is None else MergeConflict(r[14], r[15]),
        primary_account=r[16],
        primary_amount_cents=r[17],
        last_attempt_at=r[18],
        printer=r[19],
        pages=r[20],
        use=r[21],
    )


def label_of(conn: sqlite_utils.Database, account_id: int) -> str | None:
    row = conn.execute("SELECT kind, name FROM accounts WHERE id = ?", [account_id]).fetchone()
    return None if row is None else account_label(row[0], row[1])


def effective_balance(conn: sqlite_utils.Database, account_id: int) -> int | None:
    """Mirrored balance + the journal entries the mirror has not seen (None: no such account).
    One statement of indexed lookups, whatever the length of the journal or of an outage."""
    row = conn.execute(_EFFECTIVE, [account_id]).fetchone()
    return None if row is None else int(row[0])


def pending_count(conn: sqlite_utils.Database) -> int:
    """How many entries the primary has not answered yet (the backlog), from the running totals."""
    return int(conn.execute("SELECT COALESCE(SUM(entries), 0) FROM journal_unmerged").fetchone()[0])


def oldest_pending_at(conn: sqlite_utils.Database) -> str | None:
    """When the oldest entry the primary has not answered was made (None: nothing pending)."""
    row = conn.execute(
        "SELECT occurred_at FROM journal WHERE status = 'pending' ORDER BY seq LIMIT 1"
    ).fetchone()
    return None if row is None else str(row[0])


def counts(conn: sqlite_utils.Database) -> dict[str, int]:
    """The journal by answer: `pending`, `merged` (applied, with a conflict or not, or duplicate)
    and `rejected`; and merged by the primary's verdict."""
    found = {str(k): int(n) for k, n in conn.execute("SELECT status, count(*) FROM journal GROUP BY status")}
    conflicts = conn.execute(
        "SELECT count(*) FROM journal WHERE conflict_kind IS NOT NULL AND status = 'applied'"
    ).fetchone()[0]
    found["applied_with_conflict"] = int(conflicts)
    found["applied"] = found.get("applied", 0) - int(conflicts)
    merged = ("applied", "applied_with_conflict", "duplicate")
    return {
        "pending": found.get("pending", 0),
        "merged": sum(found.get(k, 0) for k in merged),
        "rejected": found.get("rejected", 0),
        **{k: found.get(k, 0) for k in merged},
    }


def between(conn: sqlite_utils.Database, since: str, until: str) -> tuple[int, int]:
    """Entries that occurred between two ISO times (inclusive), and the cents they charged: an
    outage's transactions."""
    row = conn.execute(
        "SELECT count(*), COALESCE(SUM(-amount_cents), 0) FROM journal WHERE occurred_at >= ?"
        " AND occurred_at <= ?",
        [since, until],
    ).fetchone()
    return int(row[0]), int(row[1])


def in_window(
    conn: sqlite_utils.Database, since: str, until: str, *, after_seq: int, through_seq: int, limit: int
) -> list[JournalRow]:
    """Entries that occurred in [since, until], by seq in (`after_seq`, `through_seq`] (a
    report's page)."""
    return [
        _row(r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM journal WHERE seq > ? AND seq <= ? AND occurred_at >= ?"
            " AND occurred_at <= ? ORDER BY seq LIMIT ?",
            [after_seq, through_seq, since, until, limit],
        )
    ]


def last_seq(conn: sqlite_utils.Database) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()[0])


def get(conn: sqlite_utils.Database, txn_id: str) -> JournalRow | None:
    r = conn.execute(f"SELECT {_COLS} FROM journal WHERE txn_id = ?", [txn_id]).fetchone()
    return None if r is None else _row(r)


def rows(conn: sqlite_utils.Database, txn_ids: Iterable[str]) -> list[JournalRow]:
    ids = list(txn_ids)
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    return [
        _row(r)
        for r in conn.execute(f"SELECT {_COLS} FROM journal WHERE txn_id IN ({marks}) ORDER BY seq", ids)
    ]


def with_status(
    conn: sqlite_utils.Database, status: JournalStatus, *, after_seq: int, limit: int
) -> list[JournalRow]:
    """Entries of one status after the site's seq `after_seq`, oldest first (an admin's list)."""
    return [
        _row(r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM journal WHERE status = ? AND seq > ? ORDER BY seq LIMIT ?",
            [status, after_seq, limit],
        )
    ]


def retry_rejected(conn: sqlite_utils.Database, txn_id: str) -> JournalRow | None:
    """A rejected entry back to pending, for the merge to send again (its running totals count it
    again: the triggers); None when there is no rejected entry with this txn_id."""
    cur = conn.execute(
        f"UPDATE journal SET status = 'pending', {_UNANSWERED} WHERE txn_id = ? AND status = 'rejected'",
        [txn_id],
    )
    return get(conn, txn_id) if cur.rowcount else None


#: the columns of a verdict, cleared when an entry goes back to pending
_UNANSWERED = (
    "primary_seq = NULL, primary_balance_cents = NULL, reason = NULL, conflict_kind = NULL,"
    " conflict_action = NULL, primary_account = NULL, primary_amount_cents = NULL"
)


def pending(conn: sqlite_utils.Database, limit: int, *, after_seq: int = 0) -> list[JournalRow]:
    """The oldest pending entries first (after the site's seq `after_seq`; seqs start at 1)."""
    return with_status(conn, "pending", after_seq=after_seq, limit=limit)


def append(
    conn: sqlite_utils.Database,
    *,
    txn_id: str,
    account: str,
    amount_cents: int,
    kind: str,
    enforcement: str,
    occurred_at: str,
    flags: Sequence[str] = (),
    ref: str | None = None,
    printer: str | None = None,
    pages: int | None = None,
    sent: bool = False,
    use: str | None = None,
) -> None:
    """A new pending entry (or a rejected one tried again: the primary keeps no trace of a
    rejection, so the same txn_id may be sent again, e.g. a held job released once more).
    `sent`: it is merged as soon as this transaction commits (see `mark_sent`); an entry once
    sent stays sent (an upload of its earlier version may still be on its way)."""
    seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM journal").fetchone()[0]
    conn.execute(
        "INSERT INTO journal (txn_id, seq, account, amount_cents, kind, enforcement, occurred_at,"
        " flags, ref, printer, pages, status, sent, use) VALUES (?,?,?,?,?,?,?,?,?,?,?,'pending',?,?)"
        " ON CONFLICT(txn_id) DO UPDATE SET seq = excluded.seq, account = excluded.account,"
        " amount_cents = excluded.amount_cents, kind = excluded.kind,"
        " enforcement = excluded.enforcement, occurred_at = excluded.occurred_at,"
        " flags = excluded.flags, ref = excluded.ref, printer = excluded.printer, pages = excluded.pages,"
        " use = excluded.use,"
        f" status = 'pending', {_UNANSWERED},"
        " sent = MAX(journal.sent, excluded.sent)"
        " WHERE journal.status = 'rejected'",
        [
            txn_id,
            seq,
            account,
            amount_cents,
            kind,
            enforcement,
            occurred_at,
            json.dumps(list(flags)),
            ref,
            printer,
            pages,
            int(sent),
            use,
        ],
    )


def mark_sent(conn: sqlite_utils.Database, txn_ids: Iterable[str]) -> None:
    """Committed before an upload leaves: from then on the primary may hold these entries, and
    until their answer is recorded they are in doubt (`in_doubt`)."""
    conn.conn.executemany("UPDATE journal SET sent = 1 WHERE txn_id = ? AND sent = 0", [[t] for t in txn_ids])


def verdict_of(row: JournalRow) -> MergeVerdict | None:
    """The primary's answer already recorded for an entry (None while it is pending)."""
    if row.status == "pending":
        return None
    status = row.primary_status
    assert status is not None
    return MergeVerdict(
        status,
        row.primary_seq,
        row.primary_balance_cents,
        row.reason,
        row.conflict,
        row.primary_account,
        row.primary_amount_cents,
    )


def in_doubt(conn: sqlite_utils.Database, accounts: Iterable[str] | None = None) -> list[JournalRow]:
    """Pending entries that were sent (of these account labels; None: all), oldest first: the
    primary may have applied them without its answer reaching the site."""
    where = "status = 'pending' AND sent = 1"
    if accounts is None:
        found = conn.execute(f"SELECT {_COLS} FROM journal WHERE {where} ORDER BY seq")
        return [_row(r) for r in found]
    labels = sorted(set(accounts))
    out: list[JournalRow] = []
    for label in labels:  # one indexed lookup per account (journal_in_doubt)
        out.extend(
            _row(r)
            for r in conn.execute(f"SELECT {_COLS} FROM journal WHERE {where} AND account = ?", [label])
        )
    return sorted(out, key=lambda r: r.seq)


def record(
    conn: sqlite_utils.Database,
    attempted: Sequence[JournalRow],
    verdicts: Mapping[str, MergeVerdict],
    *,
    now: str,
) -> None:
    """Store the primary's answers for the entries as they were uploaded; entries attempted
    without an answer stay pending. Only a pending entry with the uploaded account and amount
    changes: an answer arriving twice (the background merge and a request) is harmless, and an
    answer for an earlier version of a re-written entry (rejected, then released again) is not
    taken for the answer to the new one. A `rejected` answer counts only for the enforcement it
    was asked with: a release answered after its budget became a fact (`settle_answered`), and
    the primary's refusal of it as an authorization is no longer the answer."""
    unanswered: list[tuple[object, ...]] = []
    answered: list[tuple[object, ...]] = []
    for e in attempted:
        v = verdicts.get(e.txn_id)
        if v is None:
            unanswered.append((now, e.txn_id))
            continue
        status = "applied" if v.status == "applied_with_conflict" else v.status
        c = v.conflict
        answered.append(
            (
                status,
                v.seq,
                v.balance_cents,
                v.reason,
                None if c is None else c.kind,
                None if c is None else c.action,
                v.account,
                v.amount_cents,
                now,
                e.txn_id,
                e.account,
                e.amount_cents,
                status,
                e.enforcement,
            )
        )
    conn.conn.executemany(
        "UPDATE journal SET attempts = attempts + 1, last_attempt_at = ? WHERE txn_id = ?", unanswered
    )
    conn.conn.executemany(
        "UPDATE journal SET status = ?, primary_seq = ?, primary_balance_cents = ?, reason = ?,"
        " conflict_kind = ?, conflict_action = ?, primary_account = ?, primary_amount_cents = ?,"
        " attempts = attempts + 1, last_attempt_at = ? WHERE txn_id = ? AND status = 'pending'"
        " AND account = ? AND amount_cents = ? AND (? != 'rejected' OR enforcement = ?)",
        answered,
    )


def settle_answered(conn: sqlite_utils.Database, txn_ids: Iterable[str], flags: Sequence[str]) -> None:
    """Entries whose request was answered by the local decision (the merge missed its budget):
    facts from now on, marked with `flags`. A refusal of one as an authorization that the primary
    sent meanwhile is undone: the device was answered, the pages are made, the primary books it."""
    for r in rows(conn, txn_ids):
        refused = r.status == "rejected" and r.enforcement == "authorize" and r.reason != REUSED_TXN_ID
        if r.status != "pending" and not refused:
            continue
        added = [f for f in flags if f not in r.flags]
        conn.execute(
            f"UPDATE journal SET status = 'pending', enforcement = 'fact', flags = ?, {_UNANSWERED}"
            " WHERE txn_id = ?",
            [json.dumps([*r.flags, *added]), r.txn_id],
        )


# -- offline spend (bounded exposure, docs/offline.md) ---------------------------------------
# Read from `offline_exposure`, kept by triggers (migration m003): pending entries flagged
# `offline` with a negative amount, for the site ('') and per spender (the `by:<user>` flag, else
# the user of the personal account charged).


def offline_spent_by(conn: sqlite_utils.Database, username: str) -> int:
    """Cents `username` has spent offline that the primary has not yet seen (>= 0)."""
    if not username:
        return 0
    row = conn.execute("SELECT cents FROM offline_exposure WHERE spender = ?", [username]).fetchone()
    return 0 if row is None else int(row[0])


@dataclass(frozen=True, slots=True)
class OfflineSpend:
    site_cents: int
    top_user: str | None
    top_user_cents: int

    def public(self) -> dict[str, Any]:
        return {
            "site_cents": self.site_cents,
            "top_user": {"username": self.top_user, "cents": self.top_user_cents} if self.top_user else None,
        }


def offline_spend(conn: sqlite_utils.Database) -> OfflineSpend:
    """The site's offline spend not yet merged (the exposure the caps bound): the total, and the
    user who spent most."""
    site = conn.execute("SELECT cents FROM offline_exposure WHERE spender = ''").fetchone()
    top = conn.execute(
        "SELECT spender, cents FROM offline_exposure WHERE spender != '' ORDER BY cents DESC, spender LIMIT 1"
    ).fetchone()
    site_cents = 0 if site is None else int(site[0])
    if top is None:
        return OfflineSpend(site_cents, None, 0)
    return OfflineSpend(site_cents, str(top[0]), int(top[1]))


#: merged entries pruned per write transaction: the writer is never held for long
PRUNE_BATCH = 1_000


def prune_merged(conn: sqlite_utils.Database, *, answered_before: str, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` merged entries (applied or duplicate), oldest first, whose answer was
    recorded before `answered_before` and whose charge the mirror already holds (their account's
    mirrored `last_seq` reached the primary's seq, or the account is gone): a pruned entry can
    no longer be missing from an effective balance (invariant 3). Pending and rejected entries are
    never pruned. Returns how many were deleted."""
    cur = conn.execute(
        "DELETE FROM journal WHERE txn_id IN (SELECT j.txn_id FROM journal j"
        " WHERE j.status IN ('applied', 'duplicate') AND COALESCE(j.last_attempt_at, j.occurred_at) < ?"
        " AND NOT EXISTS (SELECT 1 FROM accounts a"
        f" WHERE {_LABEL} = j.booked_account AND a.last_seq < j.primary_seq)"
        " ORDER BY j.seq LIMIT ?)",
        [answered_before, batch],
    )
    return int(cur.rowcount)


def account_state(conn: sqlite_utils.Database, account_id: int) -> AccountState:
    """The account as a site decides on it: its effective balance and its limit."""
    balance = effective_balance(conn, account_id)
    restricted, overdraft = conn.execute(
        "SELECT restricted, overdraft_cents FROM accounts WHERE id = ?", [account_id]
    ).fetchone()
    return AccountState(balance or 0, bool(restricted), int(overdraft))
