"""The admin pages of both roles, with real processes: the site's `/admin` (mode and why, the
journal, outages, the report form that opens the report's HTML) and the primary's fleet page.

The login: only the admin token opens the pages; it buys an HttpOnly, SameSite=Strict cookie
(Secure under TLS, in tests/test_tls.py); every form posts the page's form key back, so a form of
another origin is refused; bad input gets a page saying why, never a 500. Then headless Chromium
(Debian's `chromium`, driven by playwright) walks both pages through a WAN cut and saves
screenshots of the site online, the site offline and the fleet page as test artifacts, in
`$SITESERVER_ARTIFACTS` (default `artifacts/`)."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from siteserver import sample
from siteserver.faultproxy import FaultProxyProcess
from tests.kit.primary import Primary
from tests.kit.site import BRANCH, Branch, add_user, configure_site, eventually, login

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("SITESERVER_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def start_site(proxied: tuple[Primary, FaultProxyProcess], tmp_path: Path) -> Branch:
    primary, proxy = proxied
    with primary.admin() as c:
        world = sample.build(c, BRANCH)
    branch = configure_site(
        primary,
        tmp_path,
        world=world,
        primary_urls=[proxy.url],
        wan={"probe_interval_secs": 0.2, "offline_after_failures": 2, "online_after_successes": 2},
        sync={"heartbeat_secs": 0.5},
    )
    return branch.start()


@contextmanager
def logged_in(url: str, token: str) -> Iterator[httpx.Client]:
    """A client holding the admin pages' cookie of `url` (the login form posted with `token`)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/admin/login", data={"token": token})
        assert r.status_code == 303 and r.headers["location"] == "/admin", r.text
        yield c


def form_key(page: str) -> str:
    found = re.search(r'name="form_key" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def status(branch: Branch) -> dict[str, Any]:
    with branch.admin() as c:
        return dict(c.get("/api/admin/v1/status").json())


def offline_made_at(branch: Branch) -> str:
    (row,) = branch.query("SELECT occurred_at FROM journal WHERE status = 'pending'")
    return str(row[0])


def copy_charge(branch: Branch) -> dict[str, Any]:
    """Ann logs in at the mono MFD with her card and makes a 2-page copy."""
    r = login(branch, branch.mono_device, card_number="CARD-ann")
    assert r.status_code == 200, r.text
    with branch.client(branch.mono_device) as c:
        used = c.post(
            f"/api/device/v1/sessions/{r.json()['session_id']}/usage",
            json={"txn_id": str(uuid.uuid4()), "kind": "copy", "pages": 2, "color": False, "duplex": False},
        )
    assert used.status_code == 200, used.text
    return dict(used.json())


def test_only_the_admin_token_opens_the_pages_and_forms_carry_the_page_key(
    proxied: tuple[Primary, FaultProxyProcess], tmp_path: Path
) -> None:
    primary, _ = proxied
    branch = start_site(proxied, tmp_path)
    try:
        for url in (branch.url, primary.url):
            with httpx.Client(base_url=url, timeout=30) as anon:
                r = anon.get("/admin")
                assert r.status_code == 303 and r.headers["location"] == "/admin/login"
                assert anon.get("/admin/login").status_code == 200
                wrong = anon.post("/admin/login", data={"token": "not-the-token"})
                assert wrong.status_code == 401 and "not this server" in wrong.text
                assert "set-cookie" not in wrong.headers
                as_json = anon.post("/admin/login", json={"token": "x"})
                assert as_json.status_code == 415 and "<html" in as_json.text
                assert anon.post(
                    "/admin/login",
                    content=b"token=%ff%fe",
                    headers={"content-type": "application/x-www-form-urlencoded"},
                ).status_code in (400, 401)
                # A forged cookie is no login.
                anon.cookies.set("siteserver_admin", "forged", path="/admin")
                assert anon.get("/admin").status_code == 303

        token = branch.admin_token
        with httpx.Client(base_url=branch.url, timeout=30) as c:
            r = c.post("/admin/login", data={"token": token})
            assert r.status_code == 303
            cookie = r.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
            assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
            assert primary.admin_token != token  # the primary's token does not open a site's pages

            home = c.get("/admin")
            assert home.status_code == 200 and 'id="mode">online<' in home.text
            assert "script" not in home.text.lower()
            assert home.headers["cache-control"] == "no-store"
            assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
            key = form_key(home.text)

            # A form without the page's key (another origin's form) is refused, as is a bad window.
            assert c.post("/admin/reports", data={"since": ""}).status_code == 403
            assert c.post("/admin/reports", data={"form_key": "guess"}).status_code == 403
            bad = c.post("/admin/reports", data={"form_key": key, "since": "yesterday"})
            assert bad.status_code == 422 and "ISO 8601" in bad.text
            later = c.post(
                "/admin/reports",
                data={"form_key": key, "since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"},
            )
            assert later.status_code == 422 and "since must not be after until" in later.text
            assert c.get("/admin/reports/not-a-report").status_code == 404
            assert c.get(f"/admin/reports/{uuid.uuid4()}").status_code == 404
            assert c.post(f"/admin/journal/{uuid.uuid4()}/retry", data={"form_key": key}).status_code == 404

            made = c.post("/admin/reports", data={"form_key": key, "since": "", "until": ""})
            assert made.status_code == 303 and made.headers["location"].startswith("/admin/reports/")
            report = c.get(made.headers["location"])
            assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
            assert "Reconciliation report: site branch-01" in report.text

            # Logged out, the cookie opens nothing, even when replayed.
            login_id = c.cookies.get("siteserver_admin")
            assert c.post("/admin/logout", data={"form_key": key}).status_code == 303
            with httpx.Client(base_url=branch.url, timeout=30) as replay:
                replay.cookies.set("siteserver_admin", str(login_id), path="/admin")
                assert replay.get("/admin").status_code == 303

        with logged_in(primary.url, primary.admin_token) as c:
            eventually(
                lambda: 'id="site-branch-01"' in c.get("/admin").text, 15, "the site on the fleet page"
            )
            fleet = c.get("/admin").text
            assert "badge fresh" in fleet and "online" in fleet
            assert c.get("/admin/sites/branch-01/report").json()["site_id"] == "branch-01"
            assert c.get("/admin/sites/nowhere/report").status_code == 404
        # The JSON API's realm is not the pages': a page cookie is no bearer token, and back.
        with httpx.Client(base_url=primary.url, timeout=30) as c:
            r = c.get("/admin", headers={"Authorization": f"Bearer {primary.admin_token}"})
            assert r.status_code == 303
    finally:
        branch.process.stop()


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed"
)
def test_pages_in_chromium_through_a_wan_cut(
    proxied: tuple[Primary, FaultProxyProcess], tmp_path: Path
) -> None:
    assert CHROMIUM is not None, "chromium is needed in CI (.ci/run installs it)"
    from playwright.sync_api import sync_playwright

    primary, proxy = proxied
    branch = start_site(proxied, tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        add_user(primary, branch, "ann", 10, card_numbers=["CARD-ann"], balance_cents=500)
        copy_charge(branch)  # online: merged at once
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(branch.url + "/admin")
                assert page.url.endswith("/admin/login")
                page.fill("#token", branch.admin_token)
                page.click("button[type=submit]")
                page.wait_for_url(branch.url + "/admin")
                assert page.text_content("#mode") == "online"
                page.screenshot(path=str(ARTIFACTS / "site-online.png"), full_page=True)

                proxy.set("blackhole")  # the WAN is cut: the site takes over
                eventually(lambda: status(branch)["mode"] == "offline", 20)
                offline = copy_charge(branch)
                assert offline["status"] == "charged"
                page.reload()
                assert page.text_content("#mode") == "offline"
                shown = status(branch)
                why = page.text_content("#why") or ""
                assert "cannot be reached" in why and shown["mode_cause"] and shown["mode_cause"] in why
                assert shown["journal"]["oldest_pending_at"] == offline_made_at(branch)
                assert "still offline" in (page.text_content("#outages") or "")
                journal = page.text_content("#journal") or ""
                assert re.search(r"Pending\s*1\b", journal), journal
                page.screenshot(path=str(ARTIFACTS / "site-offline.png"), full_page=True)

                proxy.set("pass")  # back: the journal merges, then the site hands authority back
                eventually(lambda: status(branch)["mode"] == "online", 30)
                eventually(lambda: status(branch)["journal"]["pending"] == 0, 30)
                page.reload()
                assert page.text_content("#mode") == "online"
                page.click("#make-report")
                page.wait_for_url(re.compile(r".*/admin/reports/[0-9a-f-]+$"))
                check = page.text_content("#check") or ""
                assert "The books agree." in check, check

                fleet = browser.new_page(viewport={"width": 1280, "height": 700})
                fleet.goto(primary.url + "/admin/login")
                fleet.fill("#token", primary.admin_token)
                fleet.click("button[type=submit]")
                fleet.wait_for_url(primary.url + "/admin")

                def fleet_row() -> str:
                    fleet.reload()
                    return fleet.text_content("#site-branch-01") or ""

                # The heartbeat after the outage tells the primary of it; both copies were merged.
                eventually(lambda: "ended" in fleet_row(), 15, "the last outage on the fleet page")
                row = fleet_row()
                assert "online" in row, row
                assert (fleet.text_content("#site-branch-01 .merged") or "").strip() == "2"
                fleet.screenshot(path=str(ARTIFACTS / "fleet.png"), full_page=True)
                with primary.admin() as c:
                    (site,) = c.get("/api/admin/v1/sites").json()["sites"]
                (outage,) = status(branch)["outages"]
                assert site["last_outage"] == {
                    "started_at": outage["started_at"],
                    "ended_at": outage["ended_at"],
                }
            finally:
                browser.close()
        for name in ("site-online.png", "site-offline.png", "fleet.png"):
            assert (ARTIFACTS / name).stat().st_size > 10_000, name
    finally:
        proxy.set("pass")
        branch.process.stop()


def test_wrong_tokens_from_one_address_lock_the_login_form(primary: Primary) -> None:
    """Five wrong tokens within 15 minutes lock the form for that address (60 s, doubling); while
    locked even the right token is refused, with a Retry-After. A right token before the lock
    forgives the wrong ones, so an admin's typo does not add up."""
    with httpx.Client(base_url=primary.url, timeout=30) as anon:

        def attempt(token: str) -> httpx.Response:
            return anon.post("/admin/login", data={"token": token})

        for _ in range(4):
            assert attempt("typo").status_code == 401
        assert attempt(primary.admin_token).status_code == 303  # forgiven
        for _ in range(4):
            assert attempt("typo").status_code == 401
        assert attempt("guess").status_code == 401  # the fifth within the window: locked now
        for token in ("guess", primary.admin_token):
            locked = attempt(token)
            assert locked.status_code == 429 and "set-cookie" not in locked.headers
            assert "Too many wrong tokens from this address" in locked.text
            assert 1 <= int(locked.headers["retry-after"]) <= 60
    # The API's bearer token is not the form: it still opens the admin API.
    with primary.admin() as c:
        assert c.get("/api/admin/v1/sites").status_code == 200
