"""The hard WAN failures, with the project's fault proxy between a real site and a real primary:
a blackhole (packets vanish, no reset) and a flapping link."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from siteserver.faultproxy import FaultProxyProcess
from tests.kit.primary import Primary
from tests.kit.site import Branch, add_user, eventually, start_branch

INTERVAL = 0.25
FAILURES = 3
BUDGET_MS = 500


def mode(branch: Branch) -> str | None:
    try:
        return str(httpx.get(branch.url + "/api/health/site-server/status", timeout=2).json()["mode"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def test_blackhole_goes_offline_in_time_and_no_request_waits_past_the_budget(
    proxied: tuple[Primary, FaultProxyProcess], tmp_path: Path
) -> None:
    primary, proxy = proxied
    wan = {"probe_interval_secs": INTERVAL, "offline_after_failures": FAILURES, "online_after_successes": 3}
    branch = start_branch(primary, tmp_path, budget_ms=BUDGET_MS, wan=wan, primary_urls=[proxy.url])
    try:
        add_user(primary, branch, "bea", 10, card_numbers=["C-bea"], balance_cents=10_000)
        eventually(lambda: mode(branch) == "online", 10, "online through the proxy")

        offline_at: list[float] = []
        stop = threading.Event()

        def watch() -> None:  # the moment the site says offline, independent of the requests below
            while not stop.is_set():
                if mode(branch) == "offline" and not offline_at:
                    offline_at.append(time.monotonic())
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        timings: list[tuple[str, float, int]] = []
        txns: list[str] = []
        try:
            with branch.client(branch.mono_device) as dev:
                session = dev.post("/api/device/v1/login", json={"card_number": "C-bea"}).json()["session_id"]
                proxy.set("blackhole")
                t0 = time.monotonic()
                end = t0 + INTERVAL * FAILURES + 2.5
                while time.monotonic() < end:  # device traffic during and after the switch
                    for what in ("login", "usage"):
                        start = time.monotonic()
                        if what == "login":
                            r = dev.post("/api/device/v1/login", json={"card_number": "C-bea"})
                        else:
                            txn = str(uuid.uuid4())
                            txns.append(txn)
                            r = dev.post(
                                f"/api/device/v1/sessions/{session}/usage",
                                json={"txn_id": txn, "kind": "copy", "pages": 1, "color": False},
                            )
                        timings.append((what, time.monotonic() - start, r.status_code))
        finally:
            stop.set()
            watcher.join()
        worst = max(t for _, t, _ in timings)
        print(f"\n{len(timings)} device requests during the blackhole, slowest {worst * 1000:.0f} ms")
        assert all(code == 200 for _, _, code in timings), timings
        assert worst <= (BUDGET_MS + 200) / 1000, timings
        assert offline_at, "the site never went offline"
        took = offline_at[0] - t0
        print(f"offline {took:.2f} s after the blackhole (bound {INTERVAL * FAILURES + 1:.2f} s)")
        assert took <= INTERVAL * FAILURES + 1

        # The link comes back: the site hands back, and every copy reaches the primary once.
        proxy.set("pass")
        eventually(lambda: mode(branch) == "online", 30, "back online after the blackhole")
        with primary.admin() as c:
            seen = [
                t["txn_id"]
                for t in c.get("/api/admin/v1/transactions", params={"limit": 10_000}).json()["transactions"]
            ]
        assert sorted(t for t in seen if t in set(txns)) == sorted(txns)
    finally:
        branch.process.stop()


@pytest.mark.slow
def test_a_flapping_link_causes_at_most_two_mode_changes(
    proxied: tuple[Primary, FaultProxyProcess], tmp_path: Path
) -> None:
    primary, proxy = proxied
    # The contract's defaults: probe every 1 s, offline after 3 failures, online after 5 successes.
    wan = {"probe_interval_secs": 1.0, "offline_after_failures": 3, "online_after_successes": 5}
    branch = start_branch(primary, tmp_path, wan=wan, primary_urls=[proxy.url])
    try:
        eventually(lambda: mode(branch) == "online", 10, "online through the proxy")
        proxy.set("flap", up_secs=1.0, down_secs=1.0)
        time.sleep(30)
        proxy.set("pass")
        changes = branch.query("SELECT mode, cause FROM mode_changes ORDER BY id")
        print(f"\nmode changes while flapping 1 s / 1 s for 30 s: {changes}")
        assert len(changes) <= 2, changes
    finally:
        branch.process.stop()
