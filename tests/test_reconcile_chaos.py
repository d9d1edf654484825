"""After a seeded chaos run the books agree (DESIGN.md invariants 1, 9 and 10), over a real
primary, the project's fault proxy and a real site: copies are charged at the branch without a
pause while the link is refused, blackholed and flapped at random, and the site and the primary
are SIGKILLed and started again mid-merge. At the end every copy the site answered is in its
reconciliation report, merged once, and the report's check against the primary's ledger passes;
every balance on the primary is its start less exactly the copies answered.

The seed is printed; SITESERVER_CHAOS_SEED replays a run."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from siteserver.faultproxy import FaultProxyProcess
from tests.kit.primary import start_primary
from tests.kit.site import add_user, eventually, start_branch

SEED = int(os.environ.get("SITESERVER_CHAOS_SEED", "20261202"))
CHAOS_SECS = 45.0
USERS = ("cara", "dirk", "emil")
START_CENTS = 1_000_000
WAN = {"probe_interval_secs": 0.25, "offline_after_failures": 2, "online_after_successes": 2}


@pytest.mark.slow
def test_the_books_agree_after_a_seeded_chaos_run(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"\nchaos seed {SEED}")
    primary = start_primary(tmp_path)
    proxy = FaultProxyProcess.in_front_of(primary.url).start()
    branch = start_branch(primary, tmp_path, budget_ms=400, wan=WAN, primary_urls=[proxy.url])
    charged: dict[str, tuple[str, int]] = {}  # txn_id -> (username, cents) the site answered
    stop = threading.Event()
    try:
        for u in USERS:
            add_user(primary, branch, u, 10, card_numbers=[f"C-{u}"], balance_cents=START_CENTS)

        def charge() -> None:
            """Copies at the mono MFD without a pause; a refused connection (the site killed) is
            retried with the same txn_id, as an MFD does, until it has an answer."""
            crng = random.Random(SEED + 1)
            while not stop.is_set():
                user = crng.choice(USERS)
                txn, pages = str(uuid.uuid4()), crng.randint(1, 5)
                # Once sent, a copy is retried until answered, after the chaos too: it may be in
                # the site's journal already.
                give_up = time.monotonic() + CHAOS_SECS + 60
                while time.monotonic() < give_up:
                    try:
                        with branch.client(branch.mono_device) as dev:
                            login = dev.post("/api/device/v1/login", json={"card_number": f"C-{user}"})
                            if login.status_code != 200:
                                time.sleep(0.1)
                                continue
                            body = {"txn_id": txn, "kind": "copy", "pages": pages}
                            body.update(color=False, duplex=False)
                            session = login.json()["session_id"]
                            r = dev.post(f"/api/device/v1/sessions/{session}/usage", json=body)
                        if r.status_code == 200:
                            charged[txn] = (user, r.json()["cost_cents"])
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)

        charger = threading.Thread(target=charge)
        charger.start()
        end = time.monotonic() + CHAOS_SECS
        while time.monotonic() < end:
            step = rng.choice(("refuse", "blackhole", "flap", "pass", "kill_site", "kill_primary"))
            if step == "kill_site":
                branch.process.kill()
                branch.start()
            elif step == "kill_primary":
                primary.process.kill()
                primary.restart(tmp_path / f"primary-{time.monotonic():.0f}.log")
            elif step == "flap":
                proxy.set("flap", up_secs=0.3, down_secs=0.3)
            else:
                proxy.set(step)
            time.sleep(rng.uniform(0.5, 3.0))
        proxy.set("pass")
        stop.set()
        charger.join(timeout=90)
        assert not charger.is_alive()

        def drained() -> bool:
            with branch.admin() as c:
                s = c.get("/api/admin/v1/status").json()
            return bool(s["journal"]["pending"] == 0 and s["mode"] == "online")

        eventually(drained, 60, "the journal merged after the chaos")
        assert len(charged) > 50, f"only {len(charged)} copies answered in {CHAOS_SECS:g} s"
        with branch.admin() as c:
            made = c.post("/api/admin/v1/reports/reconciliation", json={})
            assert made.status_code == 201, made.text
            body = c.get(f"/api/admin/v1/reports/reconciliation/{made.json()['report_id']}").json()
        check = body["check"]
        print(f"{len(charged)} copies answered, {len(body['entries'])} entries reported: {check['summary']}")
        assert check["verified_against_primary"] is True
        assert check["books_agree"] is True, check
        assert check["mismatches"] == [] and check["pending"] == 0
        entries = {e["txn_id"]: e for e in body["entries"]}
        assert set(charged) <= set(entries), "an answered copy is missing from the report"
        assert all(entries[t]["site_status"] == "merged" for t in charged)
        assert check["entries_checked"] == len(entries)
        with primary.admin() as a:
            for u in USERS:
                spent = sum(cents for who, cents in charged.values() if who == u)
                got = a.get(f"/api/admin/v1/users/{u}").json()["balance_cents"]
                assert got == START_CENTS - spent, (u, got, START_CENTS - spent)
    finally:
        stop.set()
        branch.process.stop()
        proxy.stop()
        primary.process.stop()
