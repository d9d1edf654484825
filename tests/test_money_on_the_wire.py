"""Invariant 8: money is an integer count of cents on the wire, in the database and in answers."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from tests.kit.primary import Primary, expect_error


@pytest.mark.parametrize("amount", [10.0, 10.5, "10", 2**63, -(2**63), True, None])
def test_money_that_is_not_an_integer_is_refused(primary: Primary, amount: object) -> None:
    with primary.admin() as c:
        c.post("/api/admin/v1/users", json={"username": "alice"}).raise_for_status()
        r = c.post(
            "/api/admin/v1/users/alice/adjustments",
            json={"txn_id": str(uuid.uuid4()), "amount_cents": amount},
        )
        expect_error(r, 422, "invalid_request")
        for body in (
            {"username": "bob", "balance_cents": amount},
            {"username": "bob", "overdraft_cents": amount},
        ):
            expect_error(c.post("/api/admin/v1/users", json=body), 422, "invalid_request")
        policies = c.get("/api/admin/v1/offline-policies").json()
        policies["restricted_credit"]["offline_credit_cents"] = amount
        expect_error(c.put("/api/admin/v1/offline-policies", json=policies), 422, "invalid_request")
        assert c.get("/api/admin/v1/users/alice").json()["balance_cents"] == 0


def test_money_is_stored_and_answered_as_integers(primary: Primary) -> None:
    with primary.admin() as c:
        c.post("/api/admin/v1/users", json={"username": "alice", "balance_cents": 1234}).raise_for_status()
        r = c.post(
            "/api/admin/v1/users/alice/adjustments", json={"txn_id": str(uuid.uuid4()), "amount_cents": -34}
        )
        assert r.json()["balance_cents"] == 1200 and type(r.json()["balance_cents"]) is int
        txns = c.get("/api/admin/v1/transactions").json()["transactions"]
        assert all(type(t["amount_cents"]) is int for t in txns)
    db = sqlite3.connect(primary.database)
    try:
        kinds = {row[0] for row in db.execute("SELECT typeof(amount_cents) FROM ledger")}
        kinds |= {row[0] for row in db.execute("SELECT typeof(balance_cents) FROM accounts")}
    finally:
        db.close()
    assert kinds == {"integer"}
