"""The device API (MFDs, release stations) of the primary, over real HTTP.

The `world` fixture gives device mfd-1 at mono-1 (mono, duplex -20 %, hold), device mfd-2 at
color-1 (color, simplex, hold), a provider for mono-1/color-1/direct-1 and the Find-Me queue
"findme" = [mono-1, color-1] at site s1.
"""

from __future__ import annotations

from typing import Any

import httpx

from siteserver import sample
from tests.kit.primary import Primary, expect_error, new_id

LOGIN_KEYS = {"session_id", "username", "full_name", "balance_cents", "restricted", "shared_accounts", "mode"}
JOB_KEYS = {
    "job_id",
    "document_name",
    "pages",
    "copies",
    "color",
    "duplex",
    "queue",
    "submitted_at",
    "cost_cents",
}


def add_user(admin: httpx.Client, username: str, **fields: Any) -> None:
    r = admin.post("/api/admin/v1/users", json={"username": username, **fields})
    assert r.status_code == 201, r.text


def balance(admin: httpx.Client, username: str) -> int:
    return int(admin.get(f"/api/admin/v1/users/{username}").json()["balance_cents"])


def shared_balance(admin: httpx.Client, name: str) -> int:
    return int(admin.get(f"/api/admin/v1/shared-accounts/{name}").json()["balance_cents"])


def transactions(admin: httpx.Client) -> list[dict[str, Any]]:
    r = admin.get("/api/admin/v1/transactions", params={"limit": 10_000})
    assert r.status_code == 200
    return list(r.json()["transactions"])


def submit(
    provider: httpx.Client,
    username: str,
    queue: str,
    *,
    pages: int = 1,
    copies: int = 1,
    color: bool = False,
    duplex: bool = False,
    name: str = "doc.pdf",
) -> str:
    job_id = new_id()
    r = provider.post(
        "/api/provider/v1/jobs",
        json={
            "job_id": job_id,
            "username": username,
            "queue": queue,
            "document_name": name,
            "pages": pages,
            "copies": copies,
            "color": color,
            "duplex": duplex,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["action"] == "hold", r.json()
    return job_id


def login(device: httpx.Client, **creds: str) -> dict[str, Any]:
    r = device.post("/api/device/v1/login", json=creds)
    assert r.status_code == 200, r.text
    return dict(r.json())


def held(device: httpx.Client, session: str) -> dict[str, dict[str, Any]]:
    r = device.get(f"/api/device/v1/sessions/{session}/jobs")
    assert r.status_code == 200, r.text
    jobs = r.json()["jobs"]
    for j in jobs:
        assert set(j) >= JOB_KEYS
        assert type(j["cost_cents"]) is int
    return {j["job_id"]: j for j in jobs}


def release(
    device: httpx.Client, session: str, *job_ids: str, account: str | None = None
) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"job_ids": list(job_ids)}
    if account is not None:
        body["account"] = account
    r = device.post(f"/api/device/v1/sessions/{session}/release", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    for res in results:
        assert {"job_id", "status", "cost_cents", "balance_cents"} <= set(res)
        assert type(res["cost_cents"]) is int and type(res["balance_cents"]) is int
    return list(results)


def test_login_methods_sessions_and_credentials(primary: Primary, world: sample.World) -> None:
    with primary.admin() as admin:
        add_user(
            admin,
            "carol",
            full_name="Carol C",
            password="pw-of-carol",
            pin="4321",
            card_numbers=["CARD-CAROL"],
            id_number="ID-CAROL",
            balance_cents=250,
        )
        add_user(admin, "dan", password="pw-of-dan")
        r = admin.post("/api/admin/v1/shared-accounts", json={"name": "Dept", "members": ["carol"]})
        assert r.status_code == 201

        with primary.client(world.mono_device) as mfd1, primary.client(world.color_device) as mfd2:
            for creds in (
                {"card_number": "CARD-CAROL"},
                {"username": "carol", "password": "pw-of-carol"},
                {"username": "carol", "pin": "4321"},
                {"id_number": "ID-CAROL"},
                {"id_number": "ID-CAROL", "pin": "4321"},
            ):
                out = login(mfd1, **creds)
                assert set(out) == LOGIN_KEYS, out
                assert {k: v for k, v in out.items() if k != "session_id"} == {
                    "username": "carol",
                    "full_name": "Carol C",
                    "balance_cents": 250,
                    "restricted": True,
                    "shared_accounts": ["Dept"],
                    "mode": "online",
                }
                assert isinstance(out["session_id"], str) and out["session_id"]
            assert login(mfd1, username="dan", password="pw-of-dan")["shared_accounts"] == []

            # One 401 body for an unknown user and a wrong secret (never more than 4 failures in a
            # row here: 5 would lock the device).
            wrong = mfd1.post("/api/device/v1/login", json={"username": "carol", "password": "nope"})
            unknown = mfd1.post("/api/device/v1/login", json={"username": "nobody", "password": "nope"})
            wrong_pin = mfd1.post("/api/device/v1/login", json={"username": "carol", "pin": "0000"})
            body = expect_error(wrong, 401, "unauthorized")
            assert unknown.status_code == 401 and unknown.json() == body
            assert wrong_pin.status_code == 401 and wrong_pin.json() == body
            login(mfd1, card_number="CARD-CAROL")
            unknown_card = mfd1.post("/api/device/v1/login", json={"card_number": "CARD-NOBODY"})
            wrong_id_pin = mfd1.post("/api/device/v1/login", json={"id_number": "ID-CAROL", "pin": "1111"})
            unknown_id = mfd1.post("/api/device/v1/login", json={"id_number": "ID-NOBODY"})
            for r in (unknown_card, wrong_id_pin, unknown_id):
                assert r.status_code == 401 and r.json() == body
            # A PIN where there is none set is just a wrong secret.
            r = mfd1.post("/api/device/v1/login", json={"username": "dan", "pin": "1234"})
            assert r.status_code == 401 and r.json() == body

            # Malformed logins are 422 (and count for nothing).
            for bad in (
                {},
                {"username": "carol"},
                {"card_number": "CARD-CAROL", "username": "carol"},
                {"username": "carol", "password": "pw-of-carol", "pin": "4321"},
                {"pin": "4321"},
                {"card_number": "CARD-CAROL", "remember_me": True},
            ):
                expect_error(mfd1.post("/api/device/v1/login", json=bad), 422, "invalid_request")

            # A session works only at the device that opened it.
            sid = login(mfd1, username="carol", password="pw-of-carol")["session_id"]
            assert held(mfd1, sid) == {}
            expect_error(mfd2.get(f"/api/device/v1/sessions/{sid}/jobs"), 404, "not_found")
            expect_error(
                mfd2.post(
                    f"/api/device/v1/sessions/{sid}/usage",
                    json={"txn_id": new_id(), "kind": "copy", "pages": 1, "color": False},
                ),
                404,
                "not_found",
            )
            expect_error(
                mfd2.post(f"/api/device/v1/sessions/{sid}/release", json={"job_ids": [new_id()]}), 404
            )
            # Logging out elsewhere does not end it; logging out here does.
            mfd2.post(f"/api/device/v1/sessions/{sid}/logout")
            assert held(mfd1, sid) == {}
            r = mfd1.post(f"/api/device/v1/sessions/{sid}/logout")
            assert r.status_code == 200 and r.json() == {"status": "logged_out"}
            expect_error(mfd1.get(f"/api/device/v1/sessions/{sid}/jobs"), 404, "not_found")
            expect_error(mfd1.get("/api/device/v1/sessions/made-up-session/jobs"), 404, "not_found")

            # A disabled user cannot log in, and their open session ends.
            sid = login(mfd1, card_number="CARD-CAROL")["session_id"]
            assert admin.patch("/api/admin/v1/users/carol", json={"disabled": True}).status_code == 200
            for creds in ({"card_number": "CARD-CAROL"}, {"username": "carol", "password": "pw-of-carol"}):
                r = mfd1.post("/api/device/v1/login", json=creds)
                assert r.status_code == 401 and r.json() == body
            expect_error(mfd1.get(f"/api/device/v1/sessions/{sid}/jobs"), 404)
            assert admin.patch("/api/admin/v1/users/carol", json={"disabled": False}).status_code == 200
            login(mfd1, card_number="CARD-CAROL")

    # Credentials: a provider token is the wrong kind (403); unknown or admin tokens are unknown (401).
    with primary.client(world.provider) as prov:
        expect_error(prov.post("/api/device/v1/login", json={"card_number": "CARD-CAROL"}), 403, "forbidden")
        expect_error(prov.get("/api/device/v1/sessions/x/jobs"), 403, "forbidden")
    for token in ("dev_not-a-real-token", primary.admin_token):
        with primary.client(token) as c:
            expect_error(
                c.post("/api/device/v1/login", json={"card_number": "CARD-CAROL"}), 401, "unauthorized"
            )
    expect_error(httpx.post(primary.url + "/api/device/v1/login", json={"card_number": "CARD-CAROL"}), 401)


def test_five_failures_lock_the_user_out(primary: Primary, world: sample.World) -> None:
    with primary.admin() as admin:
        add_user(admin, "dave", password="pw-of-dave")
        add_user(admin, "erin", card_numbers=["CARD-ERIN"], id_number="ID-ERIN", pin="2468")
    with primary.client(world.mono_device) as mfd1, primary.client(world.color_device) as mfd2:
        for _ in range(5):
            expect_error(
                mfd1.post("/api/device/v1/login", json={"username": "dave", "password": "guess"}), 401
            )
        # Locked: even the right secret is refused, at this device and at any other.
        for device in (mfd1, mfd2):
            r = device.post("/api/device/v1/login", json={"username": "dave", "password": "pw-of-dave"})
            expect_error(r, 429, "locked_out")
            retry_after = int(r.headers["Retry-After"])
            assert 1 <= retry_after <= 60
        # The lock is this user's (and the device's where the failures happened), not everyone's.
        assert login(mfd2, card_number="CARD-ERIN")["username"] == "erin"

        # PIN guesses by ID number lock that ID number the same way.
        for _ in range(4):
            expect_error(mfd2.post("/api/device/v1/login", json={"id_number": "ID-ERIN", "pin": "0000"}), 401)
        login(mfd2, card_number="CARD-ERIN")  # the device's run of failures ends here
        expect_error(mfd2.post("/api/device/v1/login", json={"id_number": "ID-ERIN", "pin": "0000"}), 401)
        r = mfd2.post("/api/device/v1/login", json={"id_number": "ID-ERIN", "pin": "2468"})
        expect_error(r, 429, "locked_out")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert login(mfd2, card_number="CARD-ERIN")["username"] == "erin"


def test_a_device_cannot_reset_its_budget_with_its_own_good_card(
    primary: Primary, world: sample.World
) -> None:
    with primary.admin() as admin:
        add_user(admin, "owen", card_numbers=["CARD-OWEN"])
        for i in range(5):
            add_user(admin, f"planted{i}", card_numbers=[f"CARD-{9000 + i}"])
    with primary.client(world.mono_device) as mfd1, primary.client(world.color_device) as mfd2:
        statuses = []
        for guess in range(8000, 8040):  # wrong card numbers, the device's own card every 4 misses
            statuses.append(
                mfd1.post("/api/device/v1/login", json={"card_number": f"CARD-{guess}"}).status_code
            )
            if guess % 4 == 3:
                statuses.append(
                    mfd1.post("/api/device/v1/login", json={"card_number": "CARD-OWEN"}).status_code
                )
        assert statuses.count(401) == 10  # the device's budget, and not a guess more
        assert 429 in statuses and statuses[-1] == 429
        r = mfd1.post("/api/device/v1/login", json={"card_number": "CARD-9000"})
        expect_error(r, 429, "locked_out")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # Another device is not locked by it.
        assert login(mfd2, card_number="CARD-OWEN")["username"] == "owen"


def test_a_pin_sprayed_over_many_usernames_stops_at_the_device_budget(
    primary: Primary, world: sample.World
) -> None:
    with primary.admin() as admin:
        for i in range(30):
            # the sprayed PIN opens every fourth account: each hit used to refill the budget
            add_user(admin, f"spray{i:02}", pin="1234" if i % 4 == 3 else "9876")
    statuses = []
    with primary.client(world.mono_device) as mfd1:
        for i in range(30):
            r = mfd1.post("/api/device/v1/login", json={"username": f"spray{i:02}", "pin": "1234"})
            statuses.append(r.status_code)
    opened = [i for i, status in enumerate(statuses) if status == 200]
    assert statuses.count(401) == 10
    assert opened == [3, 7, 11]  # then the tenth miss locks the device for the rest of the spray
    assert set(statuses[13:]) == {429}


def test_one_pin_budget_per_user_across_every_path(primary: Primary, world: sample.World) -> None:
    with primary.admin() as admin:
        add_user(
            admin, "ivy", password="pw-of-ivy", pin="2468", id_number="ID-IVY", card_numbers=["CARD-IVY"]
        )
    with primary.client(world.mono_device) as mfd1, primary.client(world.color_device) as mfd2:
        # 2 by username and PIN, 2 by ID number and PIN, 1 by password: five on one user
        for creds in (
            {"username": "ivy", "pin": "0000"},
            {"username": "ivy", "pin": "1111"},
            {"id_number": "ID-IVY", "pin": "2222"},
            {"id_number": "ID-IVY", "pin": "3333"},
            {"username": "ivy", "password": "guess"},
        ):
            expect_error(mfd1.post("/api/device/v1/login", json=creds), 401)
        for creds in (
            {"username": "ivy", "pin": "2468"},
            {"id_number": "ID-IVY", "pin": "2468"},
            {"username": "ivy", "password": "pw-of-ivy"},
        ):
            expect_error(mfd2.post("/api/device/v1/login", json=creds), 429, "locked_out")
        # Her card guesses no secret: she can still print while her PIN is being guessed at.
        assert login(mfd2, card_number="CARD-IVY")["username"] == "ivy"


def test_held_jobs_and_release(primary: Primary, world: sample.World) -> None:
    with (
        primary.admin() as admin,
        primary.client(world.provider) as prov,
        primary.client(world.mono_device) as mfd1,
        primary.client(world.color_device) as mfd2,
    ):
        add_user(admin, "frank", card_numbers=["CARD-FRANK"], balance_cents=1000)
        add_user(admin, "gina", card_numbers=["CARD-GINA"], balance_cents=1000)
        findme = submit(prov, "frank", "findme", pages=2, color=True, name="poster.pdf")
        secure_mono = submit(prov, "frank", "mono-1", pages=3, copies=2, duplex=True)
        secure_color = submit(prov, "frank", "color-1", pages=1, color=True)
        ginas = submit(prov, "gina", "findme", pages=1)

        s1 = login(mfd1, card_number="CARD-FRANK")["session_id"]
        s2 = login(mfd2, card_number="CARD-FRANK")["session_id"]
        at_mono, at_color = held(mfd1, s1), held(mfd2, s2)
        # Find-Me jobs at both member printers, a secure-print job only at its own printer,
        # nobody else's jobs; each priced at this device's printer.
        assert set(at_mono) == {findme, secure_mono}
        assert set(at_color) == {findme, secure_color}
        assert at_mono[findme] == {
            **at_mono[findme],
            "document_name": "poster.pdf",
            "pages": 2,
            "copies": 1,
            "color": True,
            "duplex": False,
            "queue": "findme",
            "cost_cents": 20,
        }
        assert at_color[findme]["cost_cents"] == 80  # 2 colour pages at 40
        assert at_mono[secure_mono]["cost_cents"] == 48  # 6 pages at 10, duplex -20 %
        assert at_color[secure_color]["cost_cents"] == 40
        r = mfd1.get(f"/api/device/v1/sessions/{s1}/jobs")
        assert r.json()["mode"] == "online"

        # Release the colour Find-Me job on the mono printer: converted, priced mono, charged.
        (res,) = release(mfd1, s1, findme)
        assert res["job_id"] == findme and res["status"] == "released"
        assert res["cost_cents"] == 20 and res["balance_cents"] == 980
        assert balance(admin, "frank") == 980
        r = prov.get("/api/provider/v1/releases", params={"printer": "mono-1", "wait": 0})
        assert r.status_code == 200
        assert r.json() == {"releases": [{"job_id": findme, "printer": "mono-1", "grayscale": True}]}
        assert prov.get("/api/provider/v1/releases", params={"printer": "color-1"}).json() == {"releases": []}

        # A retry after a lost answer: the same answer, no second charge.
        assert release(mfd1, s1, findme) == [res]
        assert balance(admin, "frank") == 980
        rows = [t for t in transactions(admin) if t["ref"] == findme]
        assert len(rows) == 1 and rows[0]["amount_cents"] == -20 and rows[0]["account"] == "user:frank"
        # It is no longer held anywhere.
        assert set(held(mfd2, s2)) == {secure_color}
        # Not releasable here, somebody else's, or unknown: nothing is charged.
        results = release(mfd1, s1, secure_color, ginas, new_id())
        assert [r["status"] for r in results] == ["denied", "not_found", "not_found"]
        assert results[0]["reason"] and results[0]["cost_cents"] == 0
        assert all(r["balance_cents"] == 980 for r in results)
        assert balance(admin, "frank") == 980

        # Several at once; colour on a colour printer stays colour.
        (res,) = release(mfd2, s2, secure_color)
        assert res["status"] == "released" and res["cost_cents"] == 40 and res["balance_cents"] == 940
        (res,) = release(mfd1, s1, secure_mono)
        assert res["status"] == "released" and res["cost_cents"] == 48 and res["balance_cents"] == 892
        assert prov.get("/api/provider/v1/releases", params={"printer": "color-1"}).json() == {
            "releases": [{"job_id": secure_color, "printer": "color-1", "grayscale": False}]
        }
        assert balance(admin, "frank") == 892
        assert held(mfd1, s1) == {} and held(mfd2, s2) == {}

        expect_error(mfd1.post(f"/api/device/v1/sessions/{s1}/release", json={"job_ids": []}), 422)
        expect_error(mfd1.post(f"/api/device/v1/sessions/{s1}/release", json={"job_ids": ["x"]}), 422)
        expect_error(
            mfd1.post(
                f"/api/device/v1/sessions/{s1}/release", json={"job_ids": [findme], "printer": "color-1"}
            ),
            422,
        )


def test_release_limits_and_accounts(primary: Primary, world: sample.World) -> None:
    with (
        primary.admin() as admin,
        primary.client(world.provider) as prov,
        primary.client(world.mono_device) as mfd1,
    ):
        add_user(admin, "poor", card_numbers=["C-POOR"], balance_cents=10)
        add_user(admin, "od", card_numbers=["C-OD"], balance_cents=10, overdraft_cents=50)
        add_user(admin, "free", card_numbers=["C-FREE"], restricted=False)
        add_user(admin, "member", card_numbers=["C-MEMBER"])
        add_user(admin, "outsider", card_numbers=["C-OUT"], balance_cents=1000)
        r = admin.post(
            "/api/admin/v1/shared-accounts",
            json={"name": "Dept", "balance_cents": 1000, "restricted": True, "members": ["member"]},
        )
        assert r.status_code == 201
        rows_before = len(transactions(admin))

        # A restricted user without funds: denied with a reason, nothing charged, still held.
        job = submit(prov, "poor", "mono-1", pages=5)
        sid = login(mfd1, card_number="C-POOR")["session_id"]
        (res,) = release(mfd1, sid, job)
        assert res["status"] == "denied" and res["reason"]
        assert res["cost_cents"] == 50 and res["balance_cents"] == 10
        assert balance(admin, "poor") == 10
        assert set(held(mfd1, sid)) == {job}
        assert prov.get("/api/provider/v1/releases", params={"printer": "mono-1"}).json() == {"releases": []}

        # Overdraft: down to -overdraft_cents, not past it.
        sid = login(mfd1, card_number="C-OD")["session_id"]
        first, second = submit(prov, "od", "mono-1", pages=6), submit(prov, "od", "mono-1", pages=1)
        (res,) = release(mfd1, sid, first)
        assert res["status"] == "released" and res["balance_cents"] == -50
        (res,) = release(mfd1, sid, second)
        assert res["status"] == "denied" and res["reason"] and res["balance_cents"] == -50
        assert balance(admin, "od") == -50

        # Unrestricted goes negative.
        sid = login(mfd1, card_number="C-FREE")["session_id"]
        (res,) = release(mfd1, sid, submit(prov, "free", "findme", pages=7))
        assert res["status"] == "released" and res["balance_cents"] == -70
        assert balance(admin, "free") == -70

        # Charged to a shared account the user is a member of.
        sid = login(mfd1, card_number="C-MEMBER")["session_id"]
        job = submit(prov, "member", "mono-1", pages=4)
        (res,) = release(mfd1, sid, job, account="Dept")
        assert res["status"] == "released" and res["cost_cents"] == 40 and res["balance_cents"] == 960
        assert shared_balance(admin, "Dept") == 960 and balance(admin, "member") == 0
        (row,) = [t for t in transactions(admin) if t["ref"] == job]
        assert row["account"] == "shared:Dept" and row["amount_cents"] == -40
        # ... and to one they are not a member of (or that does not exist): denied, no charge.
        sid = login(mfd1, card_number="C-OUT")["session_id"]
        job = submit(prov, "outsider", "mono-1", pages=4)
        for account in ("Dept", "No Such Account"):
            (res,) = release(mfd1, sid, job, account=account)
            assert res["status"] == "denied" and res["reason"]
        assert shared_balance(admin, "Dept") == 960 and balance(admin, "outsider") == 1000
        assert set(held(mfd1, sid)) == {job}
        # Exactly three charges were written: od, free, member.
        assert len(transactions(admin)) == rows_before + 3


def test_usage_is_a_fact_and_idempotent(primary: Primary, world: sample.World) -> None:
    with (
        primary.admin() as admin,
        primary.client(world.mono_device) as mfd1,
        primary.client(world.color_device) as mfd2,
    ):
        add_user(admin, "copier", card_numbers=["C-COPY"])  # restricted, balance 0
        r = admin.post(
            "/api/admin/v1/shared-accounts", json={"name": "Lab", "balance_cents": 100, "members": ["copier"]}
        )
        assert r.status_code == 201
        add_user(admin, "other", card_numbers=["C-OTHER"])
        sid = login(mfd1, card_number="C-COPY")["session_id"]
        url = f"/api/device/v1/sessions/{sid}/usage"

        # Charged past the limit: a restricted user at 0 can still be charged for a copy.
        copy = {"txn_id": new_id(), "kind": "copy", "pages": 3, "color": False, "duplex": False}
        r1 = mfd1.post(url, json=copy)
        assert r1.status_code == 200, r1.text
        assert {k: v for k, v in r1.json().items() if k != "mode"} == {
            "txn_id": copy["txn_id"],
            "status": "charged",
            "cost_cents": 30,
            "balance_cents": -30,
        }
        # Same txn_id: same answer, one ledger row. Different pages: 409, nothing changed.
        r2 = mfd1.post(url, json=copy)
        assert r2.status_code == 200 and r2.json() == r1.json()
        assert len([t for t in transactions(admin) if t["txn_id"] == copy["txn_id"]]) == 1
        expect_error(mfd1.post(url, json={**copy, "pages": 4}), 409, "conflict")
        assert balance(admin, "copier") == -30
        assert len([t for t in transactions(admin) if t["txn_id"] == copy["txn_id"]]) == 1

        # Priced by the device printer's cost model (mono-1: scan 2, fax 15, copy 10/page, duplex -20 %).
        cases = [
            (mfd1, {"kind": "scan", "pages": 5, "color": True}, 10),
            (mfd1, {"kind": "fax", "pages": 2, "color": False}, 30),
            (mfd1, {"kind": "copy", "pages": 2, "color": True}, 20),  # colour copy on a mono device
            (mfd1, {"kind": "copy", "pages": 10, "color": False, "duplex": True}, 80),
        ]
        expected = -30
        for device, usage, cost in cases:
            r = device.post(url, json={"txn_id": new_id(), **usage})
            assert r.status_code == 200, r.text
            expected -= cost
            assert r.json()["cost_cents"] == cost and r.json()["balance_cents"] == expected, (usage, r.json())
        assert balance(admin, "copier") == expected
        kinds = [t["kind"] for t in transactions(admin) if t["account"] == "user:copier"]
        assert kinds == ["copy", "scan", "fax", "copy", "copy"]

        # At color-1 (colour 40, mono 10, no scan price, no duplex): its own cost model.
        sid2 = login(mfd2, card_number="C-COPY")["session_id"]
        url2 = f"/api/device/v1/sessions/{sid2}/usage"
        for usage, cost in (
            ({"kind": "copy", "pages": 2, "color": True, "duplex": True}, 80),
            ({"kind": "scan", "pages": 9, "color": True}, 0),
        ):
            r = mfd2.post(url2, json={"txn_id": new_id(), **usage})
            assert r.status_code == 200 and r.json()["cost_cents"] == cost, r.text
            expected -= cost
        assert balance(admin, "copier") == expected

        # A shared account the user belongs to; one they do not is refused.
        r = mfd1.post(
            url, json={"txn_id": new_id(), "kind": "copy", "pages": 1, "color": False, "account": "Lab"}
        )
        assert r.status_code == 200 and r.json()["balance_cents"] == 90
        assert shared_balance(admin, "Lab") == 90 and balance(admin, "copier") == expected
        other = login(mfd1, card_number="C-OTHER")["session_id"]
        expect_error(
            mfd1.post(
                f"/api/device/v1/sessions/{other}/usage",
                json={"txn_id": new_id(), "kind": "copy", "pages": 1, "color": False, "account": "Lab"},
            ),
            403,
        )
        assert shared_balance(admin, "Lab") == 90 and balance(admin, "other") == 0

        for bad in (
            {**copy, "txn_id": new_id(), "kind": "staple"},
            {**copy, "txn_id": new_id(), "pages": 0},
            {**copy, "txn_id": "abc"},
            {**copy, "txn_id": new_id(), "pages": 1.5},
            {**copy, "txn_id": new_id(), "cost_cents": 0},
        ):
            expect_error(mfd1.post(url, json=bad), 422, "invalid_request")

        # Logout ends the session.
        r = mfd1.post(f"/api/device/v1/sessions/{sid}/logout")
        assert r.status_code == 200 and r.json() == {"status": "logged_out"}
        expect_error(mfd1.post(url, json={**copy, "txn_id": new_id()}), 404, "not_found")
        assert balance(admin, "copier") == expected
