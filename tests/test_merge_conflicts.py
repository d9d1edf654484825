"""No offline charge goes unbilled, and the books can be checked (DESIGN.md invariants 9 and 10),
over a real primary, the project's fault proxy and a real site: copies made at a branch cut off
while the primary changed under them are booked with a conflict (never rejected), each shows up
in the site's reconciliation report with what the primary did, the report's check passes against
the primary's ledger as it stands, and it fails, naming the entry, when a merged row is altered by
hand in the primary's database."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from siteserver import contract
from siteserver.faultproxy import FaultProxyProcess
from tests.kit.primary import Primary, expect_error
from tests.kit.site import Branch, add_user, eventually, start_branch

WAN = {"probe_interval_secs": 0.25, "offline_after_failures": 2, "online_after_successes": 2}


def mode(branch: Branch) -> str:
    with branch.admin() as c:
        return str(c.get("/api/admin/v1/status").json()["mode"])


def copy(branch: Branch, card: str, account: str | None = None, pages: int = 3) -> str:
    """A copy made at the branch's mono MFD (a fact, charged even offline); its txn_id."""
    txn = str(uuid.uuid4())
    with branch.client(branch.mono_device) as dev:
        login = dev.post("/api/device/v1/login", json={"card_number": card})
        assert login.status_code == 200, login.text
        body: dict[str, Any] = {
            "txn_id": txn,
            "kind": "copy",
            "pages": pages,
            "color": False,
            "duplex": False,
        }
        if account is not None:
            body["account"] = account
        r = dev.post(f"/api/device/v1/sessions/{login.json()['session_id']}/usage", json=body)
        assert r.status_code == 200 and r.json()["status"] == "charged", r.text
    return txn


def report(branch: Branch, **window: str) -> dict[str, Any]:
    with branch.admin() as c:
        made = c.post("/api/admin/v1/reports/reconciliation", json=window)
        assert made.status_code == 201, made.text
        r = c.get(f"/api/admin/v1/reports/reconciliation/{made.json()['report_id']}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        body: dict[str, Any] = r.json()
        contract.ReportOut.model_validate(body)  # exactly the documented shape
        assert body["check"]["books_agree"] == made.json()["books_agree"]
        return body


def test_each_conflict_is_billed_and_explained_in_the_report(
    proxied: tuple[Primary, FaultProxyProcess], tmp_path: Path
) -> None:
    primary, proxy = proxied
    branch = start_branch(primary, tmp_path, budget_ms=500, wan=WAN, primary_urls=[proxy.url])
    try:
        people = {
            "dora": "C-dora",  # deleted on the primary while the branch is cut off
            "ulla": "C-ulla",  # disabled meanwhile
            "rita": "C-rita",  # restricted; her balance spent at head office meanwhile
            "sam": "C-sam",  # charges Projects, deleted meanwhile
            "nina": "C-nina",  # charges Design, removed from its members meanwhile
        }
        for name, card in people.items():
            add_user(primary, branch, name, 10, card_numbers=[card], balance_cents=1_000, restricted=True)
        with primary.admin() as a:
            for account, members in (("Projects", ["sam"]), ("Design", ["sam", "nina"])):
                r = a.post("/api/admin/v1/shared-accounts", json={"name": account, "members": members})
                assert r.status_code == 201, r.text
        eventually(
            lambda: len(branch.query("SELECT 1 FROM accounts WHERE kind = 'shared'")) >= 3, 10, "mirrored"
        )
        before = copy(branch, "C-dora", pages=1)  # online: applied as made
        eventually(lambda: mode(branch) == "online", 10, "online")

        proxy.set("refuse")
        eventually(lambda: mode(branch) == "offline", 10, "offline")
        txn = {
            "user_deleted": copy(branch, "C-dora"),
            "user_disabled": copy(branch, "C-ulla"),
            "over_limit": copy(branch, "C-rita", pages=5),
            "shared_account_gone": copy(branch, "C-sam", account="Projects"),
            "not_a_member": copy(branch, "C-nina", account="Design"),
        }
        with primary.admin() as a:
            a.delete("/api/admin/v1/users/dora").raise_for_status()
            a.patch("/api/admin/v1/users/ulla", json={"disabled": True}).raise_for_status()
            spent = {"txn_id": str(uuid.uuid4()), "amount_cents": -990, "comment": "printed at head office"}
            a.post("/api/admin/v1/users/rita/adjustments", json=spent).raise_for_status()
            a.delete("/api/admin/v1/shared-accounts/Projects").raise_for_status()
            a.patch("/api/admin/v1/shared-accounts/Design", json={"members": ["sam"]}).raise_for_status()

        proxy.set("pass")
        eventually(lambda: mode(branch) == "online", 20, "merged and online again")
        counts = branch.query("SELECT status, count(*) FROM journal GROUP BY status")
        assert dict(counts) == {"applied": 6}, counts  # none rejected, none pending

        body = report(branch)
        entries = {e["txn_id"]: e for e in body["entries"]}
        assert len(entries) == 6
        assert entries[before]["primary_status"] == "applied" and entries[before]["conflict"] is None
        for kind, t in txn.items():
            e = entries[t]
            assert e["site_status"] == "merged" and e["offline"] is True, e
            assert e["primary_status"] == "applied_with_conflict", e
            assert e["conflict"]["kind"] == kind and e["conflict"]["action"], e
            assert e["amount_cents"] == e["primary_amount_cents"] == -30 or kind == "over_limit", e
            assert e["printer"] == branch.world.names.mono and e["kind"] == "copy"  # type: ignore[union-attr]
        fallback = "shared:Offline Account"
        assert entries[txn["user_deleted"]]["primary_account"] == fallback
        assert entries[txn["user_deleted"]]["username"] == "dora"
        assert entries[txn["user_disabled"]]["primary_account"] == "user:ulla"
        assert entries[txn["over_limit"]]["primary_account"] == "user:rita"
        assert "past its limit" in entries[txn["over_limit"]]["conflict"]["action"]
        assert entries[txn["shared_account_gone"]]["primary_account"] == fallback
        assert entries[txn["not_a_member"]]["primary_account"] == fallback
        kinds = {t: k for k, t in txn.items()}
        assert {c["txn_id"]: c["kind"] for c in body["conflicts"]} == kinds
        check = body["check"]
        assert check["verified_against_primary"] is True and check["books_agree"] is True, check
        assert check["entries_checked"] == 6 and check["mismatches"] == [] and check["pending"] == 0
        assert check["site_total_cents"] == check["primary_total_cents"]
        assert body["totals"]["by_account"][fallback]["entries"] == 3
        assert body["totals"]["by_kind"]["copy"]["entries"] == 6
        [outage] = body["outages"]
        assert outage["ended_at"] is not None and outage["offline_transactions"] == 5
        assert outage["detection_secs"] is not None and outage["detection_secs"] >= 0
        assert outage["merge_secs"] is not None and outage["merge_secs"] >= 0

        # The primary's own side: the same rows, the same conflicts, the account each entry named.
        with primary.admin() as a:
            side = a.get(f"/api/admin/v1/sites/{branch.site_id}/report")
            assert side.status_code == 200, side.text
            contract.PrimaryReportOut.model_validate(side.json())
            got = {e["txn_id"]: e for e in side.json()["entries"]}
            assert set(got) == set(entries)
            gone = got[txn["user_deleted"]]
            assert gone["account"] == fallback and gone["requested_account"] == "user:dora"
            assert {c["txn_id"]: c["kind"] for c in side.json()["conflicts"]} == {
                t: k for k, t in txn.items()
            }
            expect_error(a.get("/api/admin/v1/sites/nowhere/report"), 404)
            expect_error(a.get(f"/api/admin/v1/sites/{branch.site_id}/report", params={"since": "soon"}), 422)

        # CSV and HTML carry the same entries.
        with branch.admin() as c:
            made = c.post("/api/admin/v1/reports/reconciliation", json={}).json()
            path = f"/api/admin/v1/reports/reconciliation/{made['report_id']}"
            rows = list(csv.DictReader(io.StringIO(c.get(path, params={"format": "csv"}).text)))
            assert {r["txn_id"]: r["conflict_kind"] for r in rows if r["conflict_kind"]} == kinds
            page = c.get(path, params={"format": "html"})
            assert page.headers["content-type"].startswith("text/html")
            assert "The books agree." in page.text and txn["not_a_member"] in page.text
            assert (
                page.text.index('id="check"')
                < page.text.index('id="outages"')
                < page.text.index('id="entries"')
            )
            expect_error(c.get(path, params={"format": "pdf"}), 422)
            expect_error(c.get(f"/api/admin/v1/reports/reconciliation/{uuid.uuid4()}"), 404)
            bad = c.post(
                "/api/admin/v1/reports/reconciliation", json={"since": "2026-12-02", "until": "2026-12-01"}
            )
            expect_error(bad, 422)
            expect_error(c.post("/api/admin/v1/reports/reconciliation", json={"since": "yesterday"}), 422)
            expect_error(c.post("/api/admin/v1/reports/reconciliation", json={"sort": "up"}), 422)

        # The command line, the books agreeing: exit 0, the HTML page written where asked.
        cli = [sys.executable, "-m", "siteserver", "report", "reconcile", "--config", str(branch.config)]
        page_file = tmp_path / "report.html"
        done = subprocess.run(
            [*cli, "--format", "html", "--output", str(page_file)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "The books agree." in page_file.read_text() and "The books agree" in done.stderr

        # One merged row altered by hand in the primary's database: the check names it.
        altered = txn["user_disabled"]
        db = sqlite3.connect(primary.database, isolation_level=None)
        try:
            db.execute("DROP TRIGGER ledger_no_update")
            db.execute("UPDATE ledger SET amount_cents = amount_cents + 10 WHERE txn_id = ?", (altered,))
        finally:
            db.close()
        check = report(branch)["check"]
        assert check["books_agree"] is False and check["verified_against_primary"] is True
        assert [m["txn_id"] for m in check["mismatches"]] == [altered], check
        assert "-30 cents" in check["mismatches"][0]["why"] and "-20 cents" in check["mismatches"][0]["why"]
        assert altered in check["summary"]

        # The command line: exit 1 (books disagree), the report written where asked.
        out = tmp_path / "report.csv"
        done = subprocess.run([*cli, "--format", "csv", "--output", str(out)], capture_output=True, text=True)
        assert done.returncode == 1, done.stderr
        assert altered in out.read_text() and "do not agree" in done.stderr
        # Cut off from the primary: not verified, exit 1, the entries still listed.
        proxy.set("refuse")
        done = subprocess.run(cli, capture_output=True, text=True)
        assert done.returncode == 1, done.stderr
        shown = json.loads(done.stdout)
        assert shown["check"]["verified_against_primary"] is False and shown["check"]["books_agree"] is None
        assert len(shown["entries"]) == 6 and "could not be asked" in shown["check"]["summary"]
        usage = subprocess.run([*cli, "--since", "whenever"], capture_output=True, text=True)
        assert usage.returncode == 2, usage.stderr
    finally:
        branch.process.stop()
    # The site is not running: exit 3.
    done = subprocess.run(
        [sys.executable, "-m", "siteserver", "report", "reconcile", "--config", str(branch.config)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 3, done.stderr
