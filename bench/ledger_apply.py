"""Ledger throughput: `ledger.apply` through the Database writer vs a bare SQLite executemany.

Both sides write the same rows (same columns, same values) into a table of the same schema (the
real migrations' `ledger` and `accounts`, with their indexes, triggers and foreign keys), with the
same pragmas (WAL, synchronous=FULL, foreign_keys=ON), in batches of --batch rows, one transaction
(one fsync) per batch:

* ledger: each batch is one `Database.write_sync(lambda db: ledger.apply(db, batch, ...))`, the way
  a merge upload is applied: duplicate check by txn_id, account lookup, authorisation, ledger insert,
  balance updates, all on the writer thread inside BEGIN IMMEDIATE … COMMIT;
* bare: `executemany(INSERT …)` of the precomputed rows between BEGIN IMMEDIATE and COMMIT on a
  plain connection: no duplicate check, no balance update.

The accounts are unrestricted by default, so no charge is a conflict; with --restricted they are
restricted at 0 and every merged charge drives one past its limit, so each row also gets its
`over_limit` conflict row (the worst case, all conflicts).

At the end it checks that every account balance equals the sum of its ledger rows (and the
expected final balance), so a fast run that corrupts money cannot pass for a good one.

    python bench/ledger_apply.py [--charges 100000] [--batch 500] [--accounts 2000] [--rounds 1]
                                 [--restricted]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlite_utils
from _common import (  # first: puts this checkout on sys.path
    report_failures,
    run_main,
)

from migrations.primary import migrations
from siteserver.domain import Enforcement
from siteserver.store import ledger
from siteserver.store.db import Database, connect

EPOCH = 1
ORIGIN = "branch-01"
INSERT_SQL = (
    "INSERT INTO ledger (seq, txn_id, account_id, amount_cents, balance_after_cents, kind,"
    " origin_site, occurred_at, applied_at, flags, ref, comment, epoch)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


@dataclass
class Workload:
    account_ids: list[int]
    batches: list[list[ledger.Entry]]
    applied_at: list[str]  # one per batch
    rows: list[list[tuple[object, ...]]]  # the ledger rows apply() is expected to write, per batch
    final_balance: dict[int, int]


@dataclass
class Timing:
    total: float  # wall seconds for all batches
    body: float  # of which inside the transaction body (apply() / executemany), before COMMIT


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def make_workload(charges: int, batch: int, accounts: int, first_account_id: int, seed: int) -> Workload:
    """Everything random is decided here, before any clock starts."""
    rnd = random.Random(seed)
    account_ids = list(range(first_account_id, first_account_id + accounts))
    balance = dict.fromkeys(account_ids, 0)
    start = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
    batches: list[list[ledger.Entry]] = []
    rows: list[list[tuple[object, ...]]] = []
    applied: list[str] = []
    seq = 0
    for b in range(0, charges, batch):
        n = min(batch, charges - b)
        entries: list[ledger.Entry] = []
        brows: list[tuple[object, ...]] = []
        applied_at = iso(start + timedelta(hours=1, seconds=b))
        for i in range(n):
            acc = rnd.choice(account_ids)
            amount = -rnd.randint(1, 500)
            occurred = iso(start + timedelta(milliseconds=250 * (b + i)))
            e = ledger.Entry(
                txn_id=str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                account_id=acc,
                amount_cents=amount,
                kind="print",
                enforcement=Enforcement.FACT,
                occurred_at=occurred,
                origin_site=ORIGIN,
            )
            entries.append(e)
            balance[acc] += amount
            seq += 1
            brows.append(
                (
                    seq,
                    e.txn_id,
                    acc,
                    amount,
                    balance[acc],
                    e.kind,
                    e.origin_site,
                    e.occurred_at,
                    applied_at,
                    json.dumps(list(e.flags)),
                    e.ref,
                    e.comment,
                    EPOCH,
                )
            )
        batches.append(entries)
        rows.append(brows)
        applied.append(applied_at)
    return Workload(account_ids, batches, applied, rows, balance)


def insert_accounts(db: sqlite_utils.Database, n: int, restricted: bool) -> list[int]:  # in a transaction
    now = iso(datetime.now(UTC))
    db.conn.executemany(
        "INSERT INTO accounts (kind, name, balance_cents, restricted, overdraft_cents, created_at)"
        " VALUES ('personal', ?, 0, ?, 0, ?)",
        [(f"bench-user-{i:06d}", int(restricted), now) for i in range(n)],
    )
    return [r[0] for r in db.execute("SELECT id FROM accounts WHERE name LIKE 'bench-user-%' ORDER BY id")]


def first_account_id(directory: Path, accounts: int) -> int:
    """Migrate a scratch file once to learn which ids the accounts will get (the migration seeds one)."""
    probe = Database(directory / "probe.db")
    probe.open(migrations)
    try:
        ids = probe.write_sync(lambda db: insert_accounts(db, accounts, False), fenced=False)
    finally:
        probe.close()
    return ids[0]


# -- the two contenders ----------------------------------------------------------------------


def run_ledger(path: Path, w: Workload, restricted: bool) -> tuple[Timing, dict[str, int], Database]:
    db = Database(path)
    db.open(migrations)
    ids = db.write_sync(lambda d: insert_accounts(d, len(w.account_ids), restricted), fenced=False)
    if ids != w.account_ids:
        raise RuntimeError("account ids differ from the workload's")
    statuses: dict[str, int] = {}
    body = [0.0]  # seconds spent inside apply() on the writer thread (the rest: BEGIN/COMMIT/fsync, queue)

    def timed_apply(
        d: sqlite_utils.Database, entries: list[ledger.Entry], applied_at: str
    ) -> list[ledger.Outcome]:
        t = time.perf_counter()
        try:
            return ledger.apply(d, entries, epoch=EPOCH, applied_at=applied_at)
        finally:
            body[0] += time.perf_counter() - t

    t0 = time.perf_counter()
    for entries, applied_at in zip(w.batches, w.applied_at, strict=True):
        out = db.write_sync(functools.partial(timed_apply, entries=entries, applied_at=applied_at))
        for o in out:
            statuses[o.status] = statuses.get(o.status, 0) + 1
    elapsed = time.perf_counter() - t0
    return Timing(elapsed, body[0]), statuses, db


def bare_schema(migrated: Path) -> list[str]:
    """The real `accounts` and `ledger` DDL (tables, indexes, triggers) from a migrated file, and
    the `change_log` table their sync-feed triggers write to."""
    sdb = connect(migrated, readonly=True)
    try:
        stmts = [
            r[0]
            for r in sdb.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name IN ('accounts', 'ledger', 'change_log')"
                " AND sql IS NOT NULL"
                " ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END,"
                " CASE tbl_name WHEN 'accounts' THEN 0 ELSE 1 END, name"
            )
        ]
    finally:
        sdb.close()
    return stmts


def run_bare(path: Path, schema: list[str], w: Workload, restricted: bool) -> Timing:
    bdb = connect(path)  # the project's connection: same pragmas (WAL, synchronous=FULL, FKs)
    conn = bdb.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        for stmt in schema:
            conn.execute(stmt)
        # The same accounts with the same ids, so the foreign-key checks cost the same.
        now = iso(datetime.now(UTC))
        conn.executemany(
            "INSERT INTO accounts (id, kind, name, balance_cents, restricted, overdraft_cents, created_at)"
            " VALUES (?, 'personal', ?, 0, ?, 0, ?)",
            [(a, f"bench-user-{i:06d}", int(restricted), now) for i, a in enumerate(w.account_ids)],
        )
        conn.execute("COMMIT")
        body = 0.0
        t0 = time.perf_counter()
        for rows in w.rows:
            conn.execute("BEGIN IMMEDIATE")
            t = time.perf_counter()
            conn.executemany(INSERT_SQL, rows)
            body += time.perf_counter() - t
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        n = conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]
        expected = sum(len(r) for r in w.rows)
        if n != expected:
            raise RuntimeError(f"bare table holds {n} rows, expected {expected}")
    finally:
        bdb.close()
    return Timing(elapsed, body)


# -- the check ----------------------------------------------------------------------------------


def verify(db: Database, w: Workload) -> list[str]:
    def work(d: sqlite_utils.Database) -> list[str]:
        problems: list[str] = []
        mism = d.execute(
            "SELECT a.id, a.balance_cents, COALESCE(SUM(l.amount_cents), 0) AS s FROM accounts a"
            " LEFT JOIN ledger l ON l.account_id = a.id GROUP BY a.id HAVING a.balance_cents != s"
        ).fetchall()
        for acc, bal, s in mism[:10]:
            problems.append(f"account {acc}: balance {bal} != sum of ledger rows {s}")
        if len(mism) > 10:
            problems.append(f"... and {len(mism) - 10} more accounts")
        balances = dict(d.execute("SELECT id, balance_cents FROM accounts").fetchall())
        wrong = [a for a, b in w.final_balance.items() if balances.get(a) != b]
        if wrong:
            problems.append(
                f"{len(wrong)} account(s) differ from the expected final balance, e.g. account {wrong[0]}"
            )
        # The last row of each account carries its balance.
        last = d.execute(
            "SELECT l.account_id, l.balance_after_cents FROM ledger l"
            " JOIN (SELECT account_id, MAX(seq) AS m FROM ledger GROUP BY account_id) x"
            " ON x.account_id = l.account_id AND x.m = l.seq"
        ).fetchall()
        bad_last = [a for a, b in last if balances.get(a) != b]
        if bad_last:
            problems.append(f"{len(bad_last)} account(s) whose last balance_after_cents is not the balance")
        n = d.execute("SELECT COUNT(*), COUNT(DISTINCT txn_id) FROM ledger").fetchone()
        expected = sum(len(b) for b in w.batches)
        if n[0] != expected or n[1] != expected:
            problems.append(f"ledger holds {n[0]} rows ({n[1]} distinct txn_ids), expected {expected}")
        return problems

    return db.read_sync(work)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--charges", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat both on fresh files; the fastest round of each counts"
    )
    ap.add_argument(
        "--restricted",
        action="store_true",
        help="restricted accounts at 0: every merged charge drives one past its limit (over_limit)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="parent of the temp dir for the database files (default: the system temp dir)",
    )
    ap.add_argument("--target", type=float, default=0.50, help="minimum ledger/bare ratio (issue 9)")
    args = ap.parse_args(argv)
    if args.charges < 1 or args.batch < 1 or args.accounts < 1 or args.rounds < 1:
        ap.error("--charges, --batch, --accounts and --rounds must be positive")

    with tempfile.TemporaryDirectory(prefix="bench-ledger-", dir=args.dir) as tmp:
        root = Path(tmp)
        print(
            f"ledger_apply: {args.charges:,} charges in batches of {args.batch} over {args.accounts:,} "
            f"{'restricted (every charge over the limit)' if args.restricted else 'unrestricted'} accounts,"
            f" {args.rounds} round(s); files in {root}",
            flush=True,
        )
        first = first_account_id(root, args.accounts)
        schema = bare_schema(root / "probe.db")
        w = make_workload(args.charges, args.batch, args.accounts, first, args.seed)
        n_batches = len(w.batches)

        results: list[tuple[Timing, Timing]] = []
        problems: list[str] = []
        statuses: dict[str, int] = {}
        for r in range(1, args.rounds + 1):
            # Alternate the order so neither side always runs on the warmer (or busier) machine.
            order = ("bare", "ledger") if r % 2 else ("ledger", "bare")
            t_bare = t_ledger = Timing(0.0, 0.0)
            for which in order:
                if which == "bare":
                    t_bare = run_bare(root / f"bare-{r}.db", schema, w, args.restricted)
                else:
                    t_ledger, statuses, db = run_ledger(root / f"ledger-{r}.db", w, args.restricted)
                    try:
                        problems += [f"round {r}: {p}" for p in verify(db, w)]
                    finally:
                        db.close()
            not_applied = {k: v for k, v in statuses.items() if k != "applied"}
            if not_applied:
                problems.append(f"round {r}: outcomes other than 'applied': {not_applied}")
            results.append((t_bare, t_ledger))
            print(
                f"  round {r}: bare {args.charges / t_bare.total:>10,.0f} rows/s   "
                f"ledger {args.charges / t_ledger.total:>10,.0f} rows/s   "
                f"ratio {t_bare.total / t_ledger.total:.0%}",
                flush=True,
            )

    best_bare = min((b for b, _ in results), key=lambda t: t.total)
    best_ledger = min((g for _, g in results), key=lambda t: t.total)
    ratio = best_bare.total / best_ledger.total
    print()
    print(f"{'':<30}{'rows/s':>10}{'seconds':>9}{'ms/batch':>10}{'body ms':>9}{'commit ms':>11}")
    for name, t in (("bare SQLite executemany", best_bare), ("ledger.apply via write_sync", best_ledger)):
        print(
            f"{name:<30}{args.charges / t.total:>10,.0f}{t.total:>9.2f}{1000 * t.total / n_batches:>10.2f}"
            f"{1000 * t.body / n_batches:>9.2f}{1000 * (t.total - t.body) / n_batches:>11.2f}"
        )
    verdict = "meets" if ratio >= args.target else "BELOW"
    print(f"{'ratio ledger / bare':<30}{ratio:>9.0%}   ({verdict} target >= {args.target:.0%})")
    print("body = inside the transaction (apply() / executemany); commit = BEGIN, COMMIT+fsync, hand-offs")
    if args.rounds > 1:
        print("(fastest round of each)")
    print()
    # A slow run is a number to read, not a failure; only corruption fails.
    return report_failures(
        problems,
        f"consistency: OK ({args.accounts:,} account balances == sum of their ledger rows == expected; "
        f"{args.charges:,} rows, all 'applied', distinct txn_ids)",
        heading="CONSISTENCY CHECK FAILED:",
    )


if __name__ == "__main__":
    run_main(main)
