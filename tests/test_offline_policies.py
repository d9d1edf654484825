"""The offline policies at a real site with its primary SIGKILLed: each mode of each policy over
HTTP, what was decided in the journal's flags, and the merge into the primary's ledger once the
primary is back (docs/offline.md)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kit.primary import Primary, expect_error, open_database
from tests.kit.site import DIRECT, SITE, Branch, eventually, login, start_branch, submit

MIRROR_SECS = 10.0


def session_of(b: Branch, card: str) -> str:
    r = login(b, b.mono_device, card_number=card)
    assert r.status_code == 200, r.text
    return str(r.json()["session_id"])


def release(b: Branch, session: str, job_id: str, account: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"job_ids": [job_id]}
    if account is not None:
        body["account"] = account
    with b.client(b.mono_device) as c:
        r = c.post(f"/api/device/v1/sessions/{session}/release", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["mode"] == "offline", out
    (result,) = out["results"]
    return dict(result)


def usage(b: Branch, session: str, pages: int, account: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"txn_id": str(uuid.uuid4()), "kind": "copy", "pages": pages, "color": False}
    body["duplex"] = False
    if account is not None:
        body["account"] = account
    with b.client(b.mono_device) as c:
        return c.post(f"/api/device/v1/sessions/{session}/usage", json=body)


def entry(b: Branch, *, txn_id: str | None = None, ref: str | None = None) -> dict[str, Any]:
    where, arg = ("txn_id", txn_id) if txn_id is not None else ("ref", ref)
    (row,) = b.query(
        f"SELECT status, account, amount_cents, enforcement, flags FROM journal WHERE {where} = ?", (arg,)
    )
    return {
        "status": row[0],
        "account": row[1],
        "amount_cents": row[2],
        "enforcement": row[3],
        "flags": json.loads(row[4]),
    }


def set_mirrored_policies(b: Branch, policies: dict[str, Any]) -> None:
    """While the primary is down the mirror cannot change: the test edits the mirrored copy."""
    b.execute("UPDATE settings SET value = ? WHERE key = 'offline_policies'", (json.dumps(policies),))


def policies(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "account_selection": {"mode": "shared_account", "shared_account": "Offline Account"},
        "restricted_credit": {"mode": "allowance", "offline_credit_cents": 200},
        "unauthenticated_users": {"mode": "shared_account", "shared_account": "Guests"},
        "password_authentication": {"allowed": False},
        "hold_timeout_minutes": 240,
    }
    base.update(kw)
    return base


def prepare(primary: Primary, branch: Branch, users: list[dict[str, Any]]) -> None:
    with primary.admin() as c:
        for u in users:
            c.post("/api/admin/v1/users", json=u).raise_for_status()
        for name in ("Offline Account", "Guests"):  # the first may exist already (the default)
            assert c.post("/api/admin/v1/shared-accounts", json={"name": name}).status_code in (201, 409)
        c.post("/api/admin/v1/shared-accounts", json={"name": "Marketing", "members": []}).raise_for_status()
        c.put("/api/admin/v1/offline-policies", json=policies()).raise_for_status()
    names = [u["username"] for u in users]
    eventually(
        lambda: (
            len(
                branch.query(
                    f"SELECT 1 FROM users WHERE username IN ({','.join('?' * len(names))})", tuple(names)
                )
            )
            == len(names)
            and bool(branch.query("SELECT 1 FROM settings WHERE value LIKE '%allowance%'"))
            and len(branch.query("SELECT 1 FROM accounts WHERE kind = 'shared'")) == 3
        ),
        MIRROR_SECS,
        "the mirror has the users, the shared accounts and the policies",
    )


def go_offline(primary: Primary, branch: Branch) -> None:
    primary.process.kill()
    # The first push misses its budget at once (connection refused); the mode machine follows.
    eventually(
        lambda: branch.query("SELECT value FROM sync_state WHERE key = 'mode'") == [("offline",)],
        30,
        "the site offline",
    )


def test_every_policy_mode_offline_then_the_merge(primary: Primary, tmp_path: Path) -> None:
    branch = start_branch(primary, tmp_path, budget_ms=300)
    try:
        prepare(
            primary,
            branch,
            [
                {
                    "username": "alice",
                    "password": "alice-password",
                    "pin": "1234",
                    "card_numbers": ["C-alice"],
                    "balance_cents": 100,
                },
                {"username": "carol", "card_numbers": ["C-carol"], "balance_cents": 100},
                {"username": "bob", "card_numbers": ["C-bob"], "balance_cents": 0, "restricted": False},
            ],
        )
        a1 = submit(branch, "alice", pages=25)["job_id"]  # 250 c at MONO
        a2 = submit(branch, "alice", pages=10)["job_id"]  # 100 c
        a3 = submit(branch, "alice", pages=1)["job_id"]  # 10 c
        c1 = submit(branch, "carol", pages=1)["job_id"]
        c2 = submit(branch, "carol", pages=100)["job_id"]  # 1000 c
        b1 = submit(branch, "bob", pages=1)["job_id"]
        go_offline(primary, branch)

        # password_authentication.allowed = false: password logins refused, card/PIN work.
        r = login(branch, branch.mono_device, username="alice", password="alice-password")
        assert "offline" in expect_error(r, 403)["detail"]
        assert login(branch, branch.mono_device, username="alice", pin="1234").status_code == 200
        r = login(branch, branch.mono_device, card_number="C-alice")
        assert r.status_code == 200 and r.json()["mode"] == "offline"
        alice, carol, bob = (session_of(branch, f"C-{u}") for u in ("alice", "carol", "bob"))

        # restricted_credit = allowance (200 c): alice (100 c) may spend down to -200 ...
        res = release(branch, alice, a1)
        assert res["status"] == "released" and res["balance_cents"] == -150, res
        e = entry(branch, ref=a1)
        assert e["status"] == "pending" and e["enforcement"] == "fact"
        assert {"offline", "policy:allowance", "by:alice"} <= set(e["flags"]), e
        res = release(branch, alice, a2)  # ... and not beyond
        assert (
            res["status"] == "denied" and res["reason"] == "insufficient balance (offline policy: allowance)"
        )
        # cached_balance: down to -overdraft (0) of the effective balance
        set_mirrored_policies(branch, policies(restricted_credit={"mode": "cached_balance"}))
        res = release(branch, alice, a3)
        assert res["status"] == "denied" and "cached_balance" in res["reason"], res
        # deny: restricted users cannot spend offline; unrestricted ones can; usage is still charged
        set_mirrored_policies(branch, policies(restricted_credit={"mode": "deny"}))
        res = release(branch, carol, c1)
        assert res["status"] == "denied" and "offline policy: deny" in res["reason"], res
        assert release(branch, bob, b1)["status"] == "released"
        r = usage(branch, carol, 2)
        assert r.status_code == 200 and r.json()["mode"] == "offline", r.text
        assert "policy:deny" in entry(branch, txn_id=json.loads(r.request.content)["txn_id"])["flags"]
        # unlimited: everything, settled on merge
        set_mirrored_policies(branch, policies(restricted_credit={"mode": "unlimited"}))
        res = release(branch, carol, c2)
        assert res["status"] == "released" and res["balance_cents"] == 100 - 20 - 1000, res
        assert "policy:unlimited" in entry(branch, ref=c2)["flags"]

        # account_selection: alice names Marketing (not a member in the mirror)
        r = usage(branch, alice, 1, account="Marketing")
        assert r.status_code == 200, r.text
        e = entry(branch, txn_id=json.loads(r.request.content)["txn_id"])
        assert e["account"] == "shared:Offline Account" and "account:shared_fallback" in e["flags"], e
        set_mirrored_policies(
            branch, policies(account_selection={"mode": "personal", "shared_account": None})
        )
        r = usage(branch, alice, 1, account="Marketing")
        assert r.status_code == 200, r.text
        e = entry(branch, txn_id=json.loads(r.request.content)["txn_id"])
        assert e["account"] == "user:alice" and "account:personal_fallback" in e["flags"], e
        set_mirrored_policies(branch, policies(account_selection={"mode": "cancel", "shared_account": None}))
        assert "cancel" in expect_error(usage(branch, alice, 1, account="Marketing"), 403)["detail"]
        res = release(branch, alice, a3, account="Marketing")
        assert res["status"] == "denied" and "cancel" in res["reason"], res

        # unauthenticated_users: a direct print from a username the mirror does not know
        ghost = submit(branch, "ghost", pages=2, queue=DIRECT)
        assert ghost["action"] == "print", ghost
        e = entry(branch, ref=ghost["job_id"])
        assert e["account"] == "shared:Guests" and "unauthenticated:shared_account" in e["flags"], e
        set_mirrored_policies(
            branch, policies(unauthenticated_users={"mode": "deny", "shared_account": None})
        )
        ghost2 = submit(branch, "ghost", pages=2, queue=DIRECT)
        assert ghost2["action"] == "deny" and ghost2["reason"] == "unknown or disabled user"
        assert not branch.query("SELECT 1 FROM journal WHERE ref = ?", (ghost2["job_id"],))

        # Every offline entry is flagged; all are pending.
        rows = branch.query("SELECT status, flags FROM journal")
        assert rows and all(s == "pending" and "offline" in json.loads(f) for s, f in rows), rows

        # The primary is back: the pending entries merge, offline flags and all.
        primary.restart(tmp_path / "primary-2.log")
        eventually(
            lambda: branch.query("SELECT count(*) FROM journal WHERE status = 'pending'") == [(0,)],
            30,
            "the pending entries merged",
        )
        assert branch.query("SELECT count(*) FROM journal WHERE status = 'rejected'") == [(0,)]
        with primary.admin() as c:
            txns = c.get("/api/admin/v1/transactions", params={"origin_site": SITE, "limit": 1000}).json()
            assert c.get("/api/admin/v1/users/alice").json()["balance_cents"] == 100 - 250 - 10
            assert c.get("/api/admin/v1/users/carol").json()["balance_cents"] == 100 - 20 - 1000
            assert c.get("/api/admin/v1/shared-accounts/Guests").json()["balance_cents"] == -10
        by_ref = {t["ref"]: t for t in txns["transactions"]}
        assert {"offline", "policy:allowance"} <= set(by_ref[a1]["flags"])
        assert "unauthenticated:shared_account" in by_ref[ghost["job_id"]]["flags"]
        assert all("offline" in t["flags"] for t in txns["transactions"])
    finally:
        branch.process.stop()


def test_offline_spend_caps(primary: Primary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITESERVER_OFFLINE_MAX_OFFLINE_SPEND_PER_USER_CENTS", "150")
    branch = start_branch(primary, tmp_path, budget_ms=300)
    try:
        prepare(primary, branch, [{"username": "dan", "card_numbers": ["C-dan"], "restricted": False}])
        d1 = submit(branch, "dan", pages=10)["job_id"]  # 100 c
        d2 = submit(branch, "dan", pages=10)["job_id"]
        go_offline(primary, branch)
        dan = session_of(branch, "C-dan")
        assert release(branch, dan, d1)["status"] == "released"
        res = release(branch, dan, d2)
        assert res["status"] == "denied" and "offline spending limit per user" in res["reason"], res
        r = usage(branch, dan, 10)  # a fact: recorded, flagged
        assert r.status_code == 200, r.text
        assert "cap:exceeded" in entry(branch, txn_id=json.loads(r.request.content)["txn_id"])["flags"]
        with branch.admin() as c:
            exposure = c.get("/api/admin/v1/status").json()["offline_exposure"]
        assert exposure["per_user_cap_cents"] == 150 and exposure["site_cap_cents"] is None
        assert exposure["top_user"]["username"] == "dan"
        assert exposure["site_cents"] == exposure["top_user"]["cents"] > 100, exposure
    finally:
        branch.process.stop()


def test_offline_spend_totals(tmp_path: Path) -> None:
    """store.journal.offline_spend / offline_spent_by: pending offline charges only, by user."""
    from migrations.site import migrations
    from siteserver.store import journal as journal_store

    with open_database(tmp_path / "site.db", migrations) as db:

        def fill(d: Any) -> None:
            def add(txn: str, account: str, amount: int, flags: tuple[str, ...]) -> None:
                journal_store.append(
                    d,
                    txn_id=txn,
                    account=account,
                    amount_cents=amount,
                    kind="print",
                    enforcement="fact",
                    occurred_at="2026-01-01T00:00:00Z",
                    flags=flags,
                )

            add("t1", "user:alice", -100, ("offline", "by:alice"))
            add("t2", "shared:Guests", -30, ("offline", "by:ghost"))
            add("t3", "shared:Offline Account", -50, ("offline", "account:shared_fallback", "by:alice"))
            add("t4", "user:bob", -999, ())  # decided online: not offline spend
            add("t5", "user:bob", -70, ("offline", "by:bob"))
            d.execute("UPDATE journal SET status = 'applied' WHERE txn_id = 't5'")  # merged

        db.write_sync(fill, fenced=False)
        spend = db.read_sync(journal_store.offline_spend)
        assert spend == journal_store.OfflineSpend(180, "alice", 150)
        assert spend.public() == {"site_cents": 180, "top_user": {"username": "alice", "cents": 150}}
        assert db.read_sync(lambda d: journal_store.offline_spent_by(d, "alice")) == 150
        assert db.read_sync(lambda d: journal_store.offline_spent_by(d, "bob")) == 0
