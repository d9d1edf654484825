"""The print provider API of the primary, over real HTTP: submit jobs, long-poll releases,
report printed pages.

The `world` fixture: mono-1 (mono, duplex -20 %, hold, 10/page), color-1 (colour 40, mono 10,
simplex, hold), direct-1 (no hold: mono 5, colour 20), Find-Me "findme" = [mono-1, color-1],
provider ps-1 serving all three, device mfd-1 at mono-1.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from siteserver import sample
from tests.kit.primary import Primary, expect_error, new_id


def job(username: str, queue: str, **over: Any) -> dict[str, Any]:
    return {
        "job_id": new_id(),
        "username": username,
        "queue": queue,
        "document_name": "report.pdf",
        "pages": 2,
        "copies": 1,
        "color": False,
        "duplex": False,
        "client": "10.0.0.7",
        **over,
    }


def post_job(c: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post("/api/provider/v1/jobs", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert {"job_id", "action"} <= set(out) <= {"job_id", "action", "reason", "cost_cents"}
    assert out["job_id"] == body["job_id"]
    return dict(out)


def ledger_rows(admin: httpx.Client, ref: str) -> list[dict[str, Any]]:
    r = admin.get("/api/admin/v1/transactions", params={"limit": 10_000})
    return [t for t in r.json()["transactions"] if t["ref"] == ref]


def balance(admin: httpx.Client, username: str) -> int:
    return int(admin.get(f"/api/admin/v1/users/{username}").json()["balance_cents"])


def releases(c: httpx.Client, printer: str, wait: float = 0) -> list[dict[str, Any]]:
    r = c.get("/api/provider/v1/releases", params={"printer": printer, "wait": wait})
    assert r.status_code == 200, r.text
    return list(r.json()["releases"])


def test_job_decisions(primary: Primary, world: sample.World) -> None:
    with primary.admin() as admin, primary.client(world.provider) as prov:
        for u in (
            {"username": "pat", "balance_cents": 100},
            {"username": "broke"},
            {"username": "gone", "balance_cents": 100},
        ):
            assert admin.post("/api/admin/v1/users", json=u).status_code == 201
        assert admin.patch("/api/admin/v1/users/gone", json={"disabled": True}).status_code == 200

        # Find-Me: held, with an estimate (the cheapest member: colour converted on mono-1).
        out = post_job(prov, job("pat", "findme", color=True))
        assert out["action"] == "hold" and out["cost_cents"] == 20 and out.get("reason") is None
        # A printer with hold: true: held.
        out = post_job(prov, job("pat", "mono-1", pages=3))
        assert out["action"] == "hold" and out["cost_cents"] == 30
        out = post_job(prov, job("pat", "color-1", color=True))
        assert out["action"] == "hold" and out["cost_cents"] == 80
        assert balance(admin, "pat") == 100 and ledger_rows(admin, out["job_id"]) == []

        # A direct printer: charged now and printed.
        direct = job("pat", "direct-1", pages=2, copies=2, color=True)
        out = post_job(prov, direct)
        assert out["action"] == "print" and out["cost_cents"] == 80 and out.get("reason") is None
        assert balance(admin, "pat") == 20
        (row,) = ledger_rows(admin, direct["job_id"])
        assert row["amount_cents"] == -80 and row["account"] == "user:pat" and row["kind"] == "print"
        # The same job_id again: the same answer, charged once.
        r = prov.post("/api/provider/v1/jobs", json=direct)
        assert r.status_code == 200 and r.json() == out
        assert balance(admin, "pat") == 20 and len(ledger_rows(admin, direct["job_id"])) == 1
        # The same job_id with different content: 409, nothing changed.
        expect_error(prov.post("/api/provider/v1/jobs", json={**direct, "pages": 1}), 409, "conflict")
        expect_error(prov.post("/api/provider/v1/jobs", json={**direct, "queue": "mono-1"}), 409, "conflict")
        assert balance(admin, "pat") == 20 and len(ledger_rows(admin, direct["job_id"])) == 1

        # Without funds: denied with a reason, no charge (and the same answer again).
        poor = job("pat", "direct-1", pages=5)  # 25 > 20
        out = post_job(prov, poor)
        assert out["action"] == "deny" and out["reason"]
        r = prov.post("/api/provider/v1/jobs", json=poor)
        assert r.status_code == 200 and r.json() == out
        out = post_job(prov, job("broke", "direct-1"))
        assert out["action"] == "deny" and out["reason"]
        assert balance(admin, "pat") == 20 and balance(admin, "broke") == 0
        assert ledger_rows(admin, poor["job_id"]) == []

        # Unknown or disabled user: denied.
        for who in ("nobody", "gone"):
            for queue in ("findme", "direct-1"):
                out = post_job(prov, job(who, queue))
                assert out["action"] == "deny" and out["reason"], out
        # Unknown queue: 404.
        expect_error(prov.post("/api/provider/v1/jobs", json=job("pat", "no-such-queue")), 404, "not_found")

        # Malformed: 422.
        for bad in (
            job("pat", "mono-1", job_id="17"),
            job("pat", "mono-1", pages=0),
            job("pat", "mono-1", copies=1.5),
            job("pat", "mono-1", priority=9),
            {k: v for k, v in job("pat", "mono-1").items() if k != "color"},
        ):
            expect_error(prov.post("/api/provider/v1/jobs", json=bad), 422, "invalid_request")

        # A provider serving only mono-1: other printers are forbidden to it.
        r = admin.post("/api/admin/v1/providers", json={"provider_id": "ps-mono", "printers": ["mono-1"]})
        assert r.status_code == 201
        with primary.client(r.json()["token"]) as narrow:
            for queue in ("color-1", "direct-1"):
                expect_error(narrow.post("/api/provider/v1/jobs", json=job("pat", queue)), 403, "forbidden")
            expect_error(
                narrow.get("/api/provider/v1/releases", params={"printer": "color-1"}), 403, "forbidden"
            )
            assert post_job(narrow, job("pat", "mono-1"))["action"] == "hold"
            assert post_job(narrow, job("pat", "findme"))["action"] == "hold"
            assert releases(narrow, "mono-1") == []

    # The provider API needs a device or provider token.
    for token in ("prv_unknown", primary.admin_token):
        with primary.client(token) as c:
            expect_error(c.post("/api/provider/v1/jobs", json=job("pat", "mono-1")), 401, "unauthorized")
            expect_error(c.get("/api/provider/v1/releases", params={"printer": "mono-1"}), 401)
    expect_error(httpx.get(primary.url + "/api/provider/v1/releases", params={"printer": "mono-1"}), 401)


def test_long_poll_release_and_printed(primary: Primary, world: sample.World) -> None:
    with (
        primary.admin() as admin,
        primary.client(world.provider) as prov,
        primary.client(world.mono_device) as mfd1,
    ):
        r = admin.post(
            "/api/admin/v1/users",
            json={"username": "quinn", "balance_cents": 500, "card_numbers": ["C-QUINN"]},
        )
        assert r.status_code == 201
        held = post_job(prov, job("quinn", "mono-1", pages=3))["job_id"]
        other = post_job(prov, job("quinn", "mono-1", pages=1))["job_id"]

        # wait=0 answers at once.
        t0 = time.monotonic()
        assert releases(prov, "mono-1", wait=0) == []
        assert time.monotonic() - t0 < 0.5

        # A long-poll answers within about a second of a release at a device.
        polled: dict[str, Any] = {}

        def poll() -> None:
            with primary.client(world.provider) as c:
                r = c.get("/api/provider/v1/releases", params={"printer": "mono-1", "wait": 5})
                polled["at"] = time.monotonic()
                polled["response"] = r

        poller = threading.Thread(target=poll)
        started = time.monotonic()
        poller.start()
        time.sleep(0.3)  # let the poll reach the server
        assert "at" not in polled  # it is waiting
        sid = mfd1.post("/api/device/v1/login", json={"card_number": "C-QUINN"}).json()["session_id"]
        r = mfd1.post(f"/api/device/v1/sessions/{sid}/release", json={"job_ids": [held]})
        released_at = time.monotonic()
        assert r.status_code == 200 and r.json()["results"][0]["status"] == "released"
        poller.join(timeout=6)
        assert not poller.is_alive()
        assert polled["response"].status_code == 200
        assert polled["response"].json() == {
            "releases": [{"job_id": held, "printer": "mono-1", "grayscale": True}]
        }
        assert polled["at"] - released_at < 1.0, polled["at"] - released_at
        assert polled["at"] - started < 4.0

        # A provider that does not serve the printer it was released to does not see it.
        r = admin.post("/api/admin/v1/providers", json={"provider_id": "ps-color", "printers": ["color-1"]})
        with primary.client(r.json()["token"]) as color_only:
            expect_error(
                color_only.post(f"/api/provider/v1/jobs/{held}/printed", json={"pages_printed": 3}), 404
            )
            assert releases(color_only, "color-1") == []

        # Printed: the job leaves the releases list; reporting it again gives the same answer.
        r = prov.post(f"/api/provider/v1/jobs/{held}/printed", json={"pages_printed": 3})
        assert r.status_code == 200, r.text
        assert r.json() == {"job_id": held, "status": "printed"}
        assert releases(prov, "mono-1") == []
        r2 = prov.post(f"/api/provider/v1/jobs/{held}/printed", json={"pages_printed": 3})
        assert r2.status_code == 200 and r2.json() == r.json()

        # Printed for a job still held (never released): 409. Unknown job: 404. Bad body: 422.
        expect_error(
            prov.post(f"/api/provider/v1/jobs/{other}/printed", json={"pages_printed": 1}), 409, "conflict"
        )
        findme = post_job(prov, job("quinn", "findme"))["job_id"]
        expect_error(
            prov.post(f"/api/provider/v1/jobs/{findme}/printed", json={"pages_printed": 1}), 409, "conflict"
        )
        denied = post_job(prov, job("nobody", "mono-1"))["job_id"]
        expect_error(
            prov.post(f"/api/provider/v1/jobs/{denied}/printed", json={"pages_printed": 1}), 409, "conflict"
        )
        expect_error(prov.post(f"/api/provider/v1/jobs/{new_id()}/printed", json={"pages_printed": 1}), 404)
        expect_error(prov.post(f"/api/provider/v1/jobs/{other}/printed", json={"pages_printed": -1}), 422)
        expect_error(prov.post(f"/api/provider/v1/jobs/{other}/printed", json={"pages": 1}), 422)
        expect_error(prov.post("/api/provider/v1/jobs/not-a-uuid/printed", json={"pages_printed": 1}), 422)

        # A direct job is printed by the provider straight away and can be reported printed.
        direct = post_job(prov, job("quinn", "direct-1", pages=1))
        assert direct["action"] == "print"
        r = prov.post(f"/api/provider/v1/jobs/{direct['job_id']}/printed", json={"pages_printed": 1})
        assert r.status_code == 200 and r.json() == {"job_id": direct["job_id"], "status": "printed"}

        # A long-poll with nothing to hand out ends by itself after `wait`.
        t0 = time.monotonic()
        assert releases(prov, "mono-1", wait=0.5) == []
        assert 0.4 <= time.monotonic() - t0 < 2.0
        expect_error(prov.get("/api/provider/v1/releases", params={"printer": "mono-1", "wait": -1}), 422)
        expect_error(prov.get("/api/provider/v1/releases", params={"printer": "nope"}), 403, "forbidden")
        expect_error(prov.get("/api/provider/v1/releases"), 422)


def test_device_token_submits_to_its_own_printer(primary: Primary, world: sample.World) -> None:
    with primary.admin() as admin, primary.client(world.mono_device) as mfd1:
        assert (
            admin.post(
                "/api/admin/v1/users",
                json={"username": "rosa", "card_numbers": ["C-ROSA"], "balance_cents": 100},
            ).status_code
            == 201
        )
        out = post_job(mfd1, job("rosa", "mono-1", pages=2))
        assert out["action"] == "hold" and out["cost_cents"] == 20
        # Not to another device's printer.
        expect_error(mfd1.post("/api/provider/v1/jobs", json=job("rosa", "color-1")), 403, "forbidden")
        expect_error(mfd1.post("/api/provider/v1/jobs", json=job("rosa", "direct-1")), 403, "forbidden")
        expect_error(mfd1.get("/api/provider/v1/releases", params={"printer": "color-1"}), 403)
        # The held job is releasable at this device and handed out for this printer.
        sid = mfd1.post("/api/device/v1/login", json={"card_number": "C-ROSA"}).json()["session_id"]
        jobs = mfd1.get(f"/api/device/v1/sessions/{sid}/jobs").json()["jobs"]
        assert [j["job_id"] for j in jobs] == [out["job_id"]]
        r = mfd1.post(f"/api/device/v1/sessions/{sid}/release", json={"job_ids": [out["job_id"]]})
        assert r.json()["results"][0]["status"] == "released"
        assert releases(mfd1, "mono-1") == [{"job_id": out["job_id"], "printer": "mono-1", "grayscale": True}]
        r = mfd1.post(f"/api/provider/v1/jobs/{out['job_id']}/printed", json={"pages_printed": 2})
        assert r.status_code == 200 and r.json() == {"job_id": out["job_id"], "status": "printed"}
        assert balance(admin, "rosa") == 80
