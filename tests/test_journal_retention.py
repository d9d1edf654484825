"""Retention at the site (`[journal] retention_days`): merged entries answered before the cutoff
go, in batches, once the mirror holds their charge; pending and rejected entries never do, nor a
merged one the mirror has not seen yet (it still counts in the effective balance)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils

from migrations.site import migrations
from siteserver.store import Database
from siteserver.store import journal as journal_store
from tests.kit.primary import Primary, open_database
from tests.kit.site import add_user, eventually, login, start_branch

OLD = "2026-01-01T00:00:00.000Z"
CUTOFF = "2026-06-01T00:00:00.000Z"
RECENT = "2026-11-01T00:00:00.000Z"


def t(i: int) -> str:
    return str(uuid.UUID(int=i))


@pytest.fixture
def site_db(tmp_path: Path) -> Iterator[Database]:
    """alice's account mirrored up to primary seq 100; bob's up to 5."""

    def seed(conn: sqlite_utils.Database) -> None:
        for account_id, name, last_seq in ((1, "alice", 100), (2, "bob", 5)):
            conn.execute(
                "INSERT INTO accounts (id, kind, name, balance_cents, restricted, overdraft_cents,"
                " created_at, last_seq) VALUES (?, 'personal', ?, 0, 0, 0, ?, ?)",
                [account_id, name, OLD, last_seq],
            )

    with open_database(tmp_path / "site.db", migrations) as db:
        db.write_sync(seed, fenced=False)
        yield db


def entry(
    db: Database, i: int, account: str, status: str, answered_at: str | None, primary_seq: int | None
) -> None:
    def write(conn: sqlite_utils.Database) -> None:
        journal_store.append(
            conn,
            txn_id=t(i),
            account=account,
            amount_cents=-10,
            kind="copy",
            enforcement="fact",
            occurred_at=OLD,
        )
        conn.execute(
            "UPDATE journal SET status = ?, last_attempt_at = ?, primary_seq = ? WHERE txn_id = ?",
            [status, answered_at, primary_seq, t(i)],
        )

    db.write_sync(write, fenced=False)


def left(db: Database) -> set[str]:
    return {r[0] for r in db.read_sync(lambda conn: conn.execute("SELECT txn_id FROM journal").fetchall())}


def test_only_old_merged_entries_the_mirror_holds_are_pruned(site_db: Database) -> None:
    entry(site_db, 1, "user:alice", "applied", OLD, 50)  # old, mirrored: goes
    entry(site_db, 2, "user:alice", "duplicate", OLD, 60)  # old, mirrored: goes
    entry(site_db, 3, "user:alice", "applied", RECENT, 70)  # answered after the cutoff: stays
    entry(site_db, 4, "user:bob", "applied", OLD, 9)  # the mirror has bob only up to seq 5: stays
    entry(site_db, 5, "user:gone", "applied", OLD, 80)  # the account is gone: no balance to keep, goes
    entry(site_db, 6, "user:alice", "pending", OLD, None)  # never
    entry(site_db, 7, "user:alice", "rejected", OLD, None)  # never
    before = site_db.read_sync(lambda conn: journal_store.effective_balance(conn, 2))

    pruned = site_db.write_sync(
        lambda conn: journal_store.prune_merged(conn, answered_before=CUTOFF), fenced=False
    )

    assert pruned == 3
    assert left(site_db) == {t(3), t(4), t(6), t(7)}
    # bob's merged charge the mirror has not seen still counts in his effective balance.
    assert site_db.read_sync(lambda conn: journal_store.effective_balance(conn, 2)) == before == -10
    # The pending entry's running total is untouched by the pruning.
    assert site_db.read_sync(journal_store.pending_count) == 1


def test_pruning_goes_in_batches_oldest_first(site_db: Database) -> None:
    for i in range(1, 8):
        entry(site_db, i, "user:alice", "applied", OLD, i)
    first = site_db.write_sync(
        lambda conn: journal_store.prune_merged(conn, answered_before=CUTOFF, batch=3), fenced=False
    )
    assert first == 3 and left(site_db) == {t(i) for i in range(4, 8)}
    rest = site_db.write_sync(
        lambda conn: journal_store.prune_merged(conn, answered_before=CUTOFF, batch=3), fenced=False
    )
    assert rest == 3 and left(site_db) == {t(7)}


def test_a_running_site_prunes_what_is_past_retention(primary: Primary, tmp_path: Path) -> None:
    """The real site process: a merged copy whose answer is older than `[journal] retention_days`
    is gone after a restart (the site prunes at start, then every 6 hours); a fresh one stays."""
    branch = start_branch(primary, tmp_path)
    try:
        add_user(primary, branch, "ann", 10, card_numbers=["CARD-ann"], balance_cents=500)
        session = login(branch, branch.mono_device, card_number="CARD-ann").json()["session_id"]
        txns = [str(uuid.uuid4()), str(uuid.uuid4())]
        with branch.client(branch.mono_device) as c:
            for txn in txns:
                usage = {"txn_id": txn, "kind": "copy", "pages": 1, "color": False, "duplex": False}
                assert c.post(f"/api/device/v1/sessions/{session}/usage", json=usage).status_code == 200

        def merged_and_mirrored() -> bool:
            rows = branch.query(
                "SELECT count(*) FROM journal j JOIN accounts a ON a.name = 'ann' AND a.kind = 'personal'"
                " WHERE j.status = 'applied' AND j.primary_seq <= a.last_seq"
            )
            return rows == [(2,)]

        eventually(merged_and_mirrored, 15, "both copies merged and mirrored")
        branch.process.stop()
        branch.execute("UPDATE journal SET last_attempt_at = ? WHERE txn_id = ?", (OLD, txns[0]))
        branch.start()
        eventually(
            lambda: [r[0] for r in branch.query("SELECT txn_id FROM journal")] == [txns[1]],
            15,
            "the old merged entry pruned",
        )
    finally:
        branch.process.stop()
