"""Rejected journal entries stay visible at the site and an admin can merge a charge that happened
again (`GET /api/admin/v1/journal`, `POST /api/admin/v1/journal/{txn_id}/retry`), over a real
primary and site. Only what is not money is rejected now: here a txn_id the primary already holds
for other content (a copy for a deleted user is billed with a conflict: test_merge_conflicts)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from siteserver.store.ledger import REUSED_TXN_ID
from tests.kit.primary import Primary, expect_error
from tests.kit.site import Branch, eventually, start_branch


def put_entry(branch: Branch, txn: str, seq: int, account: str, enforcement: str, status: str) -> None:
    branch.execute(
        "INSERT INTO journal (txn_id, seq, account, amount_cents, kind, enforcement, occurred_at, status,"
        " reason) VALUES (?, ?, ?, -25, 'copy', ?, '2026-11-20T09:15:00.000Z', ?, ?)",
        (txn, seq, account, enforcement, status, REUSED_TXN_ID if status == "rejected" else None),
    )


def entry(branch: Branch, txn: str) -> tuple[str, str | None]:
    [(status, reason)] = branch.query("SELECT status, reason FROM journal WHERE txn_id = ?", (txn,))
    return status, reason


def test_a_rejected_copy_is_listed_and_can_be_merged_again(primary: Primary, tmp_path: Path) -> None:
    branch = start_branch(primary, tmp_path)
    try:
        copy = str(uuid.uuid4())
        with primary.admin() as p:
            created = p.post("/api/admin/v1/users", json={"username": "gina", "balance_cents": 100})
            assert created.status_code == 201, created.text
            # The same txn_id already used on the primary for something else: not this copy's money.
            adjusted = p.post(
                "/api/admin/v1/users/gina/adjustments",
                json={"txn_id": copy, "amount_cents": 500, "comment": "top-up"},
            )
            assert adjusted.status_code == 200, adjusted.text
        put_entry(branch, copy, 1_000_001, "user:gina", "fact", "pending")
        eventually(lambda: entry(branch, copy) == ("rejected", REUSED_TXN_ID), 10, "the merge refused it")
        with branch.admin() as c:
            listed = c.get("/api/admin/v1/journal")
            assert listed.status_code == 200, listed.text
            [shown] = listed.json()["entries"]
            assert (shown["txn_id"], shown["status"], shown["reason"]) == (copy, "rejected", REUSED_TXN_ID)
            assert shown["amount_cents"] == -25 and shown["account"] == "user:gina"
            assert listed.json()["next_seq"] == shown["seq"]
            assert c.get("/api/admin/v1/journal", params={"after_seq": shown["seq"]}).json()["entries"] == []
            assert c.get("/api/admin/v1/journal", params={"status": "pending"}).json()["entries"] == []
            expect_error(c.get("/api/admin/v1/journal", params={"status": "lost"}), 422)
            r = c.post(f"/api/admin/v1/journal/{copy}/retry")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "pending" and r.json()["reason"] is None
        # Sent again and refused again: the primary's ledger is immutable, its answer the same.
        eventually(lambda: entry(branch, copy) == ("rejected", REUSED_TXN_ID), 10, "refused again")
        with primary.admin() as p:
            assert p.get("/api/admin/v1/users/gina").json()["balance_cents"] == 600
            rows: list[dict[str, Any]] = p.get("/api/admin/v1/transactions").json()["transactions"]
            assert [(t["txn_id"], t["amount_cents"]) for t in rows if t["txn_id"] == copy] == [(copy, 500)]
        with branch.admin() as c:
            # Only a rejected fact can be retried.
            refused_release = str(uuid.uuid4())
            put_entry(branch, refused_release, 1_000_002, "user:gina", "authorize", "rejected")
            expect_error(c.post(f"/api/admin/v1/journal/{refused_release}/retry"), 409, "conflict")
            assert entry(branch, refused_release)[0] == "rejected"
            merged = str(uuid.uuid4())
            put_entry(branch, merged, 1_000_003, "user:gina", "fact", "pending")
            eventually(lambda: entry(branch, merged)[0] == "applied", 10, "merged")
            expect_error(c.post(f"/api/admin/v1/journal/{merged}/retry"), 409, "conflict")  # applied
            expect_error(c.post(f"/api/admin/v1/journal/{uuid.uuid4()}/retry"), 404, "not_found")
            expect_error(c.post("/api/admin/v1/journal/not-a-uuid/retry"), 422)
        with branch.client("wrong") as stranger:
            expect_error(stranger.post(f"/api/admin/v1/journal/{copy}/retry"), 401)
    finally:
        branch.process.stop()
