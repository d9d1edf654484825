"""The primary's answers that come late or for an older version of an entry, at the site's
journal: a release the site answered after its budget ran out is a fact (a late refusal cannot
undo it), and a charge the primary booked elsewhere (a fallback account, an earlier release's
amount) counts in that account's effective balance until the mirror holds it (invariant 3)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils

from migrations.site import migrations
from siteserver.domain.merge import MergeConflict, MergeVerdict
from siteserver.store import Database
from siteserver.store import journal as journal_store
from siteserver.store.ledger import REUSED_TXN_ID
from tests.kit.primary import open_database

AT = "2026-11-20T09:15:00.000Z"
MISSED = ("offline", "budget:missed")
DENIED = MergeVerdict("rejected", reason="insufficient balance")


@pytest.fixture
def site_db(tmp_path: Path) -> Iterator[Database]:
    def seed(conn: sqlite_utils.Database) -> None:
        for account_id, kind, name in ((1, "personal", "alice"), (2, "shared", "Offline Account")):
            conn.execute(
                "INSERT INTO accounts (id, kind, name, balance_cents, restricted, overdraft_cents,"
                " created_at, last_seq) VALUES (?, ?, ?, 1000, 0, 0, ?, 10)",
                [account_id, kind, name, AT],
            )

    with open_database(tmp_path / "site.db", migrations) as db:
        db.write_sync(seed, fenced=False)
        yield db


def release(db: Database, amount: int = -100, account: str = "user:alice") -> journal_store.JournalRow:
    """A release decided online (an authorization), sent with its request."""
    txn = str(uuid.uuid4())

    def write(conn: sqlite_utils.Database) -> journal_store.JournalRow:
        journal_store.append(
            conn,
            txn_id=txn,
            account=account,
            amount_cents=amount,
            kind="print",
            enforcement="authorize",
            occurred_at=AT,
            ref="job-1",
            sent=True,
        )
        row = journal_store.get(conn, txn)
        assert row is not None
        return row

    return db.write_sync(write, fenced=False)


def get(db: Database, txn: str) -> journal_store.JournalRow:
    row = db.read_sync(lambda conn: journal_store.get(conn, txn))
    assert row is not None
    return row


def record(db: Database, uploaded: journal_store.JournalRow, v: MergeVerdict) -> None:
    db.write_sync(
        lambda conn: journal_store.record(conn, [uploaded], {uploaded.txn_id: v}, now=AT), fenced=False
    )


def settle(db: Database, txn: str) -> None:
    db.write_sync(lambda conn: journal_store.settle_answered(conn, [txn], MISSED), fenced=False)


def balance(db: Database, account_id: int) -> int | None:
    return db.read_sync(lambda conn: journal_store.effective_balance(conn, account_id))


def test_a_refusal_after_the_budget_is_undone_the_release_billed_as_a_fact(site_db: Database) -> None:
    uploaded = release(site_db)
    record(site_db, uploaded, DENIED)  # the refusal lands first, just after the request gave up
    assert get(site_db, uploaded.txn_id).status == "rejected"
    settle(site_db, uploaded.txn_id)  # the request answered "released": the pages are printed
    row = get(site_db, uploaded.txn_id)
    assert (row.status, row.enforcement, row.reason) == ("pending", "fact", None)
    assert set(MISSED) <= set(row.flags)
    assert balance(site_db, 1) == 900  # charged, pending: not forgotten


def test_a_refusal_arriving_after_the_settle_is_not_taken(site_db: Database) -> None:
    uploaded = release(site_db)
    settle(site_db, uploaded.txn_id)
    record(site_db, uploaded, DENIED)  # the answer to the authorization upload still in flight
    row = get(site_db, uploaded.txn_id)
    assert (row.status, row.enforcement) == ("pending", "fact")
    # An application of that upload is the charge all the same, and is taken.
    record(site_db, uploaded, MergeVerdict("applied", 11, 900))
    assert get(site_db, uploaded.txn_id).status == "applied"


def test_a_reused_txn_id_stays_rejected(site_db: Database) -> None:
    uploaded = release(site_db)
    record(site_db, uploaded, MergeVerdict("rejected", reason=REUSED_TXN_ID))
    settle(site_db, uploaded.txn_id)
    assert get(site_db, uploaded.txn_id).status == "rejected"


def test_a_charge_booked_to_a_fallback_counts_there_until_the_mirror_has_it(site_db: Database) -> None:
    uploaded = release(site_db)
    moved = MergeConflict("user_deleted", "user alice was deleted: charged to shared:Offline Account")
    record(
        site_db,
        uploaded,
        MergeVerdict("applied_with_conflict", 11, 900, None, moved, "shared:Offline Account"),
    )
    row = get(site_db, uploaded.txn_id)
    assert (row.status, row.primary_status, row.conflict) == ("applied", "applied_with_conflict", moved)
    assert row.primary_account == "shared:Offline Account"
    assert balance(site_db, 1) == 1000  # not alice's any more
    assert balance(site_db, 2) == 900  # the fallback's, until its mirrored last_seq reaches 11
    site_db.write_sync(
        lambda conn: conn.execute("UPDATE accounts SET balance_cents = 900, last_seq = 11 WHERE id = 2"),
        fenced=False,
    )
    assert balance(site_db, 2) == 900  # in the mirror now, not counted twice


def test_an_earlier_release_billed_counts_with_its_own_amount(site_db: Database) -> None:
    uploaded = release(site_db, amount=-80)
    earlier = MergeConflict("earlier_release_billed", "an earlier release of this job was billed")
    record(site_db, uploaded, MergeVerdict("duplicate", 11, 900, None, earlier, "user:alice", -100))
    row = get(site_db, uploaded.txn_id)
    assert (row.status, row.primary_amount_cents, row.amount_cents) == ("duplicate", -100, -80)
    assert balance(site_db, 1) == 900  # what the primary holds, not what the site had charged
