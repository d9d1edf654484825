"""The primary's administration API over real HTTP against a real `siteserver primary run`.

Shapes and status codes are CONTRACT.md's: errors are `{"error", "detail"}`, unknown fields are
a 422, money is an integer number of cents, idempotent writes answer the same twice.
"""

from __future__ import annotations

from typing import Any

import httpx

from siteserver import sample
from siteserver.domain import Enforcement
from siteserver.store import ledger
from siteserver.store.db import connect
from tests.kit.primary import Primary, expect_error, new_id

USER_KEYS = {
    "username",
    "full_name",
    "balance_cents",
    "restricted",
    "overdraft_cents",
    "disabled",
    "home_sites",
}
SECRET_KEYS = {"password", "pin", "card_numbers", "card_number", "id_number", "password_hash", "pin_hash"}
TXN_KEYS = {
    "txn_id",
    "seq",
    "account",
    "amount_cents",
    "kind",
    "origin_site",
    "occurred_at",
    "applied_at",
    "flags",
}
DEFAULT_POLICIES = {
    "account_selection": {"mode": "shared_account", "shared_account": "Offline Account"},
    "restricted_credit": {"mode": "cached_balance", "offline_credit_cents": 0},
    "unauthenticated_users": {"mode": "deny", "shared_account": None},
    "password_authentication": {"allowed": True},
    "hold_timeout_minutes": 240,
}


def all_transactions(c: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    since = 0
    while True:
        r = c.get("/api/admin/v1/transactions", params={**params, "since_seq": since, "limit": 1000})
        assert r.status_code == 200, r.text
        page = r.json()
        if not page["transactions"]:
            return out
        out += page["transactions"]
        since = page["next_seq"]


def test_admin_endpoints_need_the_admin_token(primary: Primary, world: sample.World) -> None:
    path = "/api/admin/v1/users/nobody"
    expect_error(httpx.get(primary.url + path), 401, "unauthorized")
    for token in ("wrong-token", world.mono_device, world.provider):
        with primary.client(token) as c:
            expect_error(c.get(path), 401, "unauthorized")
            expect_error(c.post("/api/admin/v1/users", json={"username": "mallory"}), 401)
    with primary.admin() as c:
        expect_error(c.get(path), 404, "not_found")
    # The OpenAPI document is public and names each path parameter as the path does.
    spec = httpx.get(primary.url + "/openapi.json").json()
    for route, param in (
        ("/api/admin/v1/users/{username}", "username"),
        ("/api/admin/v1/shared-accounts/{name}", "name"),
        ("/api/admin/v1/printers/{name}", "name"),
    ):
        assert [p["name"] for p in spec["paths"][route]["get"]["parameters"] if p["in"] == "path"] == [param]


def test_user_lifecycle(primary: Primary, world: sample.World) -> None:
    with primary.admin() as c:
        body = {
            "username": "alice",
            "full_name": "Alice Liddell",
            "email": "alice@example.org",
            "password": "s3cret-Passw0rd",
            "pin": "4711",
            "card_numbers": ["CARD-ALICE-1", "CARD-ALICE-2"],
            "id_number": "ID-ALICE",
            "balance_cents": 500,
            "restricted": True,
            "overdraft_cents": 100,
        }
        r = c.post("/api/admin/v1/users", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert USER_KEYS <= set(created) <= USER_KEYS | {"email"}
        assert not SECRET_KEYS & set(created)
        for secret in ("s3cret-Passw0rd", "4711", "CARD-ALICE", "ID-ALICE"):
            assert secret not in r.text
        assert created == {
            "username": "alice",
            "full_name": "Alice Liddell",
            "email": "alice@example.org",
            "balance_cents": 500,
            "restricted": True,
            "overdraft_cents": 100,
            "disabled": False,
            "home_sites": [],
        }

        # Duplicate username: 409, nothing changed.
        expect_error(
            c.post("/api/admin/v1/users", json={"username": "alice", "balance_cents": 9}), 409, "conflict"
        )

        r = c.get("/api/admin/v1/users/alice")
        assert r.status_code == 200
        got = r.json()
        assert USER_KEYS <= set(got) <= USER_KEYS | {"email"}
        assert got == created
        assert all(type(got[k]) is int for k in ("balance_cents", "overdraft_cents"))

        # Defaults of the create call: restricted, no overdraft, balance 0.
        r = c.post("/api/admin/v1/users", json={"username": "bob"})
        assert r.status_code == 201, r.text
        assert r.json()["balance_cents"] == 0 and r.json()["restricted"] is True
        assert r.json()["overdraft_cents"] == 0 and r.json()["disabled"] is False

        # Unknown fields and fractional money are refused, not dropped or rounded.
        expect_error(
            c.post("/api/admin/v1/users", json={"username": "carol", "is_admin": True}),
            422,
            "invalid_request",
        )
        expect_error(c.post("/api/admin/v1/users", json={"username": "carol", "balance_cents": 12.5}), 422)
        expect_error(c.post("/api/admin/v1/users", json={"username": "carol", "overdraft_cents": -1}), 422)
        expect_error(c.get("/api/admin/v1/users/carol"), 404, "not_found")

        # PATCH: any field of the create call plus `disabled`; balance is set through a ledger row.
        r = c.patch(
            "/api/admin/v1/users/alice",
            json={
                "full_name": "Alice L.",
                "restricted": False,
                "overdraft_cents": 0,
                "disabled": True,
                "balance_cents": 1234,
                "pin": "9999",
            },
        )
        assert r.status_code == 200, r.text
        assert "9999" not in r.text and not SECRET_KEYS & set(r.json())
        patched = c.get("/api/admin/v1/users/alice").json()
        assert patched == {
            "username": "alice",
            "full_name": "Alice L.",
            "email": "alice@example.org",
            "balance_cents": 1234,
            "restricted": False,
            "overdraft_cents": 0,
            "disabled": True,
            "home_sites": [],
        }
        assert r.json() == patched
        alice_rows = [t for t in all_transactions(c) if t["account"] == "user:alice"]
        assert [t["amount_cents"] for t in alice_rows] == [500, 734]
        assert alice_rows[-1]["balance_after_cents"] == 1234
        for t in alice_rows:
            assert set(t) >= TXN_KEYS

        # Setting the balance it already has writes no row; re-enabling works.
        r = c.patch("/api/admin/v1/users/alice", json={"balance_cents": 1234, "disabled": False})
        assert r.status_code == 200 and r.json()["disabled"] is False
        assert len([t for t in all_transactions(c) if t["account"] == "user:alice"]) == 2

        expect_error(
            c.patch("/api/admin/v1/users/alice", json={"username": "alicia"}), 422, "invalid_request"
        )
        expect_error(c.patch("/api/admin/v1/users/alice", json={"colour": "red"}), 422, "invalid_request")
        expect_error(c.patch("/api/admin/v1/users/nobody", json={"full_name": "X"}), 404, "not_found")
        assert c.get("/api/admin/v1/users/alice").json() == {**patched, "disabled": False}

        # DELETE, then the user is gone (with their held jobs and open sessions).
        with primary.client(world.provider) as p:
            r = p.post(
                "/api/provider/v1/jobs",
                json={
                    "job_id": new_id(),
                    "username": "alice",
                    "queue": "findme",
                    "document_name": "private.pdf",
                    "pages": 1,
                    "copies": 1,
                    "color": False,
                    "duplex": False,
                },
            )
            assert r.json()["action"] == "hold"
        with primary.client(world.mono_device) as d:
            session = d.post("/api/device/v1/login", json={"card_number": "CARD-ALICE-1"}).json()[
                "session_id"
            ]
            r = c.delete("/api/admin/v1/users/alice")
            assert r.status_code == 204, r.text
            assert r.content == b""
            expect_error(d.get(f"/api/device/v1/sessions/{session}/jobs"), 404)
            expect_error(d.post("/api/device/v1/login", json={"card_number": "CARD-ALICE-1"}), 401)
        expect_error(c.get("/api/admin/v1/users/alice"), 404, "not_found")
        expect_error(c.delete("/api/admin/v1/users/alice"), 404, "not_found")
        expect_error(c.patch("/api/admin/v1/users/alice", json={"full_name": "A"}), 404, "not_found")
        # The ledger keeps the closed account's history.
        assert len([t for t in all_transactions(c) if t["account"] == "user:alice"]) == 2
        assert c.get("/api/admin/v1/users/bob").status_code == 200

        # A new user of the same name starts afresh: no balance, no old cards, no old jobs.
        r = c.post("/api/admin/v1/users", json={"username": "alice", "card_numbers": ["CARD-ALICE-NEW"]})
        assert r.status_code == 201, r.text
        assert r.json()["balance_cents"] == 0 and r.json()["full_name"] == ""
        with primary.client(world.mono_device) as d:
            expect_error(d.post("/api/device/v1/login", json={"card_number": "CARD-ALICE-1"}), 401)
            session = d.post("/api/device/v1/login", json={"card_number": "CARD-ALICE-NEW"}).json()[
                "session_id"
            ]
            assert d.get(f"/api/device/v1/sessions/{session}/jobs").json()["jobs"] == []


def test_adjustments_are_idempotent_by_txn_id(primary: Primary) -> None:
    with primary.admin() as c:
        assert (
            c.post("/api/admin/v1/users", json={"username": "bob", "balance_cents": 100}).status_code == 201
        )
        txn = new_id()
        adj = {"txn_id": txn, "amount_cents": 250, "comment": "top-up at the desk"}
        r1 = c.post("/api/admin/v1/users/bob/adjustments", json=adj)
        assert r1.status_code == 200, r1.text
        assert r1.json()["balance_cents"] == 350
        assert type(r1.json()["balance_cents"]) is int

        # The same txn_id again: the same answer, applied once.
        r2 = c.post("/api/admin/v1/users/bob/adjustments", json=adj)
        assert r2.status_code == 200, r2.text
        assert r2.json() == r1.json()
        assert c.get("/api/admin/v1/users/bob").json()["balance_cents"] == 350
        rows = [t for t in all_transactions(c) if t["txn_id"] == txn]
        assert len(rows) == 1
        assert rows[0]["amount_cents"] == 250 and rows[0]["kind"] == "adjustment"
        assert rows[0]["account"] == "user:bob" and rows[0]["comment"] == "top-up at the desk"

        # The same txn_id with a different amount: 409 and nothing changed.
        expect_error(
            c.post("/api/admin/v1/users/bob/adjustments", json={**adj, "amount_cents": 999}), 409, "conflict"
        )
        assert c.get("/api/admin/v1/users/bob").json()["balance_cents"] == 350
        assert len([t for t in all_transactions(c) if t["txn_id"] == txn]) == 1

        # A negative adjustment is applied too; bad requests are refused.
        r = c.post(
            "/api/admin/v1/users/bob/adjustments",
            json={"txn_id": new_id(), "amount_cents": -400, "comment": ""},
        )
        assert r.status_code == 200 and r.json()["balance_cents"] == -50
        expect_error(
            c.post(
                "/api/admin/v1/users/bob/adjustments",
                json={"txn_id": "not-a-uuid", "amount_cents": 1, "comment": ""},
            ),
            422,
        )
        expect_error(
            c.post(
                "/api/admin/v1/users/bob/adjustments",
                json={"txn_id": new_id(), "amount_cents": 1.5, "comment": ""},
            ),
            422,
        )
        expect_error(
            c.post(
                "/api/admin/v1/users/bob/adjustments",
                json={"txn_id": new_id(), "amount_cents": 1, "comment": "", "reason": "x"},
            ),
            422,
        )
        expect_error(
            c.post(
                "/api/admin/v1/users/nobody/adjustments",
                json={"txn_id": new_id(), "amount_cents": 1, "comment": ""},
            ),
            404,
            "not_found",
        )
        assert c.get("/api/admin/v1/users/bob").json()["balance_cents"] == -50


def test_shared_accounts(primary: Primary) -> None:
    with primary.admin() as c:
        for u in ("ann", "ben"):
            assert c.post("/api/admin/v1/users", json={"username": u}).status_code == 201
        r = c.post(
            "/api/admin/v1/shared-accounts",
            json={"name": "Marketing", "balance_cents": 5000, "restricted": True, "members": ["ben", "ann"]},
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["name"] == "Marketing" and created["balance_cents"] == 5000
        assert created["restricted"] is True and sorted(created["members"]) == ["ann", "ben"]
        got = c.get("/api/admin/v1/shared-accounts/Marketing")
        assert got.status_code == 200 and got.json() == created, got.text
        # The initial balance is a ledger row on the shared account.
        assert any(
            t["account"] == "shared:Marketing" and t["amount_cents"] == 5000 for t in all_transactions(c)
        )

        r = c.post("/api/admin/v1/shared-accounts", json={"name": "Empty"})
        assert r.status_code == 201
        assert r.json() == {
            "name": "Empty",
            "balance_cents": 0,
            "restricted": False,
            "overdraft_cents": 0,
            "members": [],
        }

        expect_error(c.post("/api/admin/v1/shared-accounts", json={"name": "Marketing"}), 409, "conflict")
        # An unknown member: 422, and the account was not created.
        expect_error(
            c.post("/api/admin/v1/shared-accounts", json={"name": "Sales", "members": ["ann", "ghost"]}),
            422,
            "invalid_request",
        )
        expect_error(c.get("/api/admin/v1/shared-accounts/Sales"), 404, "not_found")
        expect_error(c.post("/api/admin/v1/shared-accounts", json={"name": "Sales", "owner": "ann"}), 422)
        # The Offline Account of the default policies exists from the start.
        assert c.get("/api/admin/v1/shared-accounts/Offline Account").status_code == 200


def test_shared_accounts_change_and_close(primary: Primary) -> None:
    """PATCH changes any field of the create call (`members` replaces the list, the balance moves by
    a ledger row); DELETE closes the account (its ledger kept, its name free again), refused while
    the offline policies charge it."""
    with primary.admin() as c:
        for u in ("ann", "ben", "cid"):
            assert c.post("/api/admin/v1/users", json={"username": u}).status_code == 201
        body = {"name": "Marketing", "balance_cents": 5000, "members": ["ann", "ben"]}
        assert c.post("/api/admin/v1/shared-accounts", json=body).status_code == 201

        r = c.patch(
            "/api/admin/v1/shared-accounts/Marketing",
            json={"members": ["cid"], "restricted": True, "overdraft_cents": 300, "balance_cents": 4200},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {
            "name": "Marketing",
            "balance_cents": 4200,
            "restricted": True,
            "overdraft_cents": 300,
            "members": ["cid"],
        }
        assert c.get("/api/admin/v1/shared-accounts/Marketing").json() == r.json()
        moves = [t for t in all_transactions(c) if t["account"] == "shared:Marketing"]
        assert [(t["kind"], t["amount_cents"]) for t in moves] == [
            ("initial_balance", 5000),
            ("set_balance", -800),
        ]
        # A field not given stays as it is; a bad patch changes nothing.
        r = c.patch("/api/admin/v1/shared-accounts/Marketing", json={"restricted": False})
        assert r.json()["members"] == ["cid"] and r.json()["overdraft_cents"] == 300
        expect_error(c.patch("/api/admin/v1/shared-accounts/Marketing", json={"members": ["ghost"]}), 422)
        expect_error(c.patch("/api/admin/v1/shared-accounts/Marketing", json={"owner": "ann"}), 422)
        expect_error(c.patch("/api/admin/v1/shared-accounts/Marketing", json={"balance_cents": 1.5}), 422)
        assert c.get("/api/admin/v1/shared-accounts/Marketing").json()["members"] == ["cid"]
        expect_error(
            c.patch("/api/admin/v1/shared-accounts/Nope", json={"restricted": True}), 404, "not_found"
        )

        # Renaming: the new name answers, the old one no longer does; a taken name is a conflict.
        assert c.post("/api/admin/v1/shared-accounts", json={"name": "Sales"}).status_code == 201
        expect_error(
            c.patch("/api/admin/v1/shared-accounts/Sales", json={"name": "Marketing"}), 409, "conflict"
        )
        r = c.patch("/api/admin/v1/shared-accounts/Sales", json={"name": "Field Sales"})
        assert r.status_code == 200 and r.json()["name"] == "Field Sales"
        expect_error(c.get("/api/admin/v1/shared-accounts/Sales"), 404, "not_found")

        # Closing: gone from the API, its ledger rows stay, and the name can be used again.
        assert c.delete("/api/admin/v1/shared-accounts/Marketing").status_code == 204
        expect_error(c.get("/api/admin/v1/shared-accounts/Marketing"), 404, "not_found")
        expect_error(c.delete("/api/admin/v1/shared-accounts/Marketing"), 404, "not_found")
        assert len([t for t in all_transactions(c) if t["account"] == "shared:Marketing"]) == 2
        again = c.post("/api/admin/v1/shared-accounts", json={"name": "Marketing"})
        assert again.status_code == 201 and again.json()["balance_cents"] == 0
        # The offline policies' shared account cannot be closed under them.
        expect_error(c.delete("/api/admin/v1/shared-accounts/Offline Account"), 409, "conflict")
        assert c.get("/api/admin/v1/shared-accounts/Offline Account").status_code == 200


def test_printers_sites_devices_providers(primary: Primary) -> None:
    with primary.admin() as c:
        printer = {
            "name": "lobby",
            "site_id": "s9",
            "color": True,
            "duplex": False,
            "hold": True,
            "cost": {"mono_page_cents": 7, "color_page_cents": 31},
        }
        r = c.post("/api/admin/v1/printers", json=printer)
        assert r.status_code == 201, r.text
        full = {
            **printer,
            "cost": {
                "mono_page_cents": 7,
                "color_page_cents": 31,
                "duplex_discount_pct": 0,
                "scan_page_cents": 0,
                "fax_page_cents": 0,
            },
        }
        assert r.json() == full
        got = c.get("/api/admin/v1/printers/lobby")
        assert got.status_code == 200 and got.json() == full
        expect_error(c.post("/api/admin/v1/printers", json={**printer, "color": False}), 409, "conflict")
        assert c.get("/api/admin/v1/printers/lobby").json() == full
        expect_error(c.get("/api/admin/v1/printers/nope"), 404, "not_found")
        bad_costs: list[dict[str, Any]] = [
            {"mono_page_cents": -1, "color_page_cents": 1},
            {"mono_page_cents": 1.5, "color_page_cents": 1},
            {"mono_page_cents": 1, "color_page_cents": 1, "duplex_discount_pct": 101},
            {"mono_page_cents": 1, "color_page_cents": 1, "staple_cents": 1},
            {"mono_page_cents": 1},
        ]
        for cost in bad_costs:
            expect_error(c.post("/api/admin/v1/printers", json={**printer, "name": "p2", "cost": cost}), 422)
        expect_error(c.post("/api/admin/v1/printers", json={**printer, "name": "p2", "toner": "k"}), 422)
        expect_error(c.get("/api/admin/v1/printers/p2"), 404)

        # Sites: a Find-Me queue naming an unknown printer is refused and leaves nothing behind.
        site = {
            "site_id": "s9",
            "name": "Site nine",
            "findme_queues": [{"name": "everywhere", "printers": ["lobby", "ghost"]}],
        }
        expect_error(c.post("/api/admin/v1/sites", json=site), 422, "invalid_request")
        assert c.get("/api/admin/v1/sites").json() == {"sites": []}
        site["findme_queues"] = [{"name": "everywhere", "printers": ["lobby"]}]
        r = c.post("/api/admin/v1/sites", json=site)
        assert r.status_code == 201, r.text
        assert set(r.json()) == {"site_id", "enrollment_token"}
        assert r.json()["site_id"] == "s9"
        assert isinstance(r.json()["enrollment_token"], str) and len(r.json()["enrollment_token"]) >= 20
        token = r.json()["enrollment_token"]
        expect_error(c.post("/api/admin/v1/sites", json=site), 409, "conflict")
        expect_error(c.post("/api/admin/v1/sites", json={"site_id": "s8", "name": "x", "region": "eu"}), 422)
        r = c.post("/api/admin/v1/sites", json={"site_id": "s8", "name": "Site eight"})
        assert r.status_code == 201 and r.json()["enrollment_token"] != token

        r = c.get("/api/admin/v1/sites")
        assert r.status_code == 200
        sites = r.json()["sites"]
        assert [s["site_id"] for s in sites] == ["s8", "s9"]
        assert token not in r.text
        s9 = sites[1]
        assert s9["name"] == "Site nine"
        assert s9["findme_queues"] == [{"name": "everywhere", "printers": ["lobby"]}]
        for s in sites:  # last contact, reported mode and journal backlog: unknown before enrollment
            assert {"last_contact_at", "mode", "journal_backlog"} <= set(s)
            assert s["last_contact_at"] is None and s["mode"] is None

        # Devices and providers: a token shown once, and it works on its API.
        expect_error(c.post("/api/admin/v1/devices", json={"device_id": "d1", "printer": "ghost"}), 422)
        r = c.post("/api/admin/v1/devices", json={"device_id": "d1", "printer": "lobby"})
        assert r.status_code == 201, r.text
        assert set(r.json()) == {"device_id", "token"} and r.json()["device_id"] == "d1"
        device_token = r.json()["token"]
        expect_error(
            c.post("/api/admin/v1/devices", json={"device_id": "d1", "printer": "lobby"}), 409, "conflict"
        )
        expect_error(
            c.post("/api/admin/v1/devices", json={"device_id": "d2", "printer": "lobby", "x": 1}), 422
        )

        expect_error(
            c.post("/api/admin/v1/providers", json={"provider_id": "pv", "printers": ["ghost"]}), 422
        )
        expect_error(c.post("/api/admin/v1/providers", json={"provider_id": "pv", "printers": []}), 422)
        r = c.post("/api/admin/v1/providers", json={"provider_id": "pv", "printers": ["lobby"]})
        assert r.status_code == 201, r.text
        assert set(r.json()) == {"provider_id", "token"} and r.json()["provider_id"] == "pv"
        provider_token = r.json()["token"]
        assert provider_token != device_token
        expect_error(
            c.post("/api/admin/v1/providers", json={"provider_id": "pv", "printers": ["lobby"]}), 409
        )

        assert (
            c.post("/api/admin/v1/users", json={"username": "dora", "card_numbers": ["C-DORA"]}).status_code
            == 201
        )

    with primary.client(device_token) as d:
        r = d.post("/api/device/v1/login", json={"card_number": "C-DORA"})
        assert r.status_code == 200, r.text
        assert r.json()["username"] == "dora"
    with primary.client(provider_token) as p:
        r = p.get("/api/provider/v1/releases", params={"printer": "lobby", "wait": 0})
        assert r.status_code == 200 and r.json() == {"releases": []}
        job = {
            "job_id": new_id(),
            "username": "dora",
            "queue": "everywhere",
            "document_name": "a.pdf",
            "pages": 1,
            "copies": 1,
            "color": False,
            "duplex": False,
        }
        r = p.post("/api/provider/v1/jobs", json=job)
        assert r.status_code == 200 and r.json()["action"] == "hold"
        # A provider token does not open the device API.
        expect_error(p.post("/api/device/v1/login", json={"card_number": "C-DORA"}), 403, "forbidden")


def test_offline_policies(primary: Primary) -> None:
    with primary.admin() as c:
        r = c.get("/api/admin/v1/offline-policies")
        assert r.status_code == 200
        assert r.json() == DEFAULT_POLICIES

        assert c.post("/api/admin/v1/shared-accounts", json={"name": "Night Shift"}).status_code == 201
        good = {
            "account_selection": {"mode": "shared_account", "shared_account": "Night Shift"},
            "restricted_credit": {"mode": "allowance", "offline_credit_cents": 500},
            "unauthenticated_users": {"mode": "shared_account", "shared_account": "Night Shift"},
            "password_authentication": {"allowed": False},
            "hold_timeout_minutes": 30,
        }
        bad: list[dict[str, Any]] = [
            {**good, "account_selection": {"mode": "shared_account", "shared_account": "Nowhere"}},
            {**good, "unauthenticated_users": {"mode": "shared_account", "shared_account": "Nowhere"}},
            {**good, "surprise": True},
            {**good, "restricted_credit": {"mode": "allowance", "offline_credit_cents": 500, "extra": 1}},
            {**good, "restricted_credit": {"mode": "generous", "offline_credit_cents": 0}},
            {**good, "restricted_credit": {"mode": "allowance", "offline_credit_cents": -1}},
            {**good, "restricted_credit": {"mode": "allowance", "offline_credit_cents": 2.5}},
            {**good, "account_selection": {"mode": "shared_account", "shared_account": None}},
            {**good, "hold_timeout_minutes": 0},
        ]
        for body in bad:
            expect_error(c.put("/api/admin/v1/offline-policies", json=body), 422, "invalid_request")
        assert c.get("/api/admin/v1/offline-policies").json() == DEFAULT_POLICIES

        r = c.put("/api/admin/v1/offline-policies", json=good)
        assert r.status_code == 200, r.text
        assert r.json() == good
        assert c.get("/api/admin/v1/offline-policies").json() == good

        # Omitted sections take their defaults; putting the defaults back round-trips too.
        r = c.put("/api/admin/v1/offline-policies", json={"hold_timeout_minutes": 60})
        assert r.status_code == 200 and r.json() == {**DEFAULT_POLICIES, "hold_timeout_minutes": 60}
        r = c.put("/api/admin/v1/offline-policies", json=DEFAULT_POLICIES)
        assert r.status_code == 200 and r.json() == DEFAULT_POLICIES
        assert c.get("/api/admin/v1/offline-policies").json() == DEFAULT_POLICIES


def _merge_rows_from_site(primary: Primary, site_id: str, username: str, amounts: list[int]) -> list[str]:
    """Ledger rows as a site's journal merge writes them (the sync API is not served yet):
    through `store.ledger.apply`, the one way money moves, straight into the shared database."""
    db = connect(primary.database)
    try:
        account_id = db.execute("SELECT account_id FROM users WHERE username = ?", [username]).fetchone()[0]
        epoch = db.execute("SELECT epoch FROM ha_lease WHERE id = 1").fetchone()[0]
        ids = [new_id() for _ in amounts]
        db.execute("BEGIN IMMEDIATE")
        out = ledger.apply(
            db,
            [
                ledger.Entry(
                    t,
                    account_id,
                    a,
                    "copy",
                    Enforcement.FACT,
                    "2024-01-01T00:00:00.000Z",
                    origin_site=site_id,
                    flags=("offline",),
                )
                for t, a in zip(ids, amounts, strict=True)
            ],
            epoch=epoch,
            applied_at="2024-01-01T00:00:01.000Z",
        )
        db.execute("COMMIT")
        assert [o.status for o in out] == ["applied"] * len(amounts)
        return ids
    finally:
        db.conn.close()


def test_transactions_paging_and_origin_filter(primary: Primary) -> None:
    with primary.admin() as c:
        assert (
            c.post("/api/admin/v1/users", json={"username": "erin", "restricted": False}).status_code == 201
        )
        mine = []
        for amount in (100, 200, 300, 400, 500):
            txn = new_id()
            mine.append(txn)
            r = c.post("/api/admin/v1/users/erin/adjustments", json={"txn_id": txn, "amount_cents": amount})
            assert r.status_code == 200
        merged = _merge_rows_from_site(primary, "s1", "erin", [-7, -11])

        # Paging: limit rows at a time, next_seq continues where the page ended.
        seen: list[dict[str, Any]] = []
        since = 0
        pages = 0
        while True:
            r = c.get("/api/admin/v1/transactions", params={"since_seq": since, "limit": 2})
            assert r.status_code == 200, r.text
            page = r.json()
            assert set(page) == {"transactions", "next_seq"}
            assert len(page["transactions"]) <= 2
            if not page["transactions"]:
                assert page["next_seq"] == since
                break
            assert page["next_seq"] == page["transactions"][-1]["seq"]
            seen += page["transactions"]
            since = page["next_seq"]
            pages += 1
        assert pages == 4  # 7 rows, 2 a page
        seqs = [t["seq"] for t in seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert [t["txn_id"] for t in seen] == mine + merged
        for t in seen:
            assert set(t) >= TXN_KEYS
            assert type(t["amount_cents"]) is int and type(t["seq"]) is int
            assert t["account"] == "user:erin" and isinstance(t["flags"], list)
        assert [t["amount_cents"] for t in seen] == [100, 200, 300, 400, 500, -7, -11]
        assert all(t["origin_site"] is None and t["kind"] == "adjustment" for t in seen[:5])
        assert [t["balance_after_cents"] for t in seen][-1] == 1500 - 18
        assert c.get("/api/admin/v1/users/erin").json()["balance_cents"] == 1482

        # since_seq skips what was seen; origin_site keeps only that site's rows.
        r = c.get("/api/admin/v1/transactions", params={"since_seq": seen[2]["seq"]})
        assert [t["txn_id"] for t in r.json()["transactions"]] == mine[3:] + merged
        r = c.get("/api/admin/v1/transactions", params={"origin_site": "s1"})
        assert r.status_code == 200
        rows = r.json()["transactions"]
        assert [t["txn_id"] for t in rows] == merged
        assert all(t["origin_site"] == "s1" and t["flags"] == ["offline"] for t in rows)
        assert r.json()["next_seq"] == rows[-1]["seq"]
        r = c.get(
            "/api/admin/v1/transactions",
            params={"origin_site": "s1", "since_seq": rows[0]["seq"], "limit": 5},
        )
        assert [t["txn_id"] for t in r.json()["transactions"]] == merged[1:]
        r = c.get("/api/admin/v1/transactions", params={"origin_site": "s2"})
        assert r.json() == {"transactions": [], "next_seq": 0}

        for params in ({"limit": 0}, {"limit": "many"}, {"since_seq": -1}, {"origin_site": "bad site"}):
            expect_error(c.get("/api/admin/v1/transactions", params=params), 422, "invalid_request")
