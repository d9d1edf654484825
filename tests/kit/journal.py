"""Journal entries for the sync API's merge (`POST /api/sync/v1/journal`) against a real primary:
an entry in wire form, the account holders the entries charge, and their balances."""

from __future__ import annotations

import uuid
from typing import Any

from siteserver import sample
from sync import wire
from tests.kit.primary import Primary

JOURNAL = wire.url_path(wire.MERGE_PATH)
OCCURRED = "2026-11-20T09:15:00.123Z"


def entry(account: str, amount: int, **over: Any) -> dict[str, Any]:
    """A journal entry in wire form (an offline print fact of `amount` cents), a fresh txn_id;
    `over`: fields to change."""
    e: dict[str, Any] = {
        "txn_id": str(uuid.uuid4()),
        "account": account,
        "amount_cents": amount,
        "kind": "print",
        "enforcement": "fact",
        "occurred_at": OCCURRED,
        "flags": ["offline"],
        "ref": "job-1",
    }
    e.update(over)
    return e


def add_payers(primary: Primary) -> None:
    """alice (1000 c), bob (100 c, restricted) and the shared account Team (alice's, 0 c)."""
    with primary.admin() as c:
        sample.add_users(
            c,
            [
                sample.User("alice", balance_cents=1000),
                sample.User("bob", balance_cents=100, restricted=True),
            ],
        )
        sample.add_shared_accounts(c, [sample.SharedAccount("Team", members=("alice",))])


def balances(primary: Primary) -> dict[str, int]:
    """alice's, bob's and Team's balances on the primary."""
    with primary.admin() as c:
        out = {u: c.get(f"/api/admin/v1/users/{u}").json()["balance_cents"] for u in ("alice", "bob")}
        out["team"] = c.get("/api/admin/v1/shared-accounts/Team").json()["balance_cents"]
    return out
