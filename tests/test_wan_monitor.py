"""The WAN monitor with real processes (docs/wan.md; DESIGN.md invariants 4 and 5): a primary
killed with SIGKILL and started again on the same database and port, a site killed while offline,
and an active/passive pair whose active member dies. Measured times are printed (`-s`)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from siteserver.config import Wan
from siteserver.site.identity import Identity
from siteserver.site.monitor import WanMonitor
from siteserver.store import Database
from sync import signing
from sync.client import SyncClient
from sync.endpoints import Endpoint, Endpoints
from tests.kit.primary import Pair, start_primary
from tests.kit.site import Branch, eventually, start_branch

pytestmark = pytest.mark.timeout(180)

INTERVAL = 0.2
FAILURES = 3
SUCCESSES = 3
WAN = {
    "probe_interval_secs": INTERVAL,
    "offline_after_failures": FAILURES,
    "online_after_successes": SUCCESSES,
}


def site_mode(branch: Branch) -> str | None:
    try:
        return str(httpx.get(branch.url + "/api/health/site-server/status", timeout=2).json()["mode"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def site_status(branch: Branch) -> dict[str, Any]:
    with branch.admin() as c:
        r = c.get("/api/admin/v1/status")
        r.raise_for_status()
        return dict(r.json())


def test_primary_killed_site_goes_offline_and_comes_back(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    processes = [primary.process]
    branch: Branch | None = None
    try:
        branch = start_branch(primary, tmp_path, wan=WAN)
        processes.append(branch.process)
        b = branch
        eventually(
            lambda: site_status(b)["primary"]["endpoints"][0]["state"] == "active", 10, "probed active"
        )
        assert site_mode(b) == "online"
        with primary.admin() as c:
            c.post(
                "/api/admin/v1/users",
                json={"username": "olive", "card_numbers": ["C-olive"], "balance_cents": 500},
            ).raise_for_status()
        eventually(
            lambda: bool(b.query("SELECT 1 FROM users WHERE username = 'olive'")), 10, "olive mirrored"
        )

        t0 = time.monotonic()
        primary.process.kill()
        took = eventually(lambda: site_mode(b) == "offline", 30, "the site went offline")
        print(f"\noffline {took:.2f} s after the SIGKILL (bound {INTERVAL * FAILURES + 1:.1f} s)")
        assert took <= INTERVAL * FAILURES + 1, took
        s = site_status(b)
        assert s["mode"] == "offline" and s["since"]
        assert s["primary"]["active"] is None
        assert s["primary"]["endpoints"][0]["state"] == "down"
        assert s["primary"]["endpoints"][0]["last_ok_at"]
        assert len(s["outages"]) == 1 and s["outages"][0]["ended_at"] is None
        assert s["outages"][0]["started_at"] == s["since"]
        [(mode, cause)] = b.query("SELECT mode, cause FROM mode_changes")
        assert mode == "offline" and "consecutive failed rounds" in cause
        assert dict(b.query("SELECT key, value FROM sync_state"))["mode"] == "offline"
        assert t0  # measured from the kill above

        # A copy while offline: answered, and durable in the journal before the answer.
        txn = str(uuid.uuid4())
        with b.client(b.mono_device) as dev:
            session = dev.post("/api/device/v1/login", json={"card_number": "C-olive"}).json()
            assert session["mode"] == "offline", session
            r = dev.post(
                f"/api/device/v1/sessions/{session['session_id']}/usage",
                json={"txn_id": txn, "kind": "copy", "pages": 3, "color": False},
            )
            assert r.status_code == 200 and r.json()["mode"] == "offline", r.text

        # The site dies while offline and comes back offline, its history and journal intact.
        b.process.kill()
        b.start()  # the same configuration, port and log
        processes.append(b.process)
        assert site_mode(b) == "offline"
        s2 = site_status(b)
        assert s2["since"] == s["since"] and s2["outages"][0]["started_at"] == s["outages"][0]["started_at"]
        assert s2["outages"][0]["ended_at"] is None
        assert b.query("SELECT status FROM journal WHERE txn_id = ?", (txn,)) == [("pending",)]

        # The primary comes back on the same database and port.
        t1 = time.monotonic()
        again = start_primary(
            tmp_path,
            database=primary.database,
            admin_token=primary.admin_token,
            health_key=primary.health_key,
            port=primary.process.port,
        )
        processes.append(again.process)
        back = eventually(lambda: site_mode(b) == "online", 60, "the site came back online")
        print(
            f"online again {time.monotonic() - t1:.2f} s after the restart ({back:.2f} s after it listened)"
        )
        modes = [m for (m,) in b.query("SELECT mode FROM mode_changes ORDER BY id")]
        assert modes == ["offline", "reconciling", "online"], modes
        causes = [c for (c,) in b.query("SELECT cause FROM mode_changes ORDER BY id")]
        assert "consecutive rounds with an active" in causes[1] and "drained" in causes[2]
        s3 = site_status(b)
        assert s3["primary"]["endpoints"][0]["state"] == "active"
        assert s3["primary"]["active"] == primary.url
        [outage] = s3["outages"]
        assert outage["started_at"] == s["since"] and outage["ended_at"] == s3["since"]
        assert outage["offline_transactions"] == 1
        # Merged exactly once, under the site's txn_id.
        assert b.query("SELECT status FROM journal WHERE txn_id = ?", (txn,)) == [("applied",)]
        with again.admin() as c:
            txns = c.get("/api/admin/v1/transactions", params={"origin_site": "branch-01"}).json()
        assert [t["txn_id"] for t in txns["transactions"]].count(txn) == 1
    finally:
        for p in reversed(processes):
            with contextlib.suppress(Exception):
                p.stop(timeout=5)


def test_site_follows_the_pair_to_the_new_active_member(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    branch: Branch | None = None
    try:
        a = pair.start("a", wait_active=True)
        b = pair.start("b")
        eventually(lambda: _status_code(b.health) == 503, 30, "b is passive")
        branch = start_branch(a, tmp_path, wan=WAN, primary_urls=[a.url, b.url])
        br = branch

        def states() -> dict[str, str]:
            return {e["url"]: e["state"] for e in site_status(br)["primary"]["endpoints"]}

        eventually(lambda: states() == {a.url: "active", b.url: "passive"}, 10, "a active, b passive")
        assert site_status(br)["primary"]["active"] == a.url

        seen: list[tuple[float, str | None]] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                seen.append((time.monotonic(), site_mode(br)))
                time.sleep(0.05)

        t0 = time.monotonic()
        a.process.kill()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            took = eventually(
                lambda: (s := site_status(br))["primary"]["active"] == b.url and s["mode"] == "online",
                60,
                "the site follows b back online",
            )
        finally:
            done.set()
            watcher.join(5)
        offline_at = next((t - t0 for t, m in seen if m == "offline"), None)
        print(
            f"\npair: offline {offline_at if offline_at is None else round(offline_at, 2)} s after the "
            f"kill, online on the new active member {took:.2f} s after it"
        )
        s = site_status(br)
        assert {e["url"]: e["state"] for e in s["primary"]["endpoints"]} == {a.url: "down", b.url: "active"}
        modes = [m for (m,) in br.query("SELECT mode FROM mode_changes ORDER BY id")]
        assert modes in ([], ["offline", "reconciling", "online"]), modes
        if modes:
            assert s["outages"][0]["ended_at"] is not None
    finally:
        if branch is not None:
            branch.process.stop(timeout=5)
        pair.close()


def _status_code(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


# -- the monitor in-process: a blackholed endpoint, a site without a health key ------------------


def test_a_blackholed_endpoint_costs_one_probe_timeout(tmp_path: Path) -> None:
    """A listener that accepts and never answers: each round still ends in about one timeout."""
    from migrations.site import migrations

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    url = f"http://127.0.0.1:{hole.getsockname()[1]}"
    db = Database(tmp_path / "site.db")
    db.open(migrations)
    stop = threading.Event()
    unused = SyncClient(url, "s1", signing.generate_key())  # the monitor probes with its own client
    ep = Endpoint(url, unused, unused)
    mon = WanMonitor(db, Endpoints([ep]), Wan(probe_interval_secs=0.3), "k" * 20, stop)
    try:
        for _ in range(4):
            t = time.monotonic()
            assert mon.step() == {url: "down"}
            spent = time.monotonic() - t
            print(f"blackholed round: {spent:.3f} s")
            assert spent < 0.3 + 0.5, spent
        modes = db.read_sync(lambda d: d.execute("SELECT mode FROM mode_changes").fetchall())
        assert [m for (m,) in modes] == ["offline"]  # 3 failed rounds, then offline stays
    finally:
        stop.set()
        mon.close()
        unused.close()
        db.close()
        hole.close()


def test_old_secrets_file_without_health_key_still_loads(tmp_path: Path) -> None:
    ident = Identity(tmp_path)
    ident.save_enrollment(site_id="s", primary="http://p", pepper_hex="ab" * 16)
    assert ident.load_pepper() == bytes.fromhex("ab" * 16) and ident.load_health_key() is None
    ident.save_enrollment(site_id="s", primary="http://p", pepper_hex="ab" * 16, health_key="hk-" + "x" * 20)
    assert ident.load_pepper() == bytes.fromhex("ab" * 16) and ident.load_health_key() == "hk-" + "x" * 20
    assert (ident.secrets_path.stat().st_mode & 0o777) == 0o600
