"""The primary's ledger: immutable rows keyed by txn_id; an account's balance is their sum.

`apply()` is the one way money moves on the primary — a device charge is a batch of one, a
merge is a batch of hundreds — so the exactly-once rule lives in one place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlite_utils

from siteserver.domain import AccountState, Conflict, Enforcement, authorize, same_use
from siteserver.domain.merge import MergeConflict, over_limit

ApplyStatus = Literal["applied", "duplicate", "denied", "conflict"]
#: why an entry whose txn_id was applied with another account or amount is refused
REUSED_TXN_ID = "txn_id already used for a different account or amount"
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Entry:
    txn_id: str
    account_id: int
    amount_cents: int  # negative charges, positive credits
    kind: str
    enforcement: Enforcement
    occurred_at: str
    origin_site: str | None = None
    flags: tuple[str, ...] = ()
    ref: str | None = None
    comment: str | None = None
    #: a merged charge not booked as the site made it: what was done, and the account it named
    conflict: MergeConflict | None = None
    requested_account: str | None = None
    #: what a device's txn_id was used for (siteserver.domain.use_of); None for a merged entry
    use: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    txn_id: str
    status: ApplyStatus
    amount_cents: int
    balance_after_cents: int | None = None  # for duplicates: the first answer's balance
    seq: int | None = None
    reason: str | None = None
    #: a merged charge: the conflict recorded with its row (the entry's own, or `over_limit`)
    conflict: MergeConflict | None = None

    def raise_if_conflict(self) -> None:
        """A txn_id reused for another account or amount is the caller's error (409)."""
        if self.status == "conflict":
            raise Conflict(
                f"txn_id {self.txn_id} was already used for a different user, account, kind or amount"
            )


@dataclass(slots=True)
class _Account:
    balance: int
    restricted: bool
    overdraft: int
    last_seq: int = 0
    dirty: bool = field(default=False)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def apply(
    conn: sqlite_utils.Database, entries: Sequence[Entry], *, epoch: int, applied_at: str
) -> list[Outcome]:
    """Apply entries in order inside the caller's write transaction.

    A txn_id already in the ledger (or earlier in this batch) is a `duplicate` when it names the
    same account and amount, answered with the first application's balance; otherwise a
    `conflict` that changes nothing. A restricted account's authorized charge past its limit is
    `denied` and leaves no row, so a later retry of the same txn_id may still apply. A merged
    (`origin_site`) fact that drives a restricted account past its limit is applied with an
    `over_limit` conflict; an entry's conflict is recorded beside its row (`ledger_conflicts`).
    """
    if not entries:
        return []
    # txn_id -> account, amount, balance, seq, use
    seen: dict[str, tuple[int, int, int, int, str | None]] = {}
    ids = [e.txn_id for e in entries]
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for txn_id, acc, amount, bal, seq, use in conn.execute(
            f"SELECT txn_id, account_id, amount_cents, balance_after_cents, seq, use FROM ledger "
            f"WHERE txn_id IN ({marks})",
            list(chunk),
        ):
            seen[txn_id] = (acc, amount, bal, seq, use)
    accounts: dict[int, _Account] = {}
    label_of: dict[int, str] = {}
    acc_ids = sorted({e.account_id for e in entries})
    for i in range(0, len(acc_ids), _CHUNK):
        chunk_ids = acc_ids[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk_ids))
        for acc_id, bal, restricted, overdraft, kind, name in conn.execute(
            "SELECT id, balance_cents, restricted, overdraft_cents, kind, name FROM accounts"
            f" WHERE id IN ({marks})",
            chunk_ids,
        ):
            accounts[acc_id] = _Account(bal, bool(restricted), overdraft)
            label_of[acc_id] = account_label(kind, name)
    next_seq = (conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()[0]) + 1

    rows: list[tuple[object, ...]] = []
    flags_json: dict[tuple[str, ...], str] = {}  # a merge's entries share a few flag sets
    conflicts: list[tuple[object, ...]] = []
    out: list[Outcome] = []
    for e in entries:
        prior = seen.get(e.txn_id)
        if prior is not None:
            acc, amount, bal, seq, use = prior
            if acc == e.account_id and amount == e.amount_cents and (e.use is None or same_use(use, e.use)):
                out.append(Outcome(e.txn_id, "duplicate", amount, bal, seq))
            else:
                out.append(
                    Outcome(
                        e.txn_id,
                        "conflict",
                        e.amount_cents,
                        reason=REUSED_TXN_ID,
                    )
                )
            continue
        a = accounts.get(e.account_id)
        if a is None:
            out.append(Outcome(e.txn_id, "denied", e.amount_cents, reason="unknown account"))
            continue
        if e.enforcement is not Enforcement.FACT:  # a fact always applies (authorize: no need to ask)
            verdict = authorize(
                AccountState(a.balance, a.restricted, a.overdraft), e.amount_cents, e.enforcement
            )
            if not verdict.allowed:
                out.append(Outcome(e.txn_id, "denied", e.amount_cents, a.balance, reason=verdict.reason))
                continue
        a.balance += e.amount_cents
        a.dirty = True
        conflict = e.conflict
        past = -(a.balance + a.overdraft)
        if a.restricted and e.origin_site is not None and e.amount_cents < 0 and past > 0:
            conflict = over_limit(conflict, label_of.get(e.account_id, str(e.account_id)), past)
        if conflict is not None:
            conflicts.append((e.txn_id, e.requested_account, conflict.kind, conflict.action))
        seq = next_seq
        next_seq += 1
        a.last_seq = seq
        seen[e.txn_id] = (e.account_id, e.amount_cents, a.balance, seq, e.use)
        rows.append(
            (
                seq,
                e.txn_id,
                e.account_id,
                e.amount_cents,
                a.balance,
                e.kind,
                e.origin_site,
                e.occurred_at,
                applied_at,
                flags_json.get(e.flags) or flags_json.setdefault(e.flags, json.dumps(list(e.flags))),
                e.ref,
                e.comment,
                epoch,
                e.use,
            )
        )
        out.append(Outcome(e.txn_id, "applied", e.amount_cents, a.balance, seq, conflict=conflict))
    if rows:
        conn.conn.executemany(
            "INSERT INTO ledger (seq, txn_id, account_id, amount_cents, balance_after_cents, kind,"
            " origin_site, occurred_at, applied_at, flags, ref, comment, epoch, use)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        moved = [(a.balance, a.last_seq, acc_id) for acc_id, a in accounts.items() if a.dirty]
        conn.conn.executemany("UPDATE accounts SET balance_cents = ?, last_seq = ? WHERE id = ?", moved)
        # The change feed's record of the new balances (the accounts trigger leaves updates that
        # move last_seq to this one statement: primary migration m009).
        conn.execute(
            "INSERT INTO change_log (tbl, pk) SELECT 'accounts', json_array(value) FROM json_each(?)",
            [json.dumps([acc_id for _, _, acc_id in moved])],
        )
    if conflicts:
        conn.conn.executemany(
            "INSERT INTO ledger_conflicts (txn_id, requested_account, kind, action) VALUES (?,?,?,?)",
            conflicts,
        )
    return out


def list_transactions(
    conn: sqlite_utils.Database, *, origin_site: str | None, since_seq: int, limit: int
) -> list[dict[str, object]]:
    where = "l.seq > ?"
    params: list[object] = [since_seq]
    if origin_site is not None:
        where += " AND l.origin_site = ?"
        params.append(origin_site)
    params.append(limit)
    cur = conn.execute(
        "SELECT l.txn_id, l.seq, a.kind, a.name, l.amount_cents, l.kind, l.origin_site,"
        " l.occurred_at, l.applied_at, l.flags, l.balance_after_cents, l.ref, l.comment"
        f" FROM ledger l JOIN accounts a ON a.id = l.account_id WHERE {where}"
        " ORDER BY l.seq LIMIT ?",
        params,
    )
    return [
        {
            "txn_id": r[0],
            "seq": r[1],
            "account": account_label(r[2], r[3]),
            "amount_cents": r[4],
            "kind": r[5],
            "origin_site": r[6],
            "occurred_at": r[7],
            "applied_at": r[8],
            "flags": json.loads(r[9]),
            "balance_after_cents": r[10],
            "ref": r[11],
            "comment": r[12],
        }
        for r in cur
    ]


def account_label(kind: str, name: str) -> str:
    """How an account is named in transactions and reports: `user:alice`, `shared:Marketing`."""
    return f"{'user' if kind == 'personal' else 'shared'}:{name}"


def account_label_sql(alias: str) -> str:
    """`account_label` as an SQL expression over the accounts row `alias` (for a query that must
    name the account in one statement; tests/test_ledger.py checks the two agree)."""
    return f"(CASE {alias}.kind WHEN 'personal' THEN 'user:' ELSE 'shared:' END || {alias}.name)"


@dataclass(frozen=True, slots=True)
class Application:
    """How a txn_id was applied: to which account (its label), how much, at which seq, from
    where; and, for a merged charge booked with a conflict, the account its entry named."""

    txn_id: str
    account: str
    amount_cents: int
    balance_after_cents: int
    seq: int
    kind: str
    origin_site: str | None
    ref: str | None
    occurred_at: str
    applied_at: str
    flags: tuple[str, ...]
    requested_account: str | None = None
    conflict: MergeConflict | None = None

    @property
    def named_account(self) -> str:
        """The account the entry named (the one booked, unless a conflict moved it)."""
        return self.requested_account or self.account


_APPLICATION = (
    "SELECT l.txn_id, a.kind, a.name, l.amount_cents, l.balance_after_cents, l.seq, l.kind,"
    " l.origin_site, l.ref, l.occurred_at, l.applied_at, l.flags, c.requested_account, c.kind, c.action"
    " FROM ledger l JOIN accounts a ON a.id = l.account_id"
    " LEFT JOIN ledger_conflicts c ON c.txn_id = l.txn_id"
)


def _application(r: Sequence[Any]) -> Application:
    conflict = None if r[13] is None else MergeConflict(r[13], r[14])
    return Application(
        txn_id=r[0],
        account=account_label(r[1], r[2]),
        amount_cents=r[3],
        balance_after_cents=r[4],
        seq=r[5],
        kind=r[6],
        origin_site=r[7],
        ref=r[8],
        occurred_at=r[9],
        applied_at=r[10],
        flags=tuple(json.loads(r[11])),
        requested_account=r[12],
        conflict=conflict,
    )


def applications(conn: sqlite_utils.Database, txn_ids: Sequence[str]) -> list[Application]:
    """The ledger rows of these txn_ids (any that were applied; normally one each), whatever
    became of their accounts since."""
    out: list[Application] = []
    for chunk in _chunks(txn_ids):
        marks = ",".join("?" * len(chunk))
        out.extend(
            _application(r) for r in conn.execute(f"{_APPLICATION} WHERE l.txn_id IN ({marks})", list(chunk))
        )
    return out


def applications_from(
    conn: sqlite_utils.Database, origin_site: str, *, since: str, until: str, after_seq: int, limit: int
) -> list[Application]:
    """The rows merged from one site whose charge occurred in [since, until], by seq after
    `after_seq` (a page of the primary's side of a reconciliation report)."""
    return [
        _application(r)
        for r in conn.execute(
            f"{_APPLICATION} WHERE l.origin_site = ? AND l.seq > ? AND l.occurred_at >= ?"
            " AND l.occurred_at <= ? ORDER BY l.seq LIMIT ?",
            [origin_site, after_seq, since, until, limit],
        )
    ]


def _first_seq_applied_since(conn: sqlite_utils.Database, at: str) -> int:
    """The lowest seq of a row applied at or after `at`, found by bisection over the primary key
    (seqs are given in apply order, so applied_at grows with seq): a few look-ups, no scan.
    Above every seq when nothing was applied since."""
    lo, top = conn.execute("SELECT min(seq), max(seq) FROM ledger").fetchone()
    if lo is None:
        return 0
    hi = int(top) + 1
    lo = int(lo)
    while lo < hi:
        mid = (lo + hi) // 2
        seq, applied_at = conn.execute(
            "SELECT seq, applied_at FROM ledger WHERE seq >= ? ORDER BY seq LIMIT 1", [mid]
        ).fetchone()
        if applied_at >= at:
            hi = mid
        else:
            lo = int(seq) + 1
    return lo


def merged_per_site_since(conn: sqlite_utils.Database, at: str) -> dict[str, int]:
    """How many entries each site's merges applied at or after `at` (the fleet page's last 24 h)."""
    first = _first_seq_applied_since(conn, at)
    return {
        str(site): int(n)
        for site, n in conn.execute(
            "SELECT origin_site, count(*) FROM ledger WHERE seq >= ? AND origin_site IS NOT NULL"
            " GROUP BY origin_site",
            [first],
        )
    }
