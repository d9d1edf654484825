"""`siteserver demo`: a primary with sample users, printers, devices and a Find-Me queue on
loopback, seeded through the same admin API an administrator uses."""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from siteserver.launch import RoleProcess, enroll_site, free_port, health_url, primary_config, site_config

USERS = [
    {
        "username": "alice",
        "full_name": "Alice Archer",
        "card_numbers": ["1001"],
        "pin": "1234",
        "password": "alice-pass",
        "balance_cents": 1000,
    },
    {
        "username": "bob",
        "full_name": "Bob Baker",
        "card_numbers": ["1002"],
        "pin": "2345",
        "balance_cents": 150,
        "overdraft_cents": 100,
    },
    {
        "username": "carol",
        "full_name": "Carol Chen",
        "card_numbers": ["1003"],
        "id_number": "E-3003",
        "balance_cents": 0,
        "restricted": False,
    },
]
PRINTERS = [
    {
        "name": "hq-color",
        "site_id": "head-office",
        "color": True,
        "duplex": True,
        "hold": False,
        "cost": {"mono_page_cents": 5, "color_page_cents": 25, "duplex_discount_pct": 10},
    },
    {
        "name": "branch1-mono",
        "site_id": "branch-01",
        "color": False,
        "duplex": True,
        "hold": True,
        "cost": {
            "mono_page_cents": 4,
            "color_page_cents": 4,
            "duplex_discount_pct": 20,
            "scan_page_cents": 1,
            "fax_page_cents": 10,
        },
    },
    {
        "name": "branch1-color",
        "site_id": "branch-01",
        "color": True,
        "duplex": True,
        "hold": True,
        "cost": {
            "mono_page_cents": 6,
            "color_page_cents": 30,
            "duplex_discount_pct": 10,
            "scan_page_cents": 1,
            "fax_page_cents": 10,
        },
    },
]


def _ok(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")
    return r.json() if r.content else None


def seed(base: str, admin_token: str) -> dict[str, Any]:
    """Create the sample world; returns the tokens and names to print."""
    out: dict[str, Any] = {"devices": {}}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30) as c:
        for u in USERS:
            _ok(c.post("/api/admin/v1/users", json=u))
        _ok(
            c.post(
                "/api/admin/v1/shared-accounts",
                json={"name": "Marketing", "balance_cents": 5000, "members": ["alice", "bob"]},
            )
        )
        for p in PRINTERS:
            _ok(c.post("/api/admin/v1/printers", json=p))
        site = _ok(
            c.post(
                "/api/admin/v1/sites",
                json={
                    "site_id": "branch-01",
                    "name": "Branch office 1",
                    "findme_queues": [
                        {"name": "branch1-findme", "printers": ["branch1-mono", "branch1-color"]}
                    ],
                },
            )
        )
        out["enrollment_token"] = site["enrollment_token"]
        for p in PRINTERS:
            dev = _ok(
                c.post("/api/admin/v1/devices", json={"device_id": f"mfd-{p['name']}", "printer": p["name"]})
            )
            out["devices"][p["name"]] = dev["token"]
        prov = _ok(
            c.post(
                "/api/admin/v1/providers",
                json={"provider_id": "branch1-print-server", "printers": ["branch1-mono", "branch1-color"]},
            )
        )
        out["provider_token"] = prov["token"]
    return out


def hold_jobs(base: str, provider_token: str) -> None:
    """alice prints two documents to the branch's Find-Me queue (the print provider's calls)."""
    headers = {"Authorization": f"Bearer {provider_token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        for doc, pages, color in [("Quarterly report.pdf", 12, True), ("Boarding pass.pdf", 1, False)]:
            job = {
                "job_id": str(uuid.uuid4()),
                "username": "alice",
                "queue": "branch1-findme",
                "document_name": doc,
                "pages": pages,
                "copies": 1,
                "color": color,
                "duplex": False,
            }
            _ok(c.post("/api/provider/v1/jobs", json=job))


def check_login(base: str, device_token: str) -> dict[str, Any]:
    r = httpx.post(
        f"{base}/api/device/v1/login",
        json={"card_number": "1001"},
        headers={"Authorization": f"Bearer {device_token}"},
        timeout=10,
    )
    return dict(_ok(r))


def wait_mirrored(site_url: str, admin_token: str, timeout: float = 60) -> dict[str, Any]:
    """Until the site's mirror has bootstrapped (its sync cursor has moved)."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(
            f"{site_url}/api/admin/v1/status", headers={"Authorization": f"Bearer {admin_token}"}, timeout=5
        )
        status = dict(_ok(r))
        if status["sync"]["cursor"]:
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"site did not bootstrap its mirror: {status}")
        time.sleep(0.1)


def run_demo(*, directory: str | None, port: int, check: bool) -> int:
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="siteserver-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    port = free_port(port)
    admin_token, health_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    cfg = primary_config(
        root,
        name="primary",
        database=root / "primary.db",
        port=port,
        admin_token=admin_token,
        health_key=health_key,
    )
    primary = RoleProcess("primary", cfg, port, root / "primary.log").start()
    site: RoleProcess | None = None
    try:
        primary.wait_listening()
        deadline = time.monotonic() + 30
        while httpx.get(health_url(primary.url, health_key), timeout=2).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("primary did not become active: " + primary.log_tail())
            time.sleep(0.1)
        world = seed(primary.url, admin_token)
        site_port = free_port(port + 1)
        site_token = secrets.token_urlsafe(24)
        scfg = site_config(
            root,
            site_id="branch-01",
            port=site_port,
            primary_urls=[primary.url],
            admin_token=site_token,
            extra={"sync": {"changes_wait_secs": 5}},
        )
        enroll_site(scfg, world["enrollment_token"])
        site = RoleProcess("site", scfg, site_port, root / "site.log").start()
        site.wait_listening()
        status = wait_mirrored(site.url, site_token)
        # The branch's print server and MFDs talk to the site, as they would in production.
        hold_jobs(site.url, world["provider_token"])
        login = check_login(site.url, world["devices"]["branch1-mono"])
        _print_guide(root, primary.url, admin_token, health_key, world, login, site.url, site_token, status)
        if check:
            return 0
        print("Press Ctrl-C to stop.", flush=True)
        while all(p.proc is not None and p.proc.poll() is None for p in (primary, site)):
            time.sleep(0.5)
        print("a process exited:\n" + primary.log_tail() + "\n" + site.log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if site is not None:
            site.stop()
        primary.stop()


def _print_guide(
    root: Path,
    url: str,
    admin: str,
    health: str,
    world: dict[str, Any],
    login: dict[str, Any],
    site_url: str,
    site_admin: str,
    status: dict[str, Any],
) -> None:
    dev = world["devices"]["branch1-mono"]
    print(
        f"""
siteserver demo is running.

  Primary (active)       {url}
  API documentation      {url}/docs
  Health (load balancer) {health_url(url, health)}
  Site server branch-01  {site_url}
                         (enrolled; mirror at cursor {status["sync"]["cursor"]}; mode {status["mode"]})
  Site documentation     {site_url}/docs
  Files and logs         {root}

  Primary admin token    {admin}
  Site admin token       {site_admin}
  MFD device token       {dev}   (device mfd-branch1-mono at printer branch1-mono)
  Print provider token   {world["provider_token"]}

  Sample users: alice (card 1001, PIN 1234, password alice-pass), bob (card 1002, PIN 2345),
  carol (card 1003, ID number E-3003, unrestricted). alice has 2 held jobs at the site in Find-Me
  queue branch1-findme (printers branch1-mono, branch1-color).
  A card login at the site just worked: {login["username"]}, balance {login["balance_cents"]} cents.

  MFDs and the print provider at branch-01 talk to the site; its charges reach the primary
  through the site's journal (see GET /api/admin/v1/transactions?origin_site=branch-01).

Try:
  curl -s -H 'Authorization: Bearer {dev}' -H 'Content-Type: application/json' \\
       -d '{{"card_number": "1001"}}' {site_url}/api/device/v1/login
  curl -s -H 'Authorization: Bearer {admin}' {url}/api/admin/v1/users/alice
  curl -s -H 'Authorization: Bearer {site_admin}' {site_url}/api/admin/v1/status
  siteserver status --config {root / "site.toml"}
""",
        flush=True,
    )
